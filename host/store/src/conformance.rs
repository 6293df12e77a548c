//! One test suite for every [`Store`]: what the engine and the API rely on,
//! checked against SQLite and PostgreSQL alike. A backend's tests call
//! [`store_conformance!`](crate::store_conformance) with a [`Database`]
//! maker; each case gets a fresh, empty database and opens it as one host
//! or several.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::{
    AuditFilter, DecisionAction, DecisionRequest, DeliveryOutcome, EnvLock, HostIdentity, Lease,
    NewAudit, NewDelivery, NewRun, RunFilter, RunStatus, Store, StoreError, Wake,
};

/// A fresh database, opened as any number of hosts.
#[async_trait]
pub trait Database: Send + Sync {
    /// A handle on this database writing as `identity`.
    async fn open(&self, identity: HostIdentity) -> Arc<dyn Store>;
}

/// A handle as host `name` with leases of `lease`.
pub async fn host(db: &dyn Database, name: &str, lease: Duration) -> Arc<dyn Store> {
    db.open(HostIdentity {
        name: name.into(),
        lease,
    })
    .await
}

/// A run of `pipeline` through staging and production.
pub fn new_run(pipeline: &str) -> NewRun {
    NewRun {
        pipeline: pipeline.into(),
        release: "1.4.0".into(),
        notes: None,
        params: vec![("issue_key".into(), "OPS-12".into())],
        stages: vec!["staging".into(), "production".into()],
        started_by: "alice".into(),
        config_hash: "abc123".into(),
    }
}

/// A run created and claimed by `store`.
pub async fn claimed(store: &dyn Store, pipeline: &str) -> Lease {
    let id = store.create_run(new_run(pipeline)).await.unwrap();
    let mut leases = store.claim(Some(&id), 1).await.unwrap();
    assert_eq!(leases.len(), 1, "run {id} could not be claimed");
    leases.remove(0)
}

const LONG: Duration = Duration::from_secs(60);

/// Every case, as `#[tokio::test]` functions in the calling module;
/// `$fresh` is an expression whose `.await` gives a new [`Database`].
/// With `optional`, `$fresh.await` gives `Option<impl Database>` instead:
/// `None` when the backend cannot be had on this machine (the harness that
/// made it said why), and then every case passes without running.
#[macro_export]
macro_rules! store_conformance {
    (optional $fresh:expr) => {
        $crate::store_conformance!(@each optional $fresh);
    };
    (@each $mode:ident $fresh:expr) => {
        $crate::store_conformance!(@cases $mode $fresh;
            a_run_and_its_log_are_read_together,
            unknown_runs_are_errors_and_nothing_is_written,
            runs_are_listed_newest_first_with_filters_and_a_cursor,
            runs_are_filtered_by_environment,
            the_audit_trail_is_kept_newest_first_with_filters,
            appends_wake_watchers_with_the_run_id,
            decisions_are_queued_taken_once_and_wake_the_run,
            queued_deliveries_go_to_another_host_once_their_host_is_gone,
            ending_a_delivery_logs_it_once_even_after_the_run_finished,
            deliveries_for_an_unknown_run_are_not_queued,
            concurrent_appends_get_gapless_sequence_numbers,
            a_run_is_driven_by_one_host_and_taken_over_when_its_lease_runs_out,
            a_host_that_lost_its_lease_cannot_write,
            heartbeats_keep_runs_and_a_release_hands_them_over_at_once,
            concurrent_claims_never_give_a_run_to_two_hosts,
            an_environment_is_held_by_one_run_and_queued_for_in_order,
            a_finished_run_frees_its_environments_and_its_lease,
            unfinished_runs_are_counted_for_admission
        );
    };
    (@cases required $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let db = $fresh.await;
                $crate::conformance::$case(&db).await;
            }
        )*
    };
    (@cases optional $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(db) = $fresh.await {
                    $crate::conformance::$case(&db).await;
                }
            }
        )*
    };
    ($fresh:expr) => {
        $crate::store_conformance!(@each required $fresh);
    };
}

