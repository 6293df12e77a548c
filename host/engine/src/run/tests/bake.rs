//! After promotion: the bake watches the promoted release, and a failing
//! bake or post-deploy job takes the environment back to the previous
//! release without the slot the promotion removed, resumable at any point.

use super::*;
use crate::bake::BakeSpec;
use crate::fakes::VersionStrategy;
use rollcage_core::{DeployState, RouteWeight};

fn spec() -> BakeSpec {
    BakeSpec {
        duration: Duration::from_secs(180),
        interval: Duration::from_secs(60),
        checks: vec![],
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
    }
}

/// Production running 1.0.0 (two instances), deployed by a canary that
/// plans from the releases; the check answers `script` (the strategy's
/// analysis first, then the bake's rounds).
fn baking(
    script: Vec<Result<Verdict, ()>>,
    bake: Option<BakeSpec>,
    post_job: Option<&str>,
) -> World {
    let mut w = world(&[("production", Verdict::Pass)], &[], None);
    let provider = Arc::new(FakeProvider {
        failing_jobs: vec!["smoke".into()],
        ..FakeProvider::running("1.0.0", "1.0.0", 2)
    });
    w.providers.insert("production".into(), provider.clone());
    let engine = Arc::get_mut(&mut w.engine).unwrap();
    let env = engine.environments.remove("production").unwrap();
    let mut env = Arc::try_unwrap(env).ok().unwrap();
    env.provider = provider;
    env.strategy = Arc::new(VersionStrategy {
        id: "canary".parse().unwrap(),
    });
    env.checks = BTreeMap::from([(
        "error-rate".to_string(),
        scripted("error-rate", script) as Arc<dyn HealthCheck>,
    )]);
    env.bake = bake;
    env.post_jobs = post_job
        .map(|name| Job {
            name: name.into(),
            command: vec!["./smoke".into()],
            env: vec![],
            timeout_ms: 1000,
        })
        .into_iter()
        .collect();
    engine
        .environments
        .insert("production".into(), Arc::new(env));
    w
}

fn only_1_0_0() -> Vec<(String, String, u32)> {
    vec![("1.0.0".to_string(), "1.0.0".to_string(), 2)]
}

