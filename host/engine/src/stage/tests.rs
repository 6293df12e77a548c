use std::sync::Arc;

use rollcage_core::{AnalysisRequest, ExposureChange, ExposureControl, RouteWeight, Verdict};

use super::*;
use crate::fakes::{FakeProvider, PlanStrategy, apply, route, scripted};

fn analyze() -> Action {
    Action::Analyze(AnalysisRequest {
        checks: vec![],
        slot: "2.0.0".into(),
    })
}

/// A small canary from 1.0.0 to 2.0.0, and its rollback.
fn canary_plan() -> (Vec<Action>, Vec<Action>) {
    (
        vec![
            apply("2.0.0", "2.0.0", 1),
            route(&[("2.0.0", 20), ("1.0.0", 80)]),
            analyze(),
            apply("2.0.0", "2.0.0", 3),
            route(&[("2.0.0", 100)]),
            Action::RemoveSlot {
                slot: "1.0.0".into(),
            },
        ],
        vec![
            route(&[("1.0.0", 100)]),
            Action::RemoveSlot {
                slot: "2.0.0".into(),
            },
        ],
    )
}

struct Harness {
    provider: Arc<FakeProvider>,
    stage: Stage,
    decisions: mpsc::Sender<Decision>,
    rx: mpsc::Receiver<Decision>,
}

fn harness(plan: (Vec<Action>, Vec<Action>), check: Vec<Result<Verdict, ()>>) -> Harness {
    let provider = Arc::new(FakeProvider::running("1.0.0", "1.0.0", 3));
    let stage = Stage {
        target: Target {
            environment: "production".into(),
            service: "api".into(),
            service_spec: "{}".into(),
        },
        provider: provider.clone(),
        strategy: Arc::new(PlanStrategy {
            id: "canary".parse().unwrap(),
            plan: plan.0,
            rollback: plan.1,
        }),
        checks: BTreeMap::from([(
            "error-rate".to_string(),
            scripted("error-rate", check) as Arc<dyn HealthCheck>,
        )]),
        default_checks: vec!["error-rate".into()],
        analysis: AnalysisSpec {
            count: 2,
            ..AnalysisSpec::default()
        },
        progress_deadline: Duration::from_secs(600),
        readiness_poll: Duration::from_secs(1),
        params: "{}".into(),
        replicas: 3,
        exposures: BTreeMap::new(),
        exposure: None,
        settle: Duration::ZERO,
    };
    let (decisions, rx) = mpsc::channel(4);
    Harness {
        provider,
        stage,
        decisions,
        rx,
    }
}

async fn run(
    h: &mut Harness,
    history: Vec<StepRecord>,
) -> (StageResult, Vec<StepRecord>, Vec<StageEvent>) {
    let mut events: Vec<StageEvent> = Vec::new();
    let (result, history) = StageRun {
        stage: &h.stage,
        release: Release::new("2.0.0"),
        stable: Some(Release::new("1.0.0")),
        history,
        events: &mut events,
        decisions: &mut h.rx,
        in_flight_since_ms: None,
        early: None,
        exposed_before: vec![],
    }
    .run()
    .await;
    (result, history, events)
}