pub async fn a_run_and_its_log_are_read_together(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let lease = claimed(&*store, "api").await;
    let id = lease.run_id.clone();
    assert_eq!(
        store
            .append(
                &lease,
                "intent",
                Some("staging"),
                json!({"action": "apply"})
            )
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .append(&lease, "step", Some("staging"), json!({"outcome": "ok"}))
            .await
            .unwrap(),
        2
    );
    store
        .set_status(&lease, RunStatus::Running, Some("staging"), None)
        .await
        .unwrap();
    // Another handle (another process) reads what was written.
    let other = host(db, "b", LONG).await;
    let run = other.run(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.stage.as_deref(), Some("staging"));
    assert_eq!(run.run, new_run("api"));
    let events = other.events(&id, 0).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events[1].data, json!({"outcome": "ok"}));
    assert_eq!(other.events(&id, 1).await.unwrap().len(), 1);
    assert_eq!(other.unfinished_runs().await.unwrap().len(), 1);
    store
        .set_status(
            &lease,
            RunStatus::RolledBack,
            None,
            Some("error ratio 0.31"),
        )
        .await
        .unwrap();
    assert!(other.unfinished_runs().await.unwrap().is_empty());
    let (run, log) = other.run_with_log(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::RolledBack);
    assert_eq!(
        (run.stage.as_deref(), run.reason.as_deref()),
        (Some("staging"), Some("error ratio 0.31"))
    );
    assert_eq!(log.len(), 2);
    assert!(run.created_ms > 0 && run.updated_ms >= run.created_ms);
    assert!(matches!(
        other.run_with_log("nope").await,
        Err(StoreError::NoSuchRun(_))
    ));
}

