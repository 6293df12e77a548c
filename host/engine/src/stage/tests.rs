use std::sync::Arc;

use rollcage_core::{AnalysisRequest, RouteWeight, Verdict};

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
