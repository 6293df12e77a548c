use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rollcage_core::{AnalysisRequest, Plugin, PluginError, PluginId, Verdict};
use rollcage_notify::{Queue, QueueOptions};
use rollcage_store::SqliteStore;
use tokio::sync::Semaphore;

use super::*;
use crate::fakes::{FakeProvider, PlanStrategy, apply, route, scripted, scripted_against};
use rollcage_core::StepRecord;

mod alerts;
mod bake;
mod positions;

/// A notifier that remembers the kinds it was told of; given a gate, it
/// answers only for a permit of it.
struct Recorder {
    id: PluginId,
    seen: Mutex<Vec<(EventKind, Option<String>)>>,
    gate: Option<Arc<Semaphore>>,
}

impl Plugin for Recorder {
    fn id(&self) -> &PluginId {
        &self.id
    }
}

#[async_trait]
impl rollcage_core::Notifier for Recorder {
    async fn notify(&self, e: &Event) -> Result<(), PluginError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.seen
            .lock()
            .unwrap()
            .push((e.kind, e.environment.clone()));
        Ok(())
    }
}

/// A canary from 1.0.0 to 2.0.0 with one analysis.
fn strategy() -> Arc<PlanStrategy> {
    Arc::new(PlanStrategy {
        id: "canary".parse().unwrap(),
        plan: vec![
            apply("2.0.0", "2.0.0", 1),
            route(&[("2.0.0", 50), ("1.0.0", 50)]),
            Action::Analyze(AnalysisRequest {
                checks: vec![],
                slot: "2.0.0".into(),
            }),
            apply("2.0.0", "2.0.0", 2),
            route(&[("2.0.0", 100)]),
            Action::RemoveSlot {
                slot: "1.0.0".into(),
            },
        ],
        rollback: vec![
            route(&[("1.0.0", 100)]),
            Action::RemoveSlot {
                slot: "2.0.0".into(),
            },
        ],
    })
}

struct World {
    engine: Arc<Engine>,
    providers: BTreeMap<String, Arc<FakeProvider>>,
    recorder: Arc<Recorder>,
    notifications: Queue,
}

impl World {
    /// What the recorder was told, once every delivery has ended.
    async fn seen(&self) -> Vec<(EventKind, Option<String>)> {
        self.notifications.idle().await;
        self.recorder.seen.lock().unwrap().clone()
    }
}

fn world(
    verdicts: &[(&str, Verdict)],
    approval_in: &[&str],
    window: Option<(&str, bool)>,
) -> World {
    world_with_gate(verdicts, approval_in, window, None)
}

fn world_with_gate(
    verdicts: &[(&str, Verdict)],
    approval_in: &[&str],
    window: Option<(&str, bool)>,
    gate: Option<Arc<Semaphore>>,
) -> World {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    world_on(store, verdicts, approval_in, window, gate)
}

/// A world on `store` (one process's handle on a shared database).
fn world_on(
    store: Arc<dyn Store>,
    verdicts: &[(&str, Verdict)],
    approval_in: &[&str],
    window: Option<(&str, bool)>,
    gate: Option<Arc<Semaphore>>,
) -> World {
    let recorder = Arc::new(Recorder {
        id: "console".parse().unwrap(),
        seen: Mutex::default(),
        gate,
    });
    let notifications = Queue::new(
        store.clone(),
        vec![recorder.clone()],
        QueueOptions::default(),
    );
    let notify = notifications
        .dispatcher(std::slice::from_ref(&recorder.id))
        .unwrap();
    let mut providers = BTreeMap::new();
    let mut envs = Vec::new();
    for (name, verdict) in verdicts {
        let provider = Arc::new(FakeProvider::running("1.0.0", "1.0.0", 2));
        providers.insert(name.to_string(), provider.clone());
        envs.push(EnvironmentPlan {
            name: name.to_string(),
            provider,
            strategy: strategy(),
            strategy_params: "{}".into(),
            checks: BTreeMap::from([(
                "error-rate".to_string(),
                scripted_against("error-rate", vec![Ok(*verdict)], "< 0.05")
                    as Arc<dyn HealthCheck>,
            )]),
            default_checks: vec!["error-rate".into()],
            analysis: AnalysisSpec::default(),
            replicas: 2,
            progress_deadline: Duration::from_secs(60),
            readiness_poll: Duration::from_secs(1),
            approval: approval_in.contains(name),
            require_different_approver: *name == "production",
            window: window.map(|(w, _)| w.parse().unwrap()),
            refuse_outside_window: window.is_some_and(|(_, refuse)| refuse),
            refuse_when_busy: false,
            pre_jobs: vec![],
            post_jobs: vec![],
            bake: None,
            notify: Dispatcher::default(),
            exposures: Default::default(),
            exposure: None,
            settle: std::time::Duration::ZERO,
        });
    }
    let pipeline = PipelinePlan {
        name: "api".into(),
        stages: verdicts.iter().map(|(n, _)| n.to_string()).collect(),
        service: "api".into(),
        service_spec: "{}".into(),
        notify,
    };
    World {
        engine: Arc::new(Engine::new(store, envs, vec![pipeline], "hash".into())),
        providers,
        recorder,
        notifications,
    }
}

