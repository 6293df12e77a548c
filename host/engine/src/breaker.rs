//! Circuit breakers, one per plugin instance: after `failures` failed calls
//! in a row the breaker opens, and for `cool_down` calls fail fast with an
//! error that says so, instead of waiting on a plugin (or the service behind
//! it) that is down. After the cool-down one call goes through: a success
//! closes the breaker, a failure opens it again.
//!
//! [`guard_check`], [`guard_notifier`], [`guard_provider`],
//! [`guard_strategy`] and [`guard_exposure`] wrap a plugin so that every
//! call passes its breaker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rollcage_core::*;
use tokio::time::Instant;

use crate::stats::CallStats;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failed calls in a row that open the breaker (default 5).
    pub failures: u32,
    /// How long it stays open (default 30 s).
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// What a breaker is doing, for events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast for this much longer.
    Open { remaining: Duration },
    /// The cool-down is over: the next call decides.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Inner {
    failures_in_a_row: u32,
    open_until: Option<Instant>,
}

/// One plugin instance's breaker.
#[derive(Debug)]
pub struct Breaker {
    plugin: PluginId,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    stats: CallStats,
}

impl Breaker {
    pub fn new(plugin: PluginId, config: BreakerConfig) -> Arc<Breaker> {
        // A breaker that could never open would hide a broken plugin.
        let config = BreakerConfig {
            failures: config.failures.max(1),
            ..config
        };
        Arc::new(Breaker {
            plugin,
            config,
            inner: Mutex::default(),
            stats: CallStats::default(),
        })
    }

    /// The plugin instance it guards.
    pub fn plugin(&self) -> &PluginId {
        &self.plugin
    }

    /// Calls made through it, by kind.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let inner = self.inner.lock().unwrap();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    BreakerState::Open {
                        remaining: until - now,
                    }
                } else {
                    BreakerState::HalfOpen
                }
            }
        }
    }

    /// `Err` when the breaker is open: the call must not be made.
    pub fn admit(&self) -> Result<(), PluginError> {
        match self.state() {
            BreakerState::Open { remaining } => Err(PluginError::Host {
                plugin: self.plugin.clone(),
                message: format!(
                    "circuit open after {} failed calls in a row; calls fail fast for {} s more",
                    self.config.failures,
                    remaining.as_secs().max(1)
                ),
            }),
            BreakerState::Closed | BreakerState::HalfOpen => Ok(()),
        }
    }

    /// Count a call's result.
    pub fn record<T>(&self, result: &Result<T, PluginError>) {
        let mut inner = self.inner.lock().unwrap();
        match result {
            Ok(_) => *inner = Inner::default(),
            Err(_) => {
                inner.failures_in_a_row += 1;
                let half_open = inner.open_until.is_some();
                if half_open || inner.failures_in_a_row >= self.config.failures {
                    inner.open_until = Some(Instant::now() + self.config.cool_down);
                    tracing::warn!(plugin = %self.plugin, failures = inner.failures_in_a_row, "circuit breaker open");
                }
            }
        }
    }

    async fn call<T>(
        &self,
        name: &'static str,
        f: impl Future<Output = Result<T, PluginError>>,
    ) -> Result<T, PluginError> {
        if let Err(e) = self.admit() {
            self.stats.rejected(name);
            return Err(e);
        }
        let started = std::time::Instant::now();
        let result = f.await;
        self.stats.record(name, started.elapsed(), result.is_err());
        self.record(&result);
        result
    }
}

/// A plugin behind its breaker.
pub struct Guarded<P: ?Sized> {
    inner: Arc<P>,
    breaker: Arc<Breaker>,
}

impl<P: ?Sized + Plugin> Plugin for Guarded<P> {
    fn id(&self) -> &PluginId {
        self.inner.id()
    }
}

fn guard<P: ?Sized + Plugin>(inner: Arc<P>, breaker: &Arc<Breaker>) -> Guarded<P> {
    Guarded {
        inner,
        breaker: breaker.clone(),
    }
}

/// `check` behind `breaker`. One breaker per plugin instance: every
/// environment using the instance shares it.
pub fn guard_check(inner: Arc<dyn HealthCheck>, breaker: &Arc<Breaker>) -> Arc<dyn HealthCheck> {
    Arc::new(guard(inner, breaker))
}

/// `notifier` behind `breaker`.
pub fn guard_notifier(inner: Arc<dyn Notifier>, breaker: &Arc<Breaker>) -> Arc<dyn Notifier> {
    Arc::new(guard(inner, breaker))
}

/// `provider` behind `breaker`.
pub fn guard_provider(
    inner: Arc<dyn EnvironmentProvider>,
    breaker: &Arc<Breaker>,
) -> Arc<dyn EnvironmentProvider> {
    Arc::new(guard(inner, breaker))
}

/// `strategy` behind `breaker`.
pub fn guard_strategy(inner: Arc<dyn Strategy>, breaker: &Arc<Breaker>) -> Arc<dyn Strategy> {
    Arc::new(guard(inner, breaker))
}

/// `control` behind `breaker`.
pub fn guard_exposure(
    inner: Arc<dyn ExposureControl>,
    breaker: &Arc<Breaker>,
) -> Arc<dyn ExposureControl> {
    Arc::new(guard(inner, breaker))
}

