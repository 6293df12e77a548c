use std::collections::HashMap;

use async_trait::async_trait;
use rollcage_core::{EventKind, Plugin, PluginError, Release};
use rollcage_store::{HostIdentity, NewRun, SqliteStore};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;

/// A call a notifier got.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    run: String,
    message: String,
}

/// A notifier that remembers its calls, fails the ones it is told to, and
/// (given a gate) lets a call through only for a permit of the gate.
struct Fake {
    id: PluginId,
    gate: Option<Arc<Semaphore>>,
    /// Per event message, how many calls fail with `error` before one
    /// succeeds.
    failures: Mutex<HashMap<String, u32>>,
    error: fn(PluginId) -> PluginError,
    calls: Mutex<Vec<Call>>,
}

impl Plugin for Fake {
    fn id(&self) -> &PluginId {
        &self.id
    }
}

#[async_trait]
impl Notifier for Fake {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            run: event.run_id.clone(),
            message: event.message.clone(),
        });
        let mut failures = self.failures.lock().unwrap();
        match failures.get_mut(&event.message) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err((self.error)(self.id.clone()))
            }
            _ => Ok(()),
        }
    }
}

impl Fake {
    fn new(id: &str) -> Fake {
        Fake {
            id: id.parse().unwrap(),
            gate: None,
            failures: Mutex::default(),
            error: failed,
            calls: Mutex::default(),
        }
    }

    /// Calls wait for permits of a gate, closed to begin with.
    fn gated(mut self) -> (Arc<Fake>, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        self.gate = Some(gate.clone());
        (Arc::new(self), gate)
    }

    fn failing(self, message: &str, times: u32, error: fn(PluginId) -> PluginError) -> Fake {
        self.failures
            .lock()
            .unwrap()
            .insert(message.to_string(), times);
        Fake { error, ..self }
    }

