//! Delivery of deployment events to notifiers.
//!
//! Every notifier gets every event, concurrently. A failure that may pass (the
//! plugin's own error, such as a refused or rate-limited request, or a time
//! limit) is retried with exponential backoff; a failure that will not pass
//! (a denied capability, rejected parameters, a crash, the memory limit) is
//! not. Nothing here returns an error: a notification never fails a
//! deployment. What happened to each delivery is returned so that the engine
//! can record it.

use std::sync::Arc;
use std::time::Duration;

use rollcage_core::{Event, Notifier, PluginError, PluginId};
use tracing::Instrument;

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (default 5).
    pub attempts: u32,
    /// Wait before the second try; doubled each time (default 1 s).
    pub first_delay: Duration,
    /// Longest wait between tries (default 30 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// What happened to one event at one notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The notifier.
    pub notifier: PluginId,
    /// Tries made.
    pub attempts: u32,
    /// `Ok`, or the last error.
    pub result: Result<(), String>,
}

/// Whether an error may pass on a later try.
fn transient(e: &PluginError) -> bool {
    matches!(e, PluginError::Failed { .. } | PluginError::Timeout { .. })
}

/// Sends events to a set of notifiers.
#[derive(Clone)]
pub struct Dispatcher {
    notifiers: Vec<Arc<dyn Notifier>>,
    policy: RetryPolicy,
}

impl Dispatcher {
    /// A dispatcher for `notifiers`.
    pub fn new(notifiers: Vec<Arc<dyn Notifier>>, policy: RetryPolicy) -> Self {
        Dispatcher { notifiers, policy }
    }

    /// Deliver `event` to every notifier; returns once each has succeeded or
    /// given up, with one [`Delivery`] per notifier, in notifier order.
    pub async fn deliver(&self, event: &Event) -> Vec<Delivery> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, notifier) in self.notifiers.iter().enumerate() {
            let (notifier, event, policy) = (notifier.clone(), event.clone(), self.policy);
            // Each delivery keeps the caller's span (the run's id).
            tasks.spawn(
                async move { (i, deliver_one(notifier, &event, policy).await) }.in_current_span(),
            );
        }
        let mut done: Vec<(usize, Delivery)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(d) => done.push(d),
                Err(e) => tracing::error!(error = %e, "a notification task panicked"),
            }
        }
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, d)| d).collect()
    }
}

async fn deliver_one(notifier: Arc<dyn Notifier>, event: &Event, policy: RetryPolicy) -> Delivery {
    let id = notifier.id().clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match notifier.notify(event).await {
            Ok(()) => {
                return Delivery {
                    notifier: id,
                    attempts: attempt,
                    result: Ok(()),
                };
            }
            Err(e) if transient(&e) && attempt < policy.attempts => {
                let wait = policy.delay(attempt);
                tracing::warn!(plugin = %id, run_id = %event.run_id, attempt, retry_in_ms = wait.as_millis() as u64, "notification failed: {e}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::error!(plugin = %id, run_id = %event.run_id, attempt, "notification given up: {e}");
                return Delivery {
                    notifier: id,
                    attempts: attempt,
                    result: Err(e.to_string()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use rollcage_core::{EventKind, Plugin, Release};

    use super::*;

    /// Fails `failures` times with `error`, then succeeds.
    struct Flaky {
        id: PluginId,
        failures: u32,
        calls: AtomicU32,
        error: fn(PluginId) -> PluginError,
    }

    impl Plugin for Flaky {
        fn id(&self) -> &PluginId {
            &self.id
        }
    }

    #[async_trait]
    impl Notifier for Flaky {
        async fn notify(&self, _event: &Event) -> Result<(), PluginError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err((self.error)(self.id.clone()))
            } else {
                Ok(())
            }
        }
    }

    fn flaky(id: &str, failures: u32, error: fn(PluginId) -> PluginError) -> Arc<Flaky> {
        Arc::new(Flaky {
            id: id.parse().unwrap(),
            failures,
            calls: AtomicU32::new(0),
            error,
        })
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

    fn event() -> Event {
        Event {
            kind: EventKind::Succeeded,
            run_id: "r1".into(),
            pipeline: "api".into(),
            environment: None,
            release: Release::new("1.0.0"),
            message: "done".into(),
            fields: vec![],
            url: None,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=7).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_backoff() {
        let slack = flaky("slack", 2, failed);
        let console = flaky("console", 0, failed);
        let d = Dispatcher::new(vec![slack.clone(), console], RetryPolicy::default());
        let started = tokio::time::Instant::now();
        let deliveries = d.deliver(&event()).await;
        assert_eq!(deliveries[0].attempts, 3);
        assert_eq!(deliveries[0].result, Ok(()));
        assert_eq!(deliveries[1].attempts, 1);
        // 1 s, then 2 s of (virtual) backoff.
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_notifier_that_keeps_failing_is_given_up_without_an_error() {
        let down = flaky("jira", u32::MAX, failed);
        let d = Dispatcher::new(
            vec![down],
            RetryPolicy {
                attempts: 3,
                ..RetryPolicy::default()
            },
        );
        let deliveries = d.deliver(&event()).await;
        assert_eq!(deliveries[0].attempts, 3);
        assert_eq!(
            deliveries[0].result,
            Err("plugin `jira` failed: Slack answered 503".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_denied_capability_is_not_retried() {
        let misconfigured = flaky("webhook", u32::MAX, denied);
        let d = Dispatcher::new(vec![misconfigured.clone()], RetryPolicy::default());
        let deliveries = d.deliver(&event()).await;
        assert_eq!(deliveries[0].attempts, 1);
        assert_eq!(misconfigured.calls.load(Ordering::SeqCst), 1);
    }
}
