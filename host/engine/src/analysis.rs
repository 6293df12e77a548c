//! Analysis: repeated health-check measurements judged with Argo Rollouts'
//! AnalysisRun semantics.
//!
//! Each check is measured `count` times, `interval` apart, after
//! `initial_delay`. A check fails once its failed measurements exceed
//! `failure_limit` (default 0: the first failure fails), is inconclusive once
//! its inconclusive ones exceed `inconclusive_limit` (default 0), and errs
//! once more than `consecutive_error_limit` (default 4) measurements in a row
//! could not be taken; an error is retried after `error_retry`, and it is not
//! a failure. The analysis ends as soon as its outcome is known; its outcome
//! is the worst of its checks: failed, then error, then inconclusive, then
//! passed. Every measurement is kept, for the run's record.

use std::sync::Arc;
use std::time::Duration;

use rollcage_core::{CheckTarget, HealthCheck, Measurement, PluginId, Verdict};

/// The knobs of one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisSpec {
    /// Time between measurements of one check.
    pub interval: Duration,
    /// Measurements per check.
    pub count: u32,
    /// Wait before the first measurement.
    pub initial_delay: Duration,
    /// Failed measurements tolerated per check.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated per check.
    pub inconclusive_limit: u32,
    /// Errors in a row tolerated per check.
    pub consecutive_error_limit: u32,
    /// Wait before retrying a measurement that erred.
    pub error_retry: Duration,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval: Duration::from_secs(10),
            count: 1,
            initial_delay: Duration::ZERO,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
            error_retry: Duration::from_secs(10),
        }
    }
}

/// How an analysis ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed.
    Passed,
    /// A check failed more than its limit allows; the reason names it.
    Failed(String),
    /// A check could not be measured too many times in a row.
    Error(String),
    /// A check was inconclusive more than allowed: a person decides.
    Inconclusive(String),
}

/// One measurement taken, or the error in its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// The check's id.
    pub check: PluginId,
    /// The measurement, or why none could be taken.
    pub result: Result<Measurement, String>,
    /// What the check held the value against, when its configuration
    /// says (`pass_if`).
    pub threshold: Option<rollcage_core::Threshold>,
}

/// The outcome and everything measured on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    pub measurements: Vec<Taken>,
}

/// Run `checks` against `target` as `spec` says.
pub async fn run(
    checks: &[Arc<dyn HealthCheck>],
    target: &CheckTarget,
    spec: &AnalysisSpec,
) -> Report {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, check) in checks.iter().enumerate() {
        let (check, target, spec) = (check.clone(), target.clone(), *spec);
        tasks.spawn(async move { (i, run_one(check, &target, &spec).await) });
    }
    let mut results: Vec<(usize, (Outcome, Vec<Taken>))> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(r) = joined {
            results.push(r);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let mut measurements = Vec::new();
    let mut outcome = Outcome::Passed;
    for (_, (o, taken)) in results {
        measurements.extend(taken);
        if rank(&o) > rank(&outcome) {
            outcome = o;
        }
    }
    Report {
        outcome,
        measurements,
    }
}

fn rank(o: &Outcome) -> u8 {
    match o {
        Outcome::Passed => 0,
        Outcome::Inconclusive(_) => 1,
        Outcome::Error(_) => 2,
        Outcome::Failed(_) => 3,
    }
}

