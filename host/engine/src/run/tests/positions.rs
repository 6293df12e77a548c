//! A run's position as the engine records it: the summary's stage follows
//! the run into each stage, and a decision allowed for one stage never acts
//! in another.

use super::*;

/// Poll run `id` until `done` holds for it and its log.
async fn until(
    engine: &Engine,
    id: &str,
    done: impl Fn(&rollcage_store::Run, &[rollcage_store::Event]) -> bool,
) {
    // Each look reads the store (on its own threads), so the engine's
    // writes land between looks, whatever the paused clock says.
    for _ in 0..5_000 {
        let (run, log) = engine.store().run_with_log(id).await.unwrap();
        if done(&run, &log) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {id} never got there");
}

#[tokio::test(start_paused = true)]
async fn the_recorded_stage_is_the_one_the_run_is_in_from_its_start() {
    let w = world(&[("production", Verdict::Pass)], &["production"], None);
    // The first run holds production while it waits for approval.
    let first = w.engine.create(request("2.0.0")).await.unwrap();
    let (e, id) = (w.engine.clone(), first.clone());
    let task = tokio::spawn(async move { e.execute(&id).await.unwrap() });
    until(&w.engine, &first, |r, _| {
        r.status == RunStatus::AwaitingApproval
    })
    .await;
    // The second queues for production's lock: its first stage, in which
    // nothing has been logged yet. The summary says so all the same.
    let second = w.engine.create(request("2.1.0")).await.unwrap();
    let (e, id) = (w.engine.clone(), second.clone());
    let queued = tokio::spawn(async move { e.execute(&id).await.unwrap() });
    until(&w.engine, &second, |r, _| {
        r.stage.as_deref() == Some("production")
    })
    .await;
    // It waits for the lock, queued: of production, only that wait is
    // logged, naming the run that holds it.
    until(&w.engine, &second, |r, log| {
        r.status == RunStatus::Queued && log.iter().any(|e| e.stage.is_some())
    })
    .await;
    let (run, log) = w.engine.store().run_with_log(&second).await.unwrap();
    assert_eq!(run.stage.as_deref(), Some("production"));
    let staged: Vec<&str> = log
        .iter()
        .filter(|e| e.stage.is_some())
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(staged, ["waiting-for-environment"], "{log:?}");
    let wait = log.iter().find(|e| e.stage.is_some()).unwrap();
    assert_eq!(wait.data["holder"], first.as_str());
    queued.abort();
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_decision_allowed_for_an_earlier_stage_is_dropped() {
    let w = world(
        &[("staging", Verdict::Pass), ("production", Verdict::Pass)],
        &["production"],
        None,
    );
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    let (e, run_id) = (w.engine.clone(), id.clone());
    let task = tokio::spawn(async move { e.execute(&run_id).await.unwrap() });
    until(&w.engine, &id, |r, _| {
        r.status == RunStatus::AwaitingApproval
    })
    .await;
    // An approval checked while the run was in staging, taken now that it
    // waits in production: dropped, and the run keeps waiting.
    let store = w.engine.store();
    store
        .request_decision(
            &id,
            &DecisionRequest {
                action: DecisionAction::Approve,
                by: "sam".into(),
                stage: Some("staging".into()),
            },
        )
        .await
        .unwrap();
    until(&w.engine, &id, |_, log| {
        log.iter().any(|e| e.kind == "decision-dropped")
    })
    .await;
    let (run, log) = store.run_with_log(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::AwaitingApproval);
    let dropped = log.iter().find(|e| e.kind == "decision-dropped").unwrap();
    assert_eq!(dropped.stage.as_deref(), Some("staging"));
    assert!(!log.iter().any(|e| e.kind == "approved"));
    // One made in production goes through, and the audit names production.
    w.engine
        .decide(&id, Decision::Approve { by: "bob".into() })
        .await
        .unwrap();
    assert_eq!(task.await.unwrap(), RunStatus::Succeeded);
    let audit = store
        .audit(&rollcage_store::AuditFilter {
            actor: Some("bob".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit[0].entry.detail["stage"], "production");
}

#[tokio::test(start_paused = true)]
async fn an_empty_or_repeated_stage_list_is_refused() {
    let w = world(
        &[("staging", Verdict::Pass), ("production", Verdict::Pass)],
        &[],
        None,
    );
    let mut r = request("2.0.0");
    r.stages = Some(vec![]);
    assert!(matches!(
        w.engine.create(r).await,
        Err(EngineError::NoStages)
    ));
    let mut r = request("2.0.0");
    r.stages = Some(vec![
        "staging".into(),
        "production".into(),
        "staging".into(),
    ]);
    assert_eq!(
        w.engine.create(r).await.unwrap_err().to_string(),
        "stage `staging` is listed twice in `stages`"
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