#[async_trait]
impl ExposureControl for Guarded<dyn ExposureControl> {
    async fn validate(&self, params: &str) -> Result<Vec<Problem>, PluginError> {
        self.breaker
            .call("validate", self.inner.validate(params))
            .await
    }
    async fn set_exposure(
        &self,
        flag: &str,
        environment: &str,
        percent: u32,
    ) -> Result<(), PluginError> {
        self.breaker
            .call(
                "set-exposure",
                self.inner.set_exposure(flag, environment, percent),
            )
            .await
    }
    async fn get_exposure(
        &self,
        flag: &str,
        environment: &str,
    ) -> Result<ExposureStatus, PluginError> {
        self.breaker
            .call("get-exposure", self.inner.get_exposure(flag, environment))
            .await
    }
}

#[async_trait]
impl HealthCheck for Guarded<dyn HealthCheck> {
    async fn check(&self, target: &CheckTarget) -> Result<Measurement, PluginError> {
        self.breaker.call("check", self.inner.check(target)).await
    }
    fn threshold(&self) -> Option<rollcage_core::Threshold> {
        self.inner.threshold()
    }
}

#[async_trait]
impl Notifier for Guarded<dyn Notifier> {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        self.breaker.call("notify", self.inner.notify(event)).await
    }
}

#[async_trait]
impl Strategy for Guarded<dyn Strategy> {
    async fn validate(&self, params: &str) -> Result<(), PluginError> {
        self.breaker
            .call("validate", self.inner.validate(params))
            .await
    }
    async fn decide(&self, state: &DeployState) -> Result<Action, PluginError> {
        self.breaker.call("decide", self.inner.decide(state)).await
    }
    async fn rollback(&self, state: &DeployState) -> Result<Vec<Action>, PluginError> {
        self.breaker
            .call("rollback", self.inner.rollback(state))
            .await
    }
}

#[async_trait]
impl EnvironmentProvider for Guarded<dyn EnvironmentProvider> {
    async fn validate(&self, service_spec: &str) -> Result<Vec<Problem>, PluginError> {
        self.breaker
            .call("validate", self.inner.validate(service_spec))
            .await
    }
    async fn prepare(&self, target: &Target) -> Result<(), PluginError> {
        self.breaker
            .call("prepare", self.inner.prepare(target))
            .await
    }
    async fn apply_slot(&self, target: &Target, spec: &SlotSpec) -> Result<(), PluginError> {
        self.breaker
            .call("apply-slot", self.inner.apply_slot(target, spec))
            .await
    }
    async fn route(&self, target: &Target, weights: &[RouteWeight]) -> Result<(), PluginError> {
        self.breaker
            .call("route", self.inner.route(target, weights))
            .await
    }
    async fn status(&self, target: &Target) -> Result<EnvironmentStatus, PluginError> {
        self.breaker.call("status", self.inner.status(target)).await
    }
    async fn remove_slot(&self, target: &Target, slot: &str) -> Result<(), PluginError> {
        self.breaker
            .call("remove-slot", self.inner.remove_slot(target, slot))
            .await
    }
    async fn run_job(&self, target: &Target, job: &Job) -> Result<JobResult, PluginError> {
        self.breaker
            .call("run-job", self.inner.run_job(target, job))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::scripted;

    #[tokio::test(start_paused = true)]
    async fn a_breaker_opens_fails_fast_and_closes_after_a_success() {
        // Fails three times, then passes.
        let check = scripted(
            "error-rate",
            vec![Err(()), Err(()), Err(()), Ok(Verdict::Pass)],
        );
        let config = BreakerConfig {
            failures: 2,
            cool_down: Duration::from_secs(30),
        };
        let breaker = Breaker::new(check.id().clone(), config);
        let guarded = guard_check(check.clone(), &breaker);
        let t = CheckTarget::default();
        assert!(guarded.check(&t).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(guarded.check(&t).await.is_err());
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                remaining: Duration::from_secs(30)
            }
        );
        // Open: the plugin is not called.
        let err = guarded.check(&t).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin `error-rate` could not be run: circuit open after 2 failed calls in a row; calls fail fast for 30 s more"
        );
        assert_eq!(check.calls.lock().unwrap().len(), 2);
        // After the cool-down one call goes through; it fails, so it opens again.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(guarded.check(&t).await.is_err());
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        // The next half-open call succeeds and closes it.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(guarded.check(&t).await.is_ok());
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(check.calls.lock().unwrap().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flag_service_that_is_down_fails_fast_too() {
        let control = Arc::new(crate::fakes::FakeExposure::with(
            "flags",
            &[("checkout", 0)],
        ));
        control
            .fail_sets
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let config = BreakerConfig {
            failures: 2,
            cool_down: Duration::from_secs(30),
        };
        let breaker = Breaker::new(control.id().clone(), config);
        let guarded = guard_exposure(control.clone(), &breaker);
        for _ in 0..2 {
            let err = guarded.set_exposure("checkout", "prod", 10).await;
            assert!(err.unwrap_err().to_string().contains("unreachable"));
        }
        let err = guarded.set_exposure("checkout", "prod", 10).await;
        assert!(err.unwrap_err().to_string().contains("circuit open"));
        // Reading the flag back is a call of the same instance: it fails
        // fast as well until the cool-down is over.
        assert!(guarded.get_exposure("checkout", "prod").await.is_err());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            guarded
                .get_exposure("checkout", "prod")
                .await
                .unwrap()
                .percent,
            0
        );
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