/// The routes of the rollback after promotion, in order.
async fn restore_routes(engine: &Engine, id: &str) -> Vec<String> {
    engine
        .store()
        .events(id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "restore-step")
        .filter_map(|e| serde_json::from_value::<StepRecord>(e.data).ok())
        .filter(|r| matches!(r.action, Action::Route { .. }))
        .map(|r| r.action.to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_passing_bake_measures_every_round_and_keeps_the_release() {
    let w = baking(vec![Ok(Verdict::Pass)], Some(spec()), None);
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::Succeeded);
    let log = kinds(&w.engine, &id).await;
    let count = |kind: &str| log.iter().filter(|(k, _)| k == kind).count();
    assert_eq!(count("bake-started"), 1);
    assert_eq!(count("bake-tick"), 3);
    assert_eq!(count("bake-finished"), 1);
    // The strategy's analysis and the three rounds.
    assert_eq!(count("analysis"), 4);
    assert_eq!(
        w.providers["production"].snapshot(),
        [("2.0.0".to_string(), "2.0.0".to_string(), 2)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_bake_rolls_back_to_the_previous_release_step_by_step() {
    // The strategy's analysis passes, the bake's second round fails.
    let w = baking(
        vec![Ok(Verdict::Pass), Ok(Verdict::Pass), Ok(Verdict::Fail)],
        Some(spec()),
        None,
    );
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::RolledBack);
    let provider = &w.providers["production"];
    assert_eq!(provider.snapshot(), only_1_0_0());
    assert_eq!(
        *provider.weights.lock().unwrap(),
        [RouteWeight {
            slot: "1.0.0".into(),
            weight: 100
        }]
    );
    // Traffic went back the way the strategy shifts it, in steps.
    assert_eq!(
        restore_routes(&w.engine, &id).await,
        ["route 1.0.0=50% 2.0.0=50%", "route 1.0.0=100%"]
    );
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(run.stage.as_deref(), Some("production"));
    assert_eq!(
        run.reason.as_deref(),
        Some("bake: check `error-rate` failed 1 time(s), over its limit of 0: Fail")
    );
    let log = kinds(&w.engine, &id).await;
    assert_eq!(log.iter().filter(|(k, _)| k == "bake-tick").count(), 2);
    assert!(log.iter().any(|(k, _)| k == "rolling-back"));
    let seen = w.seen().await;
    assert!(seen.contains(&(EventKind::AnalysisFailed, Some("production".into()))));
    assert_eq!(
        seen.last(),
        Some(&(EventKind::RolledBack, Some("production".into())))
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_deploy_job_failing_after_promotion_rolls_back() {
    let w = baking(vec![Ok(Verdict::Pass)], None, Some("smoke"));
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::RolledBack);
    assert_eq!(w.providers["production"].snapshot(), only_1_0_0());
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(
        run.reason.as_deref(),
        Some("after promotion, job `smoke` exited with 1: smoke test failed")
    );
}

#[tokio::test(start_paused = true)]
async fn the_previous_release_is_the_last_one_that_succeeded_there() {
    // 1.5.0 goes out and stays; 2.0.0 fails its smoke test after
    // promotion and goes back to 1.5.0, not to the 1.0.0 before it.
    let w = baking(vec![Ok(Verdict::Pass)], None, None);
    let first = w.engine.create(request("1.5.0")).await.unwrap();
    assert_eq!(
        w.engine.execute(&first).await.unwrap(),
        RunStatus::Succeeded
    );
    let w = {
        let mut w = w;
        let engine = Arc::get_mut(&mut w.engine).unwrap();
        let env = engine.environments.remove("production").unwrap();
        let mut env = Arc::try_unwrap(env).ok().unwrap();
        env.post_jobs = vec![Job {
            name: "smoke".into(),
            command: vec!["./smoke".into()],
            env: vec![],
            timeout_ms: 1000,
        }];
        engine
            .environments
            .insert("production".into(), Arc::new(env));
        w
    };
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::RolledBack);
    assert_eq!(
        w.providers["production"].snapshot(),
        [("1.5.0".to_string(), "1.5.0".to_string(), 2)]
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_previous_release_a_failure_after_promotion_fails_the_stage() {
    let w = baking(vec![Ok(Verdict::Pass)], None, Some("smoke"));
    // Nothing ran before: the first deployment has nothing to go back to.
    w.providers["production"].slots.lock().unwrap().clear();
    w.providers["production"].weights.lock().unwrap().clear();
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::Failed);
    let run = w.engine.store().run(&id).await.unwrap();
    assert!(
        run.reason
            .unwrap()
            .ends_with("and no earlier release of `api` in `production` to roll back to")
    );
}

// On the real clock: with a paused one the bake's rounds would pass while
// the decision is read from the store on its threads.
#[tokio::test]
async fn an_abort_during_the_bake_rolls_back() {
    let w = baking(vec![Ok(Verdict::Pass)], Some(spec()), None);
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    let (engine, run) = (w.engine.clone(), id.clone());
    let driven = tokio::spawn(async move { engine.execute(&run).await });
    until_run(&w.engine, &id, "baking", |_, log| {
        log.iter().any(|e| e.kind == "bake-started")
    })
    .await;
    w.engine
        .decide(
            &id,
            Decision::Abort {
                by: "alertmanager: HighErrorRate".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(driven.await.unwrap().unwrap(), RunStatus::RolledBack);
    assert_eq!(w.providers["production"].snapshot(), only_1_0_0());
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(
        run.reason.as_deref(),
        Some("aborted by alertmanager: HighErrorRate during the bake")
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_after_promotion_cut_short_resumes_from_its_log() {
    let w = baking(vec![Ok(Verdict::Pass)], Some(spec()), None);
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    // As if the host died during the rollback: 2.0.0 was promoted, its
    // bake failed, and 1.0.0 is back up with half the traffic.
    let store = w.engine.store();
    let lease = store.claim(Some(&id), 1).await.unwrap().remove(0);
    let stage = Some("production");
    let put = |kind: &'static str, data: serde_json::Value| {
        let (store, lease) = (store.clone(), lease.clone());
        async move { store.append(&lease, kind, stage, data).await.unwrap() }
    };
    store
        .append(&lease, "run-started", None, json!({}))
        .await
        .unwrap();
    put(
        "stage-started",
        json!({"stable": "1.0.0", "previous": "1.0.0"}),
    )
    .await;
    put("pre-jobs-done", json!({})).await;
    let promoted = DeployState {
        environment: "production".into(),
        release: Release::new("2.0.0"),
        stable: Some(Release::new("1.0.0")),
        replicas: 2,
        params: "{}".into(),
        history: vec![],
        status: Default::default(),
    };
    for action in VersionStrategy::plan(&promoted) {
        put(
            "step",
            json!(StepRecord {
                action,
                outcome: Outcome::Ok
            }),
        )
        .await;
    }
    put("bake-started", json!({})).await;
    put(
        "bake-tick",
        json!({"round": 1, "marks": [{"check": "error-rate", "verdict": "fail", "detail": "0.3"}]}),
    )
    .await;
    put(
        "rolling-back",
        json!({"reason": "bake: check `error-rate` failed", "after_promotion": true, "to": "1.0.0"}),
    )
    .await;
    let back = DeployState {
        release: Release::new("1.0.0"),
        stable: Some(Release::new("2.0.0")),
        ..promoted
    };
    for action in &VersionStrategy::plan(&back)[..2] {
        put(
            "restore-step",
            json!(StepRecord {
                action: action.clone(),
                outcome: Outcome::Ok
            }),
        )
        .await;
    }
    store
        .set_status(&lease, RunStatus::Running, stage, None)
        .await
        .unwrap();
    {
        let provider = &w.providers["production"];
        let mut slots = provider.slots.lock().unwrap();
        slots.clear();
        slots.insert("2.0.0".into(), ("2.0.0".into(), 2));
        slots.insert("1.0.0".into(), ("1.0.0".into(), 1));
    }
    store.release(&lease).await.unwrap();

    let resumed = w.engine.resume_all().await.unwrap();
    assert_eq!(resumed, [(id.clone(), RunStatus::RolledBack)]);
    assert_eq!(w.providers["production"].snapshot(), only_1_0_0());
    let log = kinds(&w.engine, &id).await;
    let count = |kind: &str| log.iter().filter(|(k, _)| k == kind).count();
    // Neither the strategy nor the bake ran again; the rollback went on
    // from its third step (six in all, the analysis recorded, not run).
    assert_eq!(count("step"), 6);
    assert_eq!(count("bake-tick"), 1);
    assert_eq!(count("rolling-back"), 1);
    assert_eq!(count("restore-step"), 6);
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(
        run.reason.as_deref(),
        Some("bake: check `error-rate` failed")
    );
}

/// The canary of [`VersionStrategy`] with the flag `checkout-v2` moved to
/// 30% once the release is promoted.
struct Exposing(VersionStrategy);

impl rollcage_core::Plugin for Exposing {
    fn id(&self) -> &PluginId {
        self.0.id()
    }
}

#[async_trait]
impl Strategy for Exposing {
    async fn validate(&self, _p: &str) -> Result<(), PluginError> {
        Ok(())
    }
    async fn decide(&self, state: &DeployState) -> Result<Action, PluginError> {
        let mut plan = VersionStrategy::plan(state);
        plan.push(Action::Expose(rollcage_core::ExposureChange {
            control: String::new(),
            flag: "checkout-v2".into(),
            percent: 30,
        }));
        Ok(plan
            .get(state.history.len())
            .cloned()
            .unwrap_or(Action::Done))
    }
    async fn rollback(&self, state: &DeployState) -> Result<Vec<Action>, PluginError> {
        self.0.rollback(state).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_bake_restores_the_flags_the_stage_changed() {
    let mut w = baking(
        vec![Ok(Verdict::Pass), Ok(Verdict::Pass), Ok(Verdict::Fail)],
        Some(spec()),
        None,
    );
    let flags = Arc::new(crate::fakes::FakeExposure::with(
        "flags",
        &[("checkout-v2", 5)],
    ));
    let engine = Arc::get_mut(&mut w.engine).unwrap();
    let env = engine.environments.remove("production").unwrap();
    let mut env = Arc::try_unwrap(env).ok().unwrap();
    env.strategy = Arc::new(Exposing(VersionStrategy {
        id: "canary".parse().unwrap(),
    }));
    env.exposures = BTreeMap::from([(
        "flags".to_string(),
        flags.clone() as Arc<dyn rollcage_core::ExposureControl>,
    )]);
    env.exposure = Some("flags".into());
    engine
        .environments
        .insert("production".into(), Arc::new(env));
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::RolledBack);
    // Moved to 30% by the run, back to 5% by the rollback after promotion;
    // the previous release's plan did not move it again.
    assert_eq!(
        *flags.sets.lock().unwrap(),
        [
            ("checkout-v2".to_string(), 30),
            ("checkout-v2".to_string(), 5)
        ]
    );
    assert_eq!(w.providers["production"].snapshot(), only_1_0_0());
    let log = w.engine.store().events(&id, 0).await.unwrap();
    let before = log.iter().find(|e| e.kind == "exposure-before").unwrap();
    assert_eq!(before.data["percent"], 5);
    let restored = Action::Expose(rollcage_core::ExposureChange {
        control: "flags".into(),
        flag: "checkout-v2".into(),
        percent: 5,
    });
    assert!(log.iter().any(|e| e.kind == "rollback-step"
        && serde_json::from_value::<Action>(e.data.clone()).ok() == Some(restored.clone())));
}
