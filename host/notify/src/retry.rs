//! The tries of one delivery: until it is sent, fails for good, or its
//! tries run out, with exponential backoff between them.

use std::time::Duration;

use rollcage_core::{Event, Notifier, PluginError};
use rollcage_store::DeliveryOutcome;
use tokio::sync::Semaphore;

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

/// Whether an error may pass on a later try.
fn transient(e: &PluginError) -> bool {
    matches!(e, PluginError::Failed { .. } | PluginError::Timeout { .. })
}

/// Deliver `event` to `notifier` under `policy`. Each try holds one of
/// `permits` (the notifier's tries in flight); a backoff wait holds none.
pub(crate) async fn deliver(
    notifier: &dyn Notifier,
    event: &Event,
    policy: RetryPolicy,
    permits: &Semaphore,
) -> DeliveryOutcome {
    let id = notifier.id();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tried = {
            // The semaphore is never closed.
            let _permit = permits.acquire().await.ok();
            notifier.notify(event).await
        };
        match tried {
            Ok(()) => {
                return DeliveryOutcome {
                    attempts: attempt,
                    error: None,
                };
            }
            Err(e) if transient(&e) && attempt < policy.attempts => {
                let wait = policy.delay(attempt);
                tracing::warn!(plugin = %id, run_id = %event.run_id, attempt, retry_in_ms = wait.as_millis() as u64, "notification failed: {e}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::error!(plugin = %id, run_id = %event.run_id, attempt, "notification given up: {e}");
                return DeliveryOutcome {
                    attempts: attempt,
                    error: Some(e.to_string()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=7).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }
}