fn request(release: &str) -> RunRequest {
    RunRequest {
        pipeline: "api".into(),
        release: release.into(),
        notes: None,
        params: vec![],
        stages: None,
        started_by: "alice".into(),
    }
}

async fn kinds(engine: &Engine, id: &str) -> Vec<(String, Option<String>)> {
    engine
        .store()
        .events(id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind != "notification" && e.kind != "intent")
        .map(|e| (e.kind, e.stage))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_good_release_goes_through_every_stage() {
    let w = world(
        &[("staging", Verdict::Pass), ("production", Verdict::Pass)],
        &[],
        None,
    );
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::Succeeded);
    for p in w.providers.values() {
        assert_eq!(
            p.snapshot(),
            [("2.0.0".to_string(), "2.0.0".to_string(), 2)]
        );
    }
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    let seen: Vec<EventKind> = w.seen().await.iter().map(|(k, _)| *k).collect();
    assert_eq!(seen.first(), Some(&EventKind::RunStarted));
    assert_eq!(seen.last(), Some(&EventKind::Succeeded));
    assert_eq!(
        seen.iter()
            .filter(|k| **k == EventKind::StageStarted)
            .count(),
        2
    );
    assert_eq!(seen.iter().filter(|k| **k == EventKind::Step).count(), 4);
    // Every action's intent is logged before its outcome.
    let log = w.engine.store().events(&id, 0).await.unwrap();
    let first_intent = log.iter().position(|e| e.kind == "intent").unwrap();
    let first_step = log.iter().position(|e| e.kind == "step").unwrap();
    assert!(first_intent < first_step);
}

#[tokio::test(start_paused = true)]
async fn a_failing_stage_rolls_back_and_stops_the_pipeline() {
    let w = world(
        &[
            ("staging", Verdict::Pass),
            ("production", Verdict::Fail),
            ("eu", Verdict::Pass),
        ],
        &[],
        None,
    );
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::RolledBack);
    assert_eq!(
        w.providers["production"].snapshot(),
        [("1.0.0".to_string(), "1.0.0".to_string(), 2)]
    );
    // Later stages never ran.
    assert_eq!(
        w.providers["eu"].snapshot(),
        [("1.0.0".to_string(), "1.0.0".to_string(), 2)]
    );
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(run.stage.as_deref(), Some("production"));
    assert!(run.reason.unwrap().contains("check `error-rate` failed"));
    // Each measurement is logged with the threshold it was held against,
    // for the dashboard's charts.
    let log = w.engine.store().events(&id, 0).await.unwrap();
    let analysis = log
        .iter()
        .find(|e| e.kind == "analysis" && e.stage.as_deref() == Some("production"))
        .unwrap();
    let m = &analysis.data["measurements"][0];
    assert_eq!(
        (&m["value"], &m["verdict"], &m["threshold"]),
        (
            &serde_json::json!(0.1),
            &serde_json::json!("fail"),
            &serde_json::json!({"op": "<", "value": 0.05})
        ),
        "{m}"
    );
    let seen = w.seen().await;
    assert!(seen.contains(&(EventKind::AnalysisFailed, Some("production".into()))));
    assert!(seen.contains(&(EventKind::RolledBack, Some("production".into()))));
    assert!(!seen.iter().any(|(_, env)| env.as_deref() == Some("eu")));
}