    fn messages(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.message.clone())
            .collect()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn failed(plugin: PluginId) -> PluginError {
    PluginError::Failed {
        plugin,
        message: "Slack answered 503".into(),
    }
}

fn denied(plugin: PluginId) -> PluginError {
    PluginError::Denied {
        plugin,
        capability: "http".into(),
        detail: "not in allow_hosts".into(),
    }
}

fn event(run: &str, message: &str) -> Event {
    Event {
        kind: EventKind::Step,
        run_id: run.into(),
        pipeline: "api".into(),
        environment: Some("staging".into()),
        release: Release::new("1.0.0"),
        message: message.into(),
        fields: vec![],
        url: None,
        timestamp_ms: 0,
    }
}

async fn new_run(store: &dyn Store) -> String {
    store
        .create_run(NewRun {
            pipeline: "api".into(),
            release: "1.0.0".into(),
            notes: None,
            params: vec![],
            stages: vec!["staging".into()],
            started_by: "alice".into(),
            config_hash: "abc".into(),
        })
        .await
        .unwrap()
}

/// The `notification` entries of a run's log, in order.
async fn notifications(store: &dyn Store, run: &str) -> Vec<Value> {
    store
        .events(run, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "notification")
        .inspect(|e| assert_eq!(e.stage.as_deref(), Some("staging")))
        .map(|e| e.data)
        .collect()
}

fn queue(store: &Arc<dyn Store>, notifiers: &[Arc<Fake>], options: QueueOptions) -> Queue {
    let list = notifiers
        .iter()
        .map(|n| n.clone() as Arc<dyn Notifier>)
        .collect();
    Queue::new(store.clone(), list, options)
}

/// A queue of `notifiers` and a dispatcher to all of them.
fn lanes(
    store: &Arc<dyn Store>,
    notifiers: &[Arc<Fake>],
    options: QueueOptions,
) -> (Queue, Dispatcher) {
    let q = queue(store, notifiers, options);
    let ids: Vec<PluginId> = notifiers.iter().map(|n| n.id.clone()).collect();
    let d = q.dispatcher(&ids).unwrap();
    (q, d)
}

/// Until `done` holds; a delivery in the background gets there within a
/// few turns of the scheduler (and of the store's writer thread).
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(start_paused = true)]
async fn sending_returns_while_a_slow_notifier_still_holds_the_delivery() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let run = new_run(&*store).await;
    let (slack, gate) = Fake::new("slack").gated();
    let console = Arc::new(Fake::new("console"));
    let all = [slack.clone(), console.clone()];
    let (q, d) = lanes(&store, &all, QueueOptions::default());
    let started = Instant::now();
    d.send(&event(&run, "one")).await.unwrap();
    d.send(&event(&run, "two")).await.unwrap();
    // The run is over while slack has not answered its first call.
    let lease = store.claim(Some(&run), 1).await.unwrap().remove(0);
    store
        .set_status(&lease, rollcage_store::RunStatus::Succeeded, None, None)
        .await
        .unwrap();
    eventually("console has both", || console.messages().len() == 2).await;
    eventually("console's are recorded", || q.pending() == 2).await;
    assert!(slack.messages().is_empty());
    assert_eq!(q.pending_by_notifier(), [(slack.id.clone(), 2)]);
    assert_eq!(store.queued_deliveries().await.unwrap().len(), 2);
    // Nothing waited on slack: no timer ran.
    assert!(started.elapsed() < Duration::from_secs(1));
    gate.add_permits(2);
    q.idle().await;
    assert_eq!(slack.messages(), ["one", "two"]);
    let log = notifications(&*store, &run).await;
    assert_eq!(log.len(), 4);
    assert_eq!(
        log[2..],
        [
            json!({"notifier": "slack", "attempts": 1, "error": null}),
            json!({"notifier": "slack", "attempts": 1, "error": null}),
        ]
    );
    assert!(store.queued_deliveries().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_runs_events_reach_a_notifier_in_order_while_other_runs_go_on() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let (a, b) = (new_run(&*store).await, new_run(&*store).await);
    let (slack, gate) = Fake::new("slack").failing("a1", 2, failed).gated();
    let (q, d) = lanes(
        &store,
        std::slice::from_ref(&slack),
        QueueOptions::default(),
    );
    for (run, message) in [(&a, "a1"), (&a, "a2"), (&a, "a3"), (&b, "b1")] {
        d.send(&event(run, message)).await.unwrap();
    }
    // Everything queued before the first call goes through.
    gate.add_permits(100);
    q.idle().await;
    let calls = slack.calls();
    let of = |run: &str| -> Vec<Call> { calls.iter().filter(|c| c.run == run).cloned().collect() };
    let (on_a, on_b) = (of(&a), of(&b));
    let messages: Vec<&str> = on_a.iter().map(|c| c.message.as_str()).collect();
    assert_eq!(messages, ["a1", "a1", "a1", "a2", "a3"]);
    // a2 waited for a1's retries (1 s, then 2 s of backoff)...
    assert_eq!(on_a[1].at - on_a[0].at, Duration::from_secs(1));
    assert_eq!(on_a[2].at - on_a[1].at, Duration::from_secs(2));
    assert!(on_a[3].at >= on_a[2].at);
    // ...run b did not.
    assert_eq!(on_b.len(), 1);
    assert!(on_b[0].at < on_a[1].at);
    let log = notifications(&*store, &a).await;
    let attempts: Vec<&Value> = log.iter().map(|e| &e["attempts"]).collect();
    assert_eq!(attempts, [&json!(3), &json!(1), &json!(1)]);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let run = new_run(&*store).await;
    let slack = Arc::new(Fake::new("slack").failing("done", 2, failed));
    let console = Arc::new(Fake::new("console"));
    let all = [slack.clone(), console.clone()];
    let (q, d) = lanes(&store, &all, QueueOptions::default());
    d.send(&event(&run, "done")).await.unwrap();
    q.idle().await;
    let at: Vec<Instant> = slack.calls().iter().map(|c| c.at).collect();
    assert_eq!(at.len(), 3);
    assert_eq!(
        [at[1] - at[0], at[2] - at[1]],
        [Duration::from_secs(1), Duration::from_secs(2)]
    );
    let mut log = notifications(&*store, &run).await;
    log.sort_by_key(|e| e["notifier"].to_string());
    assert_eq!(
        log,
        [
            json!({"notifier": "console", "attempts": 1, "error": null}),
            json!({"notifier": "slack", "attempts": 3, "error": null}),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_notifier_that_keeps_failing_is_given_up_and_that_is_recorded() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let run = new_run(&*store).await;
    let jira = Arc::new(Fake::new("jira").failing("done", u32::MAX, failed));
    let options = QueueOptions {
        retry: RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        },
        ..QueueOptions::default()
    };
    let (q, d) = lanes(&store, std::slice::from_ref(&jira), options);
    d.send(&event(&run, "done")).await.unwrap();
    q.idle().await;
    assert_eq!(jira.calls().len(), 3);
    assert_eq!(
        notifications(&*store, &run).await,
        [
            json!({"notifier": "jira", "attempts": 3, "error": "plugin `jira` failed: Slack answered 503"})
        ]
    );
    assert!(store.queued_deliveries().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_denied_capability_is_not_retried() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let run = new_run(&*store).await;
    let webhook = Arc::new(Fake::new("webhook").failing("done", u32::MAX, denied));
    let (q, d) = lanes(
        &store,
        std::slice::from_ref(&webhook),
        QueueOptions::default(),
    );
    d.send(&event(&run, "done")).await.unwrap();
    q.idle().await;
    assert_eq!(webhook.calls().len(), 1);
    let log = notifications(&*store, &run).await;
    assert_eq!(log[0]["attempts"], json!(1));
    assert!(log[0]["error"].as_str().unwrap().contains("denied"));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_new_deliveries_and_records_the_refusal() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let (r1, r2) = (new_run(&*store).await, new_run(&*store).await);
    let (slack, gate) = Fake::new("slack").gated();
    let options = QueueOptions {
        capacity: 2,
        ..QueueOptions::default()
    };
    let (q, d) = lanes(&store, std::slice::from_ref(&slack), options);
    // The bound is the notifier's, over every run.
    d.send(&event(&r1, "one")).await.unwrap();
    d.send(&event(&r2, "two")).await.unwrap();
    d.send(&event(&r1, "three")).await.unwrap();
    assert_eq!(q.pending(), 2);
    assert_eq!(store.queued_deliveries().await.unwrap().len(), 2);
    assert_eq!(
        notifications(&*store, &r1).await,
        [
            json!({"notifier": "slack", "attempts": 0, "error": "refused: 2 notifications already pending for `slack`"})
        ]
    );
    gate.add_permits(100);
    q.idle().await;
    let mut got = slack.messages();
    got.sort();
    assert_eq!(got, ["one", "two"]);
    assert_eq!(notifications(&*store, &r1).await.len(), 2);
    // Room again once they ended.
    d.send(&event(&r1, "four")).await.unwrap();
    q.idle().await;
    assert!(slack.messages().contains(&"four".to_string()));
}

// In real time: with the clock paused, tokio would move it on to the
// deadline while the store's writer thread records the delivery.
#[tokio::test]
async fn settle_waits_a_bounded_time_and_says_how_many_are_left() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let run = new_run(&*store).await;
    let (slack, gate) = Fake::new("slack").gated();
    let (q, d) = lanes(
        &store,
        std::slice::from_ref(&slack),
        QueueOptions::default(),
    );
    d.send(&event(&run, "one")).await.unwrap();
    let started = Instant::now();
    assert_eq!(q.settle(Duration::from_millis(100)).await, 1);
    assert!(started.elapsed() >= Duration::from_millis(100));
    gate.add_permits(1);
    let started = Instant::now();
    assert_eq!(q.settle(Duration::from_secs(30)).await, 0);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(notifications(&*store, &run).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn what_a_stopped_host_left_queued_is_delivered_by_the_next_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcage.db");
    // The first host's hold on its deliveries lasts as long as its lease.
    let lease = Duration::from_millis(200);
    let run = {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_as(&path, HostIdentity::this_process(lease)).unwrap());
        let run = new_run(&*store).await;
        // Slack never answers; jira will not be configured next time.
        let (slack, _gate) = Fake::new("slack").gated();
        let (jira, _jira_gate) = Fake::new("jira").gated();
        let all = [slack.clone(), jira.clone()];
        let (q, d) = lanes(&store, &all, QueueOptions::default());
        for message in ["one", "two", "three"] {
            d.send(&event(&run, message)).await.unwrap();
        }
        assert_eq!(q.pending(), 6);
        run
        // The host stops: queue, dispatcher and store are dropped.
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    assert_eq!(store.queued_deliveries().await.unwrap().len(), 6);
    let slack = Arc::new(Fake::new("slack"));
    let q = queue(
        &store,
        std::slice::from_ref(&slack),
        QueueOptions::default(),
    );
    // Held while the first host's lease lasts; its (wall-clock) end frees
    // them.
    assert_eq!(q.resume().await.unwrap(), 0);
    std::thread::sleep(lease * 2);
    assert_eq!(q.resume().await.unwrap(), 3);
    // Taken up once only.
    assert_eq!(q.resume().await.unwrap(), 0);
    q.idle().await;
    assert_eq!(slack.messages(), ["one", "two", "three"]);
    let log = notifications(&*store, &run).await;
    let slack_entries = log.iter().filter(|e| e["notifier"] == "slack");
    assert!(slack_entries.clone().all(|e| e["attempts"] == 1));
    assert_eq!(slack_entries.count(), 3);
    let jira: Vec<&Value> = log.iter().filter(|e| e["notifier"] == "jira").collect();
    assert_eq!(jira.len(), 3);
    assert_eq!(
        jira[0],
        &json!({"notifier": "jira", "attempts": 0, "error": "notifier `jira` is no longer configured"})
    );
    assert!(store.queued_deliveries().await.unwrap().is_empty());
}

#[test]
fn a_dispatcher_names_only_notifiers_the_queue_has() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let q = queue(
        &store,
        &[Arc::new(Fake::new("slack"))],
        QueueOptions::default(),
    );
    let err = q.dispatcher(&["jira".parse().unwrap()]).err().unwrap();
    assert_eq!(
        err.to_string(),
        "notifier `jira` has no lane in the notification queue"
    );
}