pub async fn unknown_runs_are_errors_and_nothing_is_written(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let lease = Lease {
        run_id: "nope".into(),
        epoch: 1,
    };
    let err = store
        .append(&lease, "step", None, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no run `nope`");
    assert!(matches!(
        store.run("nope").await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(
        store
            .set_status(&lease, RunStatus::Failed, None, None)
            .await
            .is_err()
    );
    assert!(store.claim(Some("nope"), 1).await.unwrap().is_empty());
    assert!(store.holder("nope").await.unwrap().is_none());
    assert!(matches!(
        store
            .request_decision(
                "nope",
                &DecisionRequest {
                    action: DecisionAction::Abort,
                    by: "bob".into(),
                    stage: None,
                },
            )
            .await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(store.events("nope", 0).await.unwrap().is_empty());
}

pub async fn runs_are_listed_newest_first_with_filters_and_a_cursor(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let mut ids = Vec::new();
    for p in ["api", "web", "api", "api"] {
        ids.push(store.create_run(new_run(p)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last = store.claim(Some(&ids[3]), 1).await.unwrap().remove(0);
    store
        .set_status(&last, RunStatus::Succeeded, None, None)
        .await
        .unwrap();
    let api = store
        .list_runs(&RunFilter {
            pipeline: Some("api".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        api.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [ids[3].clone(), ids[2].clone(), ids[0].clone()]
    );
    let page = store
        .list_runs(&RunFilter {
            pipeline: Some("api".into()),
            limit: 1,
            before: Some(ids[3].clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, ids[2]);
    let done = store
        .list_runs(&RunFilter {
            status: Some(RunStatus::Succeeded),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    let queued = store
        .list_runs(&RunFilter {
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 3);
    let recent = store
        .list_runs(&RunFilter {
            since_ms: Some(api[0].created_ms),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent[0].id, ids[3]);
}

pub async fn runs_are_filtered_by_environment(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let both = store.create_run(new_run("api")).await.unwrap();
    let mut staging_only = new_run("api");
    staging_only.stages = vec!["staging".into()];
    let staging = store.create_run(staging_only).await.unwrap();
    let list = |env: &str| {
        let f = RunFilter {
            environment: Some(env.into()),
            ..Default::default()
        };
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .list_runs(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut all = vec![both.clone(), staging];
    all.sort();
    assert_eq!(list("staging").await, all);
    assert_eq!(list("production").await, [both]);
    assert!(list("prod").await.is_empty());
}

pub async fn the_audit_trail_is_kept_newest_first_with_filters(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let run = store.create_run(new_run("api")).await.unwrap();
    for (actor, action) in [("alice", "start"), ("bob", "approve"), ("alice", "abort")] {
        store
            .record_audit(NewAudit {
                actor: actor.into(),
                action: action.into(),
                run_id: Some(run.clone()),
                config_hash: "abc123".into(),
                detail: json!({"stage": "production"}),
            })
            .await
            .unwrap();
    }
    let all = store.audit(&AuditFilter::default()).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|a| a.entry.action.as_str()).collect();
    assert_eq!(actions, ["abort", "approve", "start"]);
    assert_eq!(all[0].entry.detail, json!({"stage": "production"}));
    let alice = store
        .audit(&AuditFilter {
            actor: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(alice.len(), 2);
    let of_run = store
        .audit(&AuditFilter {
            run_id: Some(run.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_run.len(), 3);
    let older = store
        .audit(&AuditFilter {
            before: Some(all[0].id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older[0].entry.action, "approve");
    store.ping().await.unwrap();
}

pub async fn appends_wake_watchers_with_the_run_id(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let mut rx = store.appended();
    let lease = claimed(&*store, "api").await;
    store.append(&lease, "step", None, json!({})).await.unwrap();
    let woken = tokio::time::timeout(LONG, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken, lease.run_id);
    // A failed append wakes nobody.
    let nope = Lease {
        run_id: "nope".into(),
        epoch: 1,
    };
    assert!(store.append(&nope, "step", None, json!({})).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err());
}

pub async fn decisions_are_queued_taken_once_and_wake_the_run(db: &dyn Database) {
    let driver = host(db, "driver", LONG).await;
    let lease = claimed(&*driver, "api").await;
    // Asked for through another host: the driving host is woken.
    let other = host(db, "other", LONG).await;
    let mut woken = driver.wakeups();
    let approve = DecisionRequest {
        action: DecisionAction::Approve,
        by: "bob".into(),
        stage: Some("production".into()),
    };
    let abort = DecisionRequest {
        action: DecisionAction::Abort,
        by: "carol".into(),
        stage: None,
    };
    other
        .request_decision(&lease.run_id, &approve)
        .await
        .unwrap();
    other.request_decision(&lease.run_id, &abort).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, woken.recv()).await {
            Ok(Ok(Wake::Decision(id))) if id == lease.run_id => break,
            Ok(_) => continue,
            Err(_) => panic!("the driving host was not woken for the decision"),
        }
    }
    // Only the host driving the run may take its decisions.
    assert!(matches!(
        other.take_decisions(&lease).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        driver.take_decisions(&lease).await.unwrap(),
        [approve, abort]
    );
    assert!(driver.take_decisions(&lease).await.unwrap().is_empty());
}

fn delivery(notifier: &str, run_id: &str, n: u32) -> NewDelivery {
    NewDelivery {
        notifier: notifier.into(),
        run_id: run_id.into(),
        stage: Some("staging".into()),
        event: json!({"n": n}),
    }
}

pub async fn queued_deliveries_go_to_another_host_once_their_host_is_gone(db: &dyn Database) {
    let short = Duration::from_millis(300);
    let first = host(db, "first", short).await;
    let id = first.create_run(new_run("api")).await.unwrap();
    let queued = first
        .queue_deliveries(vec![delivery("slack", &id, 1), delivery("jira", &id, 1)])
        .await
        .unwrap();
    let more = first
        .queue_deliveries(vec![delivery("slack", &id, 2)])
        .await
        .unwrap();
    assert!(queued[0] < queued[1] && queued[1] < more[0]);
    let queued = [queued, more].concat();
    // Listed for anyone, held or not.
    let listed = first.queued_deliveries().await.unwrap();
    assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), queued);
    // Held by their host while it lives...
    let second = host(db, "second", short).await;
    assert!(second.claim_deliveries().await.unwrap().is_empty());
    first.heartbeat().await.unwrap();
    assert!(second.claim_deliveries().await.unwrap().is_empty());
    // ... and taken over, oldest first, once its heartbeat stops.
    tokio::time::sleep(short * 2).await;
    let pending = second.claim_deliveries().await.unwrap();
    assert_eq!(pending.iter().map(|d| d.id).collect::<Vec<_>>(), queued);
    assert_eq!(pending[0].delivery, delivery("slack", &id, 1));
    assert_eq!(pending[2].delivery.event, json!({"n": 2}));
    assert!(pending[0].queued_ms > 0);
    // Claimed once: a second claim finds nothing new, and the host that
    // lost them cannot end them.
    assert!(second.claim_deliveries().await.unwrap().is_empty());
    let sent = DeliveryOutcome {
        attempts: 1,
        error: None,
    };
    assert!(!first.end_delivery(queued[0], &sent).await.unwrap());
    assert!(second.end_delivery(queued[0], &sent).await.unwrap());
    assert_eq!(first.events(&id, 0).await.unwrap().len(), 1);
    // A host that stops cleanly hands over at once, runs and deliveries.
    let third = host(db, "third", LONG).await;
    let run = claimed(&*second, "api").await;
    second.release_all().await.unwrap();
    assert_eq!(third.claim_deliveries().await.unwrap().len(), 2);
    assert_eq!(
        third.claim(Some(&run.run_id), 1).await.unwrap(),
        [Lease {
            run_id: run.run_id.clone(),
            epoch: run.epoch + 1,
        }]
    );
}

pub async fn ending_a_delivery_logs_it_once_even_after_the_run_finished(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let lease = claimed(&*store, "api").await;
    let id = lease.run_id.clone();
    let queued = store
        .queue_deliveries(vec![delivery("slack", &id, 1), delivery("jira", &id, 1)])
        .await
        .unwrap();
    store
        .set_status(&lease, RunStatus::Succeeded, None, None)
        .await
        .unwrap();
    let mut rx = store.appended();
    let given_up = DeliveryOutcome {
        attempts: 5,
        error: Some("plugin `slack` timed out".into()),
    };
    assert!(store.end_delivery(queued[0], &given_up).await.unwrap());
    assert_eq!(
        tokio::time::timeout(LONG, rx.recv())
            .await
            .unwrap()
            .unwrap(),
        id
    );
    // A second end of the same delivery writes nothing.
    assert!(!store.end_delivery(queued[0], &given_up).await.unwrap());
    let (run, log) = store.run_with_log(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, "notification");
    assert_eq!(log[0].stage.as_deref(), Some("staging"));
    assert_eq!(
        log[0].data,
        json!({"notifier": "slack", "attempts": 5, "error": "plugin `slack` timed out"})
    );
    let sent = DeliveryOutcome {
        attempts: 1,
        error: None,
    };
    assert!(store.end_delivery(queued[1], &sent).await.unwrap());
    assert_eq!(store.events(&id, 0).await.unwrap().len(), 2);
}

pub async fn deliveries_for_an_unknown_run_are_not_queued(db: &dyn Database) {
    let short = Duration::from_millis(100);
    let store = host(db, "a", short).await;
    let id = store.create_run(new_run("api")).await.unwrap();
    let err = store
        .queue_deliveries(vec![
            delivery("slack", &id, 1),
            delivery("slack", "nope", 1),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun(_)), "{err}");
    assert!(store.queue_deliveries(vec![]).await.unwrap().is_empty());
    // The whole batch was undone, the known run's delivery included.
    tokio::time::sleep(short * 3).await;
    let other = host(db, "b", short).await;
    assert!(other.claim_deliveries().await.unwrap().is_empty());
}

pub async fn concurrent_appends_get_gapless_sequence_numbers(db: &dyn Database) {
    let store = host(db, "a", LONG).await;
    let lease = claimed(&*store, "api").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (s, lease) = (store.clone(), lease.clone());
        tasks.push(tokio::spawn(async move {
            s.append(&lease, "step", None, json!({"i": i}))
                .await
                .unwrap()
        }));
    }
    // A delivery's entry, written beside them, takes a number in the same
    // sequence.
    let queued = store
        .queue_deliveries(vec![delivery("slack", &lease.run_id, 1)])
        .await
        .unwrap();
    let sent = DeliveryOutcome {
        attempts: 1,
        error: None,
    };
    assert!(store.end_delivery(queued[0], &sent).await.unwrap());
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    let log = store.events(&lease.run_id, 0).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=51).collect::<Vec<u64>>()
    );
    assert!(seqs.iter().all(|s| (1..=51).contains(s)));
}

pub async fn a_run_is_driven_by_one_host_and_taken_over_when_its_lease_runs_out(db: &dyn Database) {
    let short = Duration::from_millis(400);
    let a = host(db, "a", short).await;
    let b = host(db, "b", short).await;
    let id = a.create_run(new_run("api")).await.unwrap();
    let mine = a.claim(None, 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].run_id, id);
    let first_epoch = mine[0].epoch;
    // Held: nobody else gets it, nor does the holder claim it twice.
    assert!(b.claim(None, 10).await.unwrap().is_empty());
    assert!(b.claim(Some(&id), 1).await.unwrap().is_empty());
    assert!(a.claim(None, 10).await.unwrap().is_empty());
    let (holder, until) = b.holder(&id).await.unwrap().unwrap();
    assert_eq!(holder, "a");
    assert!(until > 0);
    // The lease runs out without a heartbeat: the next claim bumps the
    // epoch.
    tokio::time::sleep(short * 2).await;
    assert!(b.holder(&id).await.unwrap().is_none());
    let taken = b.claim(None, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(taken[0].epoch > first_epoch, "{taken:?}");
    assert_eq!(b.holder(&id).await.unwrap().unwrap().0, "b");
    // The first host's heartbeat no longer has it.
    assert!(a.heartbeat().await.unwrap().is_empty());
}

pub async fn a_host_that_lost_its_lease_cannot_write(db: &dyn Database) {
    let short = Duration::from_millis(300);
    let a = host(db, "a", short).await;
    let b = host(db, "b", LONG).await;
    let old = claimed(&*a, "api").await;
    a.append(&old, "step", Some("staging"), json!({"n": 1}))
        .await
        .unwrap();
    tokio::time::sleep(short * 2).await;
    let new = b.claim(Some(&old.run_id), 1).await.unwrap().remove(0);
    // Every write under the old lease is refused, whoever makes it.
    let fenced = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Fenced { .. }));
    assert!(fenced(
        a.append(&old, "step", Some("staging"), json!({"n": 2}))
            .await
            .map(|_| ())
    ));
    assert!(fenced(
        a.set_status(&old, RunStatus::Failed, None, Some("late"))
            .await
    ));
    assert!(fenced(
        a.lock_environment(&old, "staging", true).await.map(|_| ())
    ));
    assert!(fenced(a.unlock_environment(&old, "staging").await));
    assert!(fenced(a.take_decisions(&old).await.map(|_| ())));
    assert!(fenced(a.release(&old).await));
    // The same epoch from another host is refused too.
    assert!(fenced(
        a.append(&new, "step", None, json!({})).await.map(|_| ())
    ));
    let err = a
        .append(&old, "step", None, json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&old.run_id) && err.contains("another host"),
        "{err}"
    );
    // The new holder writes on, right after the old entries.
    assert_eq!(
        b.append(&new, "step", Some("staging"), json!({"n": 2}))
            .await
            .unwrap(),
        2
    );
    // Each entry carries the lease it was written under.
    let log = b.events(&old.run_id, 0).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [old.epoch, new.epoch]
    );
    let run = b.run(&old.run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.reason, None);
}

pub async fn heartbeats_keep_runs_and_a_release_hands_them_over_at_once(db: &dyn Database) {
    let short = Duration::from_millis(400);
    let a = host(db, "a", short).await;
    let b = host(db, "b", short).await;
    let one = claimed(&*a, "api").await;
    let two = claimed(&*a, "api").await;
    for _ in 0..4 {
        tokio::time::sleep(short / 3).await;
        let mut held = a.heartbeat().await.unwrap();
        held.sort_by(|x, y| x.run_id.cmp(&y.run_id));
        let mut want = vec![one.clone(), two.clone()];
        want.sort_by(|x, y| x.run_id.cmp(&y.run_id));
        assert_eq!(held, want);
        assert!(b.claim(None, 10).await.unwrap().is_empty());
    }
    a.release(&one).await.unwrap();
    let taken = b.claim(None, 10).await.unwrap();
    assert_eq!(
        taken.iter().map(|l| l.run_id.as_str()).collect::<Vec<_>>(),
        [one.run_id.as_str()]
    );
    assert_eq!(a.heartbeat().await.unwrap(), [two]);
}

pub async fn concurrent_claims_never_give_a_run_to_two_hosts(db: &dyn Database) {
    let maker = host(db, "maker", LONG).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(maker.create_run(new_run("api")).await.unwrap());
    }
    let mut tasks = Vec::new();
    for h in 0..4 {
        let store = host(db, &format!("h{h}"), LONG).await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.claim(None, 3).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|l| l.run_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    ids.sort();
    assert_eq!(all, ids, "every run claimed exactly once");
}

pub async fn an_environment_is_held_by_one_run_and_queued_for_in_order(db: &dyn Database) {
    let a = host(db, "a", LONG).await;
    let b = host(db, "b", LONG).await;
    let first = claimed(&*a, "api").await;
    let second = claimed(&*b, "api").await;
    let third = claimed(&*b, "api").await;
    assert_eq!(
        a.lock_environment(&first, "staging", true).await.unwrap(),
        EnvLock::Held
    );
    // Taking it again is a no-op.
    assert_eq!(
        a.lock_environment(&first, "staging", true).await.unwrap(),
        EnvLock::Held
    );
    // Refused without queueing: the holder is named, and nothing waits.
    let busy = EnvLock::Busy {
        holder: first.run_id.clone(),
        holding: true,
    };
    assert_eq!(
        b.lock_environment(&third, "staging", false).await.unwrap(),
        busy
    );
    // Queued: the second run, then the third.
    assert_eq!(
        b.lock_environment(&second, "staging", true).await.unwrap(),
        busy
    );
    assert_eq!(
        b.lock_environment(&third, "staging", true).await.unwrap(),
        busy
    );
    // Other environments are independent.
    assert_eq!(
        b.lock_environment(&third, "production", true)
            .await
            .unwrap(),
        EnvLock::Held
    );
    assert_eq!(
        a.environment_locks().await.unwrap(),
        [
            ("production".to_string(), third.run_id.clone()),
            ("staging".to_string(), first.run_id.clone())
        ]
    );
    a.unlock_environment(&first, "staging").await.unwrap();
    // First in line takes it; the third still waits, behind it.
    assert_eq!(
        b.lock_environment(&third, "staging", true).await.unwrap(),
        EnvLock::Busy {
            holder: second.run_id.clone(),
            holding: false,
        }
    );
    assert_eq!(
        b.lock_environment(&second, "staging", true).await.unwrap(),
        EnvLock::Held
    );
    b.unlock_environment(&second, "staging").await.unwrap();
    // Unlocking what one does not hold changes nothing.
    a.unlock_environment(&first, "staging").await.unwrap();
    assert_eq!(
        b.lock_environment(&third, "staging", true).await.unwrap(),
        EnvLock::Held
    );
}

pub async fn a_finished_run_frees_its_environments_and_its_lease(db: &dyn Database) {
    let a = host(db, "a", LONG).await;
    let b = host(db, "b", LONG).await;
    let holder = claimed(&*a, "api").await;
    let waiter = claimed(&*a, "api").await;
    let next = claimed(&*b, "api").await;
    a.lock_environment(&holder, "staging", true).await.unwrap();
    // `waiter` is first in line, then `next`.
    a.lock_environment(&waiter, "staging", true).await.unwrap();
    b.lock_environment(&next, "staging", true).await.unwrap();
    // The holder finishes: the line moves up. The waiter finishes without
    // taking its turn: it leaves the line.
    let mut woken = b.wakeups();
    a.set_status(&holder, RunStatus::Succeeded, None, None)
        .await
        .unwrap();
    a.set_status(&waiter, RunStatus::Failed, None, Some("aborted by bob"))
        .await
        .unwrap();
    assert_eq!(
        b.lock_environment(&next, "staging", true).await.unwrap(),
        EnvLock::Held
    );
    // Runs that finished are nobody's: no host holds or may claim them.
    assert!(a.holder(&holder.run_id).await.unwrap().is_none());
    assert!(b.claim(Some(&holder.run_id), 1).await.unwrap().is_empty());
    assert_eq!(a.heartbeat().await.unwrap(), []);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, woken.recv()).await {
            Ok(Ok(Wake::Runnable)) => break,
            Ok(_) => continue,
            Err(_) => panic!("a finished run woke no host"),
        }
    }
}

pub async fn unfinished_runs_are_counted_for_admission(db: &dyn Database) {
    let a = host(db, "a", LONG).await;
    let one = claimed(&*a, "api").await;
    a.create_run(new_run("api")).await.unwrap();
    a.create_run(new_run("web")).await.unwrap();
    let count = a.unfinished_count("api").await.unwrap();
    assert_eq!((count.all, count.of_pipeline), (3, 2));
    a.set_status(&one, RunStatus::Succeeded, None, None)
        .await
        .unwrap();
    let count = a.unfinished_count("web").await.unwrap();
    assert_eq!((count.all, count.of_pipeline), (2, 1));
    assert_eq!(a.unfinished_count("none").await.unwrap().of_pipeline, 0);
}