#[tokio::test(start_paused = true)]
async fn an_approval_gate_waits_and_an_abort_stops_the_run() {
    let w = world(
        &[("staging", Verdict::Pass), ("production", Verdict::Pass)],
        &["production"],
        None,
    );
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    let engine = w.engine.clone();
    let run_id = id.clone();
    let task = tokio::spawn(async move { engine.execute(&run_id).await.unwrap() });
    // Wait until the run asks for approval.
    loop {
        if w.engine.store().run(&id).await.unwrap().status == RunStatus::AwaitingApproval {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.engine
        .decide(&id, Decision::Abort { by: "bob".into() })
        .await
        .unwrap();
    assert_eq!(task.await.unwrap(), RunStatus::Failed);
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(
        run.reason.as_deref(),
        Some("aborted by bob before production started")
    );
    // Staging went through; production was never touched.
    assert_eq!(
        w.providers["production"].snapshot(),
        [("1.0.0".to_string(), "1.0.0".to_string(), 2)]
    );
    assert!(matches!(
        w.engine
            .decide(&id, Decision::Approve { by: "x".into() })
            .await,
        Err(EngineError::Finished(..))
    ));
}

#[tokio::test(start_paused = true)]
async fn outside_its_window_an_environment_refuses_or_waits() {
    // Never open at the engine's clock time: a window on a day that is not today.
    let w = world(
        &[("production", Verdict::Pass)],
        &[],
        Some(("Mon 02:00-03:00 UTC", true)),
    );
    let mut engine = Arc::try_unwrap(w.engine).ok().unwrap();
    engine.clock = || 1_795_651_200; // a Thursday, 00:00 UTC
    let id = engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(engine.execute(&id).await.unwrap(), RunStatus::Failed);
    let run = engine.store().run(&id).await.unwrap();
    assert_eq!(
        run.reason.as_deref(),
        Some("environment `production` is outside its window `Mon 02:00-03:00 UTC`")
    );
    assert_eq!(
        w.providers["production"].snapshot(),
        [("1.0.0".to_string(), "1.0.0".to_string(), 2)]
    );

    let w = world(
        &[("production", Verdict::Pass)],
        &[],
        Some(("Thu 02:00-03:00 UTC", false)),
    );
    let mut engine = Arc::try_unwrap(w.engine).ok().unwrap();
    engine.clock = || 1_795_651_200;
    let id = engine.create(request("2.0.0")).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(engine.execute(&id).await.unwrap(), RunStatus::Succeeded);
    assert!(started.elapsed() >= Duration::from_secs(2 * 3600));
}

#[tokio::test(start_paused = true)]
async fn bad_requests_record_nothing() {
    let w = world(&[("staging", Verdict::Pass)], &[], None);
    assert!(matches!(
        w.engine.create(request("v2")).await,
        Err(EngineError::InvalidRelease(_))
    ));
    let mut r = request("2.0.0");
    r.pipeline = "web".into();
    assert_eq!(
        w.engine.create(r).await.unwrap_err().to_string(),
        "unknown pipeline `web`"
    );
    let mut r = request("2.0.0");
    r.stages = Some(vec!["prod".into()]);
    assert_eq!(
        w.engine.create(r).await.unwrap_err().to_string(),
        "pipeline `api` has no stage `prod`"
    );
    assert!(
        w.engine
            .store()
            .list_runs(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_cut_short_resumes_from_its_log() {
    let w = world(
        &[("staging", Verdict::Pass), ("production", Verdict::Pass)],
        &[],
        None,
    );
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    // As if a host died during production: staging finished, production
    // started with two steps done (and the environment shows them).
    let store = w.engine.store();
    let lease = store.claim(Some(&id), 1).await.unwrap().remove(0);
    store
        .append(&lease, "run-started", None, json!({}))
        .await
        .unwrap();
    store
        .append(
            &lease,
            "stage-finished",
            Some("staging"),
            json!({"result": "succeeded"}),
        )
        .await
        .unwrap();
    store
        .append(
            &lease,
            "stage-started",
            Some("production"),
            json!({"stable": "1.0.0"}),
        )
        .await
        .unwrap();
    store
        .append(&lease, "pre-jobs-done", Some("production"), json!({}))
        .await
        .unwrap();
    for action in &strategy().plan[..2] {
        store
            .append(
                &lease,
                "step",
                Some("production"),
                json!(StepRecord {
                    action: action.clone(),
                    outcome: Outcome::Ok
                }),
            )
            .await
            .unwrap();
    }
    store
        .set_status(&lease, RunStatus::Running, Some("production"), None)
        .await
        .unwrap();
    w.providers["production"]
        .slots
        .lock()
        .unwrap()
        .insert("2.0.0".into(), ("2.0.0".into(), 1));
    // The host that wrote this is gone: its run is free to take.
    store.release(&lease).await.unwrap();

    let resumed = w.engine.resume_all().await.unwrap();
    assert_eq!(resumed, [(id.clone(), RunStatus::Succeeded)]);
    // Staging was not run again; production finished.
    assert_eq!(
        w.providers["staging"].snapshot(),
        [("1.0.0".to_string(), "1.0.0".to_string(), 2)]
    );
    assert_eq!(
        w.providers["production"].snapshot(),
        [("2.0.0".to_string(), "2.0.0".to_string(), 2)]
    );
    let log = kinds(&w.engine, &id).await;
    assert_eq!(log.iter().filter(|(k, _)| k == "step").count(), 6);
    assert_eq!(log.iter().filter(|(k, _)| k == "run-started").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_busy_environment_refuses_a_second_run_when_told_to() {
    let w = world(&[("production", Verdict::Pass)], &["production"], None);
    let mut engine = Arc::try_unwrap(w.engine).ok().unwrap();
    let env = engine.environments.remove("production").unwrap();
    let mut env = Arc::try_unwrap(env).ok().unwrap();
    env.refuse_when_busy = true;
    engine
        .environments
        .insert("production".into(), Arc::new(env));
    let engine = Arc::new(engine);
    // The first run holds production while it waits for approval.
    let first = engine.create(request("2.0.0")).await.unwrap();
    let (e, id) = (engine.clone(), first.clone());
    let task = tokio::spawn(async move { e.execute(&id).await.unwrap() });
    while engine.store().run(&first).await.unwrap().status != RunStatus::AwaitingApproval {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = engine.create(request("2.1.0")).await.unwrap();
    assert_eq!(engine.execute(&second).await.unwrap(), RunStatus::Failed);
    let run = engine.store().run(&second).await.unwrap();
    assert_eq!(
        run.reason,
        Some(format!(
            "environment `production` is busy: held by run `{first}` (concurrency = \"refuse\")"
        ))
    );
    w.notifications.idle().await;
    assert!(
        w.recorder
            .seen
            .lock()
            .unwrap()
            .contains(&(EventKind::Failed, Some("production".into())))
    );
    // Production wants a second person: alice started the run.
    assert!(matches!(
        engine
            .decide(&first, Decision::Approve { by: "alice".into() })
            .await,
        Err(EngineError::SameApprover { .. })
    ));
    engine
        .decide(&first, Decision::Approve { by: "bob".into() })
        .await
        .unwrap();
    assert_eq!(task.await.unwrap(), RunStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_slow_notifier_does_not_hold_the_run() {
    // The notifier answers nothing until the run is over.
    let gate = Arc::new(Semaphore::new(0));
    let w = world_with_gate(
        &[("staging", Verdict::Pass), ("production", Verdict::Pass)],
        &[],
        None,
        Some(gate.clone()),
    );
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::Succeeded);
    let queued = w.notifications.pending();
    // run started, 2 stage starts, 4 traffic changes, succeeded.
    assert_eq!(queued, 8);
    assert!(w.recorder.seen.lock().unwrap().is_empty());
    let notification = |e: &rollcage_store::Event| e.kind == "notification";
    let log = w.engine.store().events(&id, 0).await.unwrap();
    assert!(!log.iter().any(notification));

    gate.add_permits(queued);
    let seen = w.seen().await;
    assert_eq!(seen.len(), queued);
    assert_eq!(seen.first().map(|(k, _)| *k), Some(EventKind::RunStarted));
    assert_eq!(seen.last().map(|(k, _)| *k), Some(EventKind::Succeeded));
    // Each delivery is logged once it ended, after the run finished.
    let log = w.engine.store().events(&id, 0).await.unwrap();
    let finished = log.iter().position(|e| e.kind == "run-finished").unwrap();
    let entries: Vec<_> = log.iter().filter(|e| notification(e)).collect();
    assert_eq!(entries.len(), queued);
    assert!(entries.iter().all(|e| e.seq > log[finished].seq
        && e.data == json!({"notifier": "console", "attempts": 1, "error": null})));
}

/// Waits (on the test's clock) until `ok` holds of run `id`.
async fn until_run(
    engine: &Engine,
    id: &str,
    what: &str,
    ok: impl Fn(&rollcage_store::Run, &[rollcage_store::Event]) -> bool,
) {
    for _ in 0..2000 {
        let (run, log) = engine.store().run_with_log(id).await.unwrap();
        if ok(&run, &log) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id}: never {what}");
}

#[tokio::test(start_paused = true)]
async fn a_run_of_another_process_waits_for_the_environment_a_first_run_holds() {
    // Two processes on one database, as two `rollcage run` in two
    // terminals: the lock is in the store, not in either process.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let open = |name: &str| -> Arc<dyn Store> {
        let identity = rollcage_store::HostIdentity {
            name: name.into(),
            lease: Duration::from_secs(60),
        };
        Arc::new(SqliteStore::open_as(&path, identity).unwrap())
    };
    let envs = [("production", Verdict::Pass)];
    let one = world_on(open("one"), &envs, &["production"], None, None);
    let two = world_on(open("two"), &envs, &["production"], None, None);
    let first = one.engine.create(request("2.0.0")).await.unwrap();
    let (e, id) = (one.engine.clone(), first.clone());
    let a = tokio::spawn(async move { e.execute(&id).await.unwrap() });
    until_run(&one.engine, &first, "awaiting approval", |r, _| {
        r.status == RunStatus::AwaitingApproval
    })
    .await;

    let second = two.engine.create(request("2.1.0")).await.unwrap();
    let (e, id) = (two.engine.clone(), second.clone());
    let b = tokio::spawn(async move { e.execute(&id).await.unwrap() });
    until_run(&two.engine, &second, "waiting for production", |_, log| {
        log.iter().any(|e| e.kind == "waiting-for-environment")
    })
    .await;
    let (run, log) = two.engine.store().run_with_log(&second).await.unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    let waiting = log
        .iter()
        .find(|e| e.kind == "waiting-for-environment")
        .unwrap();
    assert_eq!(waiting.data["holder"], first.as_str());
    assert_eq!(waiting.data["holding"], true);
    // Listed as queued, and it has touched nothing.
    let queued = one
        .engine
        .store()
        .list_runs(&rollcage_store::RunFilter {
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        queued.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [second.as_str()]
    );
    assert!(
        !log.iter()
            .any(|e| e.kind == "stage-started" || e.kind == "intent")
    );

    // The first is approved through the other process; it finishes, and
    // the second goes on from there.
    two.engine
        .decide(&first, Decision::Approve { by: "bob".into() })
        .await
        .unwrap();
    assert_eq!(a.await.unwrap(), RunStatus::Succeeded);
    until_run(&two.engine, &second, "awaiting approval", |r, _| {
        r.status == RunStatus::AwaitingApproval
    })
    .await;
    one.engine
        .decide(&second, Decision::Approve { by: "bob".into() })
        .await
        .unwrap();
    assert_eq!(b.await.unwrap(), RunStatus::Succeeded);
    let (_, first_log) = one.engine.store().run_with_log(&first).await.unwrap();
    let (_, second_log) = two.engine.store().run_with_log(&second).await.unwrap();
    let finished = first_log
        .iter()
        .find(|e| e.kind == "stage-finished")
        .unwrap();
    let locked = second_log
        .iter()
        .find(|e| e.kind == "environment-locked")
        .unwrap();
    assert!(locked.at_ms >= finished.at_ms);
    // The decision was recorded by the process driving each run.
    assert!(first_log.iter().any(|e| e.kind == "decision"));
    assert!(
        one.engine
            .store()
            .environment_locks()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_are_told_the_release_they_run_for() {
    let w = world(&[("staging", Verdict::Pass)], &[], None);
    let mut engine = Arc::try_unwrap(w.engine).ok().unwrap();
    let env = engine.environments.remove("staging").unwrap();
    let mut env = Arc::try_unwrap(env).ok().unwrap();
    let job = |name: &str, env: Vec<(String, String)>| Job {
        name: name.into(),
        command: vec!["./migrate".into()],
        env,
        timeout_ms: 1000,
    };
    env.pre_jobs = vec![job("migrate", vec![])];
    // An operator's own value is kept.
    env.post_jobs = vec![job(
        "smoke",
        vec![("ROLLCAGE_RELEASE".into(), "pinned".into())],
    )];
    engine.environments.insert("staging".into(), Arc::new(env));
    let id = engine.create(request("2.0.0")).await.unwrap();
    assert_eq!(engine.execute(&id).await.unwrap(), RunStatus::Succeeded);
    let jobs = w.providers["staging"].jobs.lock().unwrap().clone();
    let release = |j: &Job| {
        j.env
            .iter()
            .filter(|(k, _)| k == "ROLLCAGE_RELEASE")
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(jobs.len(), 2);
    assert_eq!(release(&jobs[0]), ["2.0.0"]);
    assert_eq!(release(&jobs[1]), ["pinned"]);
}
