//! Bake: the promoted release watched for a while before its stage ends,
//! as Argo Rollouts' background analysis watches a rollout.
//!
//! The bake takes one round of measurements every `interval` (the first
//! one interval after promotion) until `duration` has passed: that is
//! `duration / interval` rounds (at least one). Each check is judged over
//! every round with the environment's analysis limits: it fails once its
//! failed measurements exceed `failure_limit`, and — since nobody is
//! waiting at a promoted release to answer an inconclusive one — the bake
//! also fails once a check's inconclusive measurements exceed
//! `inconclusive_limit` or more than `consecutive_error_limit` measurements
//! in a row could not be taken. A failed bake rolls the stage back to the
//! release live before it.
//!
//! Every round is in the run's log (a `bake-tick` entry beside the usual
//! `analysis` one), so a bake resumed after a crash is judged on every
//! measurement taken before it and takes only the rounds still due, at
//! the times they were due.

use std::time::Duration;

use rollcage_core::Verdict;
use serde::{Deserialize, Serialize};

/// The knobs of a bake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeSpec {
    /// How long the promoted release is watched.
    pub duration: Duration,
    /// Time between rounds of measurements.
    pub interval: Duration,
    /// The checks measured; the environment's analysis checks when empty.
    pub checks: Vec<String>,
    /// Failed measurements tolerated per check.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated per check.
    pub inconclusive_limit: u32,
    /// Measurements in a row that could not be taken, tolerated per check.
    pub consecutive_error_limit: u32,
}

impl BakeSpec {
    /// Rounds of measurements in the whole bake.
    pub fn rounds(&self) -> u32 {
        let interval = self.interval.as_millis().max(1);
        ((self.duration.as_millis() / interval) as u32).max(1)
    }

    /// When round `n` (from 1) is due, after the bake started.
    pub fn due(&self, n: u32) -> Duration {
        self.interval * n
    }
}

/// One check's result in one round, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub check: String,
    /// `None`: the measurement could not be taken.
    pub verdict: Option<Verdict>,
    /// What the check said (or the error), for the reason of a failure.
    #[serde(default)]
    pub detail: String,
}

/// Judge every round taken so far: `Some(reason)` once the bake failed.
pub fn judge(spec: &BakeSpec, rounds: &[Vec<Mark>]) -> Option<String> {
    #[derive(Default)]
    struct Tally {
        failed: u32,
        inconclusive: u32,
        errors_in_a_row: u32,
    }
    let mut tallies: std::collections::BTreeMap<&str, Tally> = Default::default();
    for mark in rounds.iter().flatten() {
        let t = tallies.entry(&mark.check).or_default();
        let check = &mark.check;
        let detail = &mark.detail;
        match mark.verdict {
            None => {
                t.errors_in_a_row += 1;
                if t.errors_in_a_row > spec.consecutive_error_limit {
                    return Some(format!(
                        "bake: check `{check}` could not be measured {} times in a row: {detail}",
                        t.errors_in_a_row
                    ));
                }
                continue;
            }
            Some(Verdict::Pass) => {}
            Some(Verdict::Fail) => {
                t.failed += 1;
                if t.failed > spec.failure_limit {
                    return Some(format!(
                        "bake: check `{check}` failed {} time(s), over its limit of {}: {detail}",
                        t.failed, spec.failure_limit
                    ));
                }
            }
            Some(Verdict::Inconclusive) => {
                t.inconclusive += 1;
                if t.inconclusive > spec.inconclusive_limit {
                    return Some(format!(
                        "bake: check `{check}` was inconclusive {} time(s), over its limit of {}: {detail}",
                        t.inconclusive, spec.inconclusive_limit
                    ));
                }
            }
        }
        t.errors_in_a_row = 0;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BakeSpec {
        BakeSpec {
            duration: Duration::from_secs(600),
            interval: Duration::from_secs(60),
            checks: vec![],
            failure_limit: 1,
            inconclusive_limit: 0,
            consecutive_error_limit: 2,
        }
    }

    fn mark(check: &str, verdict: Option<Verdict>) -> Mark {
        Mark {
            check: check.into(),
            verdict,
            detail: "0.2 > 0.05".into(),
        }
    }

    #[test]
    fn rounds_fill_the_duration_and_there_is_always_one() {
        assert_eq!(spec().rounds(), 10);
        assert_eq!(spec().due(3), Duration::from_secs(180));
        let short = BakeSpec {
            duration: Duration::from_secs(90),
            ..spec()
        };
        assert_eq!(short.rounds(), 1);
    }

    #[test]
    fn failures_count_across_rounds_over_the_limit() {
        let pass = || vec![mark("error-rate", Some(Verdict::Pass))];
        let fail = || vec![mark("error-rate", Some(Verdict::Fail))];
        assert_eq!(judge(&spec(), &[pass(), fail(), pass()]), None);
        assert_eq!(
            judge(&spec(), &[fail(), pass(), fail()]).as_deref(),
            Some("bake: check `error-rate` failed 2 time(s), over its limit of 1: 0.2 > 0.05")
        );
    }

    #[test]
    fn errors_fail_only_in_a_row_and_inconclusive_fails_over_its_limit() {
        let err = || vec![mark("latency", None)];
        let pass = || vec![mark("latency", Some(Verdict::Pass))];
        assert_eq!(judge(&spec(), &[err(), err(), pass(), err(), err()]), None);
        assert!(
            judge(&spec(), &[err(), err(), err()])
                .unwrap()
                .contains("could not be measured 3 times in a row")
        );
        let unsure = vec![
            mark("latency", Some(Verdict::Pass)),
            mark("error-rate", Some(Verdict::Inconclusive)),
        ];
        assert!(
            judge(&spec(), &[unsure])
                .unwrap()
                .starts_with("bake: check `error-rate` was inconclusive 1 time(s)")
        );
    }
}