#[tokio::test(start_paused = true)]
async fn a_healthy_release_is_promoted() {
    let mut h = harness(canary_plan(), vec![Ok(Verdict::Pass)]);
    let (result, history, events) = run(&mut h, vec![]).await;
    assert_eq!(result, StageResult::Succeeded);
    assert_eq!(history.len(), 6);
    assert_eq!(history[2].outcome, Outcome::AnalysisPassed);
    assert_eq!(
        h.provider.snapshot(),
        [("2.0.0".to_string(), "2.0.0".to_string(), 3)]
    );
    let analyses = events
        .iter()
        .filter(|e| matches!(e, StageEvent::Analysis(_)))
        .count();
    assert_eq!(analyses, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_analysis_rolls_back_by_itself() {
    let mut h = harness(canary_plan(), vec![Ok(Verdict::Pass), Ok(Verdict::Fail)]);
    let (result, history, events) = run(&mut h, vec![]).await;
    assert_eq!(
        result,
        StageResult::RolledBack {
            reason: "check `error-rate` failed 1 time(s), over its limit of 0: Fail".into()
        }
    );
    assert!(matches!(
        history.last().unwrap().outcome,
        Outcome::AnalysisFailed(_)
    ));
    // The environment is what it was: the stable release, all traffic.
    assert_eq!(
        h.provider.snapshot(),
        [("1.0.0".to_string(), "1.0.0".to_string(), 3)]
    );
    assert_eq!(
        *h.provider.weights.lock().unwrap(),
        [RouteWeight {
            slot: "1.0.0".into(),
            weight: 100
        }]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StageEvent::RollingBack(_)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_slot_that_never_gets_ready_hits_the_progress_deadline() {
    let mut h = harness(canary_plan(), vec![Ok(Verdict::Pass)]);
    let provider = Arc::new(FakeProvider {
        never_ready: vec!["2.0.0".into()],
        ..FakeProvider::running("1.0.0", "1.0.0", 3)
    });
    h.stage.provider = provider.clone();
    h.provider = provider;
    h.stage.progress_deadline = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    let (result, _, _) = run(&mut h, vec![]).await;
    assert_eq!(
        result,
        StageResult::RolledBack {
            reason: "slot `2.0.0` had 0 of 1 instances ready at its progress deadline of 30 s"
                .into()
        }
    );
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(
        h.provider.snapshot(),
        [("1.0.0".to_string(), "1.0.0".to_string(), 3)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_approval_pause_waits_for_a_person() {
    let (mut plan, back) = canary_plan();
    plan.insert(
        3,
        Action::Pause {
            pause: Pause::Approval,
        },
    );
    let mut h = harness((plan.clone(), back.clone()), vec![Ok(Verdict::Pass)]);
    h.decisions
        .send(Decision::Approve { by: "alice".into() })
        .await
        .unwrap();
    let (result, _, events) = run(&mut h, vec![]).await;
    assert_eq!(result, StageResult::Succeeded);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StageEvent::AwaitingApproval(_)))
    );

    let mut h = harness((plan, back), vec![Ok(Verdict::Pass)]);
    h.decisions
        .send(Decision::Abort { by: "bob".into() })
        .await
        .unwrap();
    let (result, _, _) = run(&mut h, vec![]).await;
    assert_eq!(
        result,
        StageResult::RolledBack {
            reason: "aborted by bob".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_pause_waits_its_time() {
    let (mut plan, back) = canary_plan();
    plan.insert(
        3,
        Action::Pause {
            pause: Pause::DurationMs(300_000),
        },
    );
    let mut h = harness((plan, back), vec![Ok(Verdict::Pass)]);
    let started = tokio::time::Instant::now();
    let (result, _, _) = run(&mut h, vec![]).await;
    assert_eq!(result, StageResult::Succeeded);
    // Five minutes of pause plus ten seconds between the two measurements.
    assert_eq!(started.elapsed(), Duration::from_secs(310));
}

#[tokio::test(start_paused = true)]
async fn a_stage_resumes_from_its_recorded_history() {
    let (plan, back) = canary_plan();
    // As after a crash: the first two steps were recorded, and the
    // environment shows them.
    let mut h = harness((plan.clone(), back), vec![Ok(Verdict::Pass)]);
    let done: Vec<StepRecord> = plan[..2]
        .iter()
        .map(|a| StepRecord {
            action: a.clone(),
            outcome: Outcome::Ok,
        })
        .collect();
    h.provider
        .slots
        .lock()
        .unwrap()
        .insert("2.0.0".into(), ("2.0.0".into(), 1));
    let (result, history, events) = run(&mut h, done).await;
    assert_eq!(result, StageResult::Succeeded);
    assert_eq!(history.len(), 6);
    // Only the remaining four steps were executed.
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, StageEvent::Step(_)))
            .count(),
        4
    );
}

fn expose(percent: u32) -> Action {
    Action::Expose(ExposureChange {
        control: String::new(),
        flag: "checkout-v2".into(),
        percent,
    })
}

/// The canary with the flag moved 10 -> 50 -> 100 after promotion, an
/// analysis after each move.
fn exposure_plan() -> (Vec<Action>, Vec<Action>) {
    let (mut plan, back) = canary_plan();
    for p in [10, 50, 100] {
        plan.push(expose(p));
        plan.push(analyze());
    }
    (plan, back)
}

/// A harness whose environment moves flags through `flags`, with the
/// flag at 5% before the run.
fn exposure_harness(check: Vec<Result<Verdict, ()>>) -> (Harness, Arc<crate::fakes::FakeExposure>) {
    let mut h = harness(exposure_plan(), check);
    let flags = Arc::new(crate::fakes::FakeExposure::with(
        "flags",
        &[("checkout-v2", 5)],
    ));
    h.stage.exposures = BTreeMap::from([(
        "flags".to_string(),
        flags.clone() as Arc<dyn ExposureControl>,
    )]);
    h.stage.exposure = Some("flags".into());
    h.stage.settle = Duration::from_secs(15);
    (h, flags)
}

#[tokio::test(start_paused = true)]
async fn expose_steps_move_the_flag_and_analyses_wait_for_it_to_settle() {
    let (mut h, flags) = exposure_harness(vec![Ok(Verdict::Pass)]);
    let started = tokio::time::Instant::now();
    let (result, history, events) = run(&mut h, vec![]).await;
    assert_eq!(result, StageResult::Succeeded);
    assert_eq!(
        *flags.sets.lock().unwrap(),
        [
            ("checkout-v2".to_string(), 10),
            ("checkout-v2".to_string(), 50),
            ("checkout-v2".to_string(), 100)
        ]
    );
    assert_eq!(
        (&history[6].action, &history[6].outcome),
        (&expose(10), &Outcome::Ok)
    );
    // The exposure before the first change is logged once, before it.
    let before: Vec<&FlagBefore> = events
        .iter()
        .filter_map(|e| match e {
            StageEvent::ExposureBefore(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(
        before,
        [&FlagBefore {
            control: "flags".into(),
            flag: "checkout-v2".into(),
            percent: 5,
            revision: "1".into(),
        }]
    );
    // Four analyses of two measurements 10 s apart; three of them after a
    // flag change, each waiting 15 s first.
    assert_eq!(started.elapsed(), Duration::from_secs(4 * 10 + 3 * 15));
}

#[tokio::test(start_paused = true)]
async fn a_failed_analysis_after_an_exposure_change_restores_the_flag() {
    // Pass, pass (the analysis before the flag moves), pass, pass (after
    // 10%), then a failure after 50%.
    let script = vec![
        Ok(Verdict::Pass),
        Ok(Verdict::Pass),
        Ok(Verdict::Pass),
        Ok(Verdict::Pass),
        Ok(Verdict::Pass),
        Ok(Verdict::Fail),
    ];
    let (mut h, flags) = exposure_harness(script);
    let (result, _, events) = run(&mut h, vec![]).await;
    assert!(
        matches!(result, StageResult::RolledBack { .. }),
        "{result:?}"
    );
    assert_eq!(flags.percent("checkout-v2"), 5);
    assert_eq!(
        flags.sets.lock().unwrap().last().unwrap(),
        &("checkout-v2".to_string(), 5)
    );
    // The restore is a rollback step, before the traffic moves back.
    let rollback: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            StageEvent::RollbackStep(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rollback,
        [
            "expose checkout-v2 5% (via flags)",
            "route 1.0.0=100%",
            "remove slot 2.0.0"
        ]
    );
}

/// A check that passes and remembers what it was asked to measure.
struct Recording {
    id: rollcage_core::PluginId,
    targets: std::sync::Mutex<Vec<CheckTarget>>,
}

impl rollcage_core::Plugin for Recording {
    fn id(&self) -> &rollcage_core::PluginId {
        &self.id
    }
}

#[async_trait::async_trait]
impl HealthCheck for Recording {
    async fn check(
        &self,
        target: &CheckTarget,
    ) -> Result<rollcage_core::Measurement, rollcage_core::PluginError> {
        self.targets.lock().unwrap().push(target.clone());
        Ok(rollcage_core::Measurement {
            verdict: Verdict::Pass,
            value: None,
            detail: String::new(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_analysis_after_an_exposure_change_measures_the_exposure() {
    let (mut h, _flags) = exposure_harness(vec![Ok(Verdict::Pass)]);
    let check = Arc::new(Recording {
        id: "error-rate".parse().unwrap(),
        targets: Default::default(),
    });
    h.stage.checks = BTreeMap::from([(
        "error-rate".to_string(),
        check.clone() as Arc<dyn HealthCheck>,
    )]);
    let (result, _, _) = run(&mut h, vec![]).await;
    assert_eq!(result, StageResult::Succeeded);
    let exposures: Vec<Option<u32>> = check
        .targets
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.exposure.as_ref().map(|e| e.percent))
        .collect();
    // Two measurements per analysis: none before the flag moved, then the
    // exposure each analysis follows.
    assert_eq!(
        exposures,
        [
            None,
            None,
            Some(10),
            Some(10),
            Some(50),
            Some(50),
            Some(100),
            Some(100)
        ]
    );
    assert_eq!(
        check.targets.lock().unwrap()[2]
            .exposure
            .as_ref()
            .unwrap()
            .flag,
        "checkout-v2"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stage_resumed_mid_expose_repeats_the_set_and_restores_the_logged_exposure() {
    let (plan, _) = exposure_plan();
    // As after a crash: the canary promoted, the exposure before logged,
    // the flag set to 10% but the step not recorded.
    let script = vec![Ok(Verdict::Fail)];
    let (mut h, flags) = exposure_harness(script);
    let done: Vec<StepRecord> = plan[..6]
        .iter()
        .map(|a| StepRecord {
            action: a.clone(),
            outcome: match a {
                Action::Analyze(_) => Outcome::AnalysisPassed,
                _ => Outcome::Ok,
            },
        })
        .collect();
    *h.provider.slots.lock().unwrap() =
        BTreeMap::from([("2.0.0".to_string(), ("2.0.0".to_string(), 3))]);
    flags
        .set_exposure("checkout-v2", "production", 10)
        .await
        .unwrap();
    flags.sets.lock().unwrap().clear();
    let mut events: Vec<StageEvent> = Vec::new();
    let (result, _) = StageRun {
        stage: &h.stage,
        release: Release::new("2.0.0"),
        stable: Some(Release::new("1.0.0")),
        history: done,
        events: &mut events,
        decisions: &mut h.rx,
        in_flight_since_ms: Some(crate::unix_ms()),
        early: None,
        exposed_before: vec![FlagBefore {
            control: "flags".into(),
            flag: "checkout-v2".into(),
            percent: 5,
            revision: "1".into(),
        }],
    }
    .run()
    .await;
    assert!(
        matches!(result, StageResult::RolledBack { .. }),
        "{result:?}"
    );
    // The set in flight was repeated (harmless), the flag's exposure was
    // not read again (it is 10% now, not what it was before the run), and
    // the rollback restored the logged 5%.
    let sets = flags.sets.lock().unwrap().clone();
    assert_eq!(sets[0], ("checkout-v2".to_string(), 10));
    assert_eq!(sets.last().unwrap(), &("checkout-v2".to_string(), 5));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StageEvent::ExposureBefore(_)))
    );
    assert_eq!(flags.percent("checkout-v2"), 5);
}

#[tokio::test(start_paused = true)]
async fn an_expose_step_without_a_control_fails_the_step_and_rolls_back() {
    let mut h = harness(exposure_plan(), vec![Ok(Verdict::Pass)]);
    let (result, _, _) = run(&mut h, vec![]).await;
    assert_eq!(
        result,
        StageResult::RolledBack {
            reason: "cannot expose flag `checkout-v2` in `production`: environment `production` has no exposure control: set `exposure = \"<plugin id>\"` in [environments.production]".into()
        }
    );
}