async fn run_one(
    check: Arc<dyn HealthCheck>,
    target: &CheckTarget,
    spec: &AnalysisSpec,
) -> (Outcome, Vec<Taken>) {
    let id = check.id().clone();
    let threshold = check.threshold();
    let mut taken = Vec::new();
    let (mut failed, mut inconclusive, mut errors_in_a_row) = (0u32, 0u32, 0u32);
    let mut measured = 0u32;
    tokio::time::sleep(spec.initial_delay).await;
    while measured < spec.count {
        match check.check(target).await {
            Ok(m) => {
                errors_in_a_row = 0;
                measured += 1;
                let verdict = m.verdict;
                let detail = m.detail.clone();
                taken.push(Taken {
                    check: id.clone(),
                    result: Ok(m),
                    threshold,
                });
                match verdict {
                    Verdict::Pass => {}
                    Verdict::Fail => {
                        failed += 1;
                        if failed > spec.failure_limit {
                            let why = format!(
                                "check `{id}` failed {failed} time(s), over its limit of {}: {detail}",
                                spec.failure_limit
                            );
                            return (Outcome::Failed(why), taken);
                        }
                    }
                    Verdict::Inconclusive => {
                        inconclusive += 1;
                        if inconclusive > spec.inconclusive_limit {
                            let why = format!(
                                "check `{id}` was inconclusive {inconclusive} time(s), over its limit of {}: {detail}",
                                spec.inconclusive_limit
                            );
                            return (Outcome::Inconclusive(why), taken);
                        }
                    }
                }
                if measured < spec.count {
                    tokio::time::sleep(spec.interval).await;
                }
            }
            Err(e) => {
                errors_in_a_row += 1;
                let message = e.to_string();
                taken.push(Taken {
                    check: id.clone(),
                    result: Err(message.clone()),
                    threshold,
                });
                if errors_in_a_row > spec.consecutive_error_limit {
                    let why = format!(
                        "check `{id}` could not be measured {errors_in_a_row} times in a row: {message}"
                    );
                    return (Outcome::Error(why), taken);
                }
                tokio::time::sleep(spec.error_retry).await;
            }
        }
    }
    (Outcome::Passed, taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::scripted;

    fn spec(count: u32) -> AnalysisSpec {
        AnalysisSpec {
            count,
            ..AnalysisSpec::default()
        }
    }

    use Verdict::{Fail, Inconclusive as Inc, Pass};

    #[tokio::test(start_paused = true)]
    async fn all_passing_measurements_pass_at_the_interval() {
        let c = scripted("error-rate", vec![Ok(Pass)]);
        let started = tokio::time::Instant::now();
        let checks: [Arc<dyn HealthCheck>; 1] = [c.clone()];
        let r = run(&checks, &CheckTarget::default(), &spec(3)).await;
        assert_eq!(r.outcome, Outcome::Passed);
        assert_eq!(r.measurements.len(), 3);
        let offsets: Vec<u64> = c
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - started).as_secs())
            .collect();
        assert_eq!(offsets, [0, 10, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_failure_fails_by_default_and_ends_the_analysis() {
        let c = scripted("error-rate", vec![Ok(Pass), Ok(Fail), Ok(Pass)]);
        let r = run(&[c], &CheckTarget::default(), &spec(5)).await;
        assert_eq!(
            r.outcome,
            Outcome::Failed(
                "check `error-rate` failed 1 time(s), over its limit of 0: Fail".into()
            )
        );
        assert_eq!(r.measurements.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_limit_tolerates_that_many_failures() {
        let c = scripted("error-rate", vec![Ok(Fail), Ok(Pass), Ok(Fail), Ok(Pass)]);
        let s = AnalysisSpec {
            failure_limit: 2,
            ..spec(4)
        };
        assert_eq!(
            run(&[c], &CheckTarget::default(), &s).await.outcome,
            Outcome::Passed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn inconclusive_is_not_a_pass() {
        let c = scripted("latency", vec![Ok(Inc)]);
        let r = run(&[c], &CheckTarget::default(), &spec(2)).await;
        assert!(matches!(r.outcome, Outcome::Inconclusive(_)), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_retried_and_are_not_failures() {
        // Four errors in a row are tolerated (the default limit), then it passes.
        let c = scripted(
            "error-rate",
            vec![Err(()), Err(()), Err(()), Err(()), Ok(Pass)],
        );
        let started = tokio::time::Instant::now();
        let r = run(&[c], &CheckTarget::default(), &spec(1)).await;
        assert_eq!(r.outcome, Outcome::Passed);
        assert_eq!(r.measurements.len(), 5);
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        // A fifth error in a row ends it as an error.
        let c = scripted("error-rate", vec![Err(())]);
        let r = run(&[c], &CheckTarget::default(), &spec(1)).await;
        assert_eq!(
            r.outcome,
            Outcome::Error(
                "check `error-rate` could not be measured 5 times in a row: plugin `error-rate` failed: prometheus unreachable".into()
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_worst_check_decides_and_initial_delay_is_honoured() {
        let good = scripted("healthz", vec![Ok(Pass)]);
        let unsure = scripted("latency", vec![Ok(Inc)]);
        let bad = scripted("error-rate", vec![Ok(Pass), Ok(Fail)]);
        let s = AnalysisSpec {
            initial_delay: Duration::from_secs(30),
            ..spec(2)
        };
        let started = tokio::time::Instant::now();
        let r = run(&[good.clone(), unsure, bad], &CheckTarget::default(), &s).await;
        assert!(
            matches!(r.outcome, Outcome::Failed(ref why) if why.contains("`error-rate`")),
            "{r:?}"
        );
        assert_eq!((good.calls.lock().unwrap()[0] - started).as_secs(), 30);
    }
}
