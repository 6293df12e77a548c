//! Per-plugin call statistics: how many calls of each kind (`decide`,
//! `check`, `notify`...), how many failed, how many a breaker refused, and
//! a latency histogram. The API's `/v1/plugins` and `/metrics` read them;
//! the breaker, which every call already passes, records them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets: from a
/// pure strategy call (microseconds) to a slow remote API (seconds).
pub const BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The counters of one call kind of one plugin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallCounts {
    /// Calls made (refused ones excluded).
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls an open breaker refused.
    pub rejected: u64,
    /// Total time in calls, seconds.
    pub seconds_total: f64,
    /// Calls at or under each of [`BUCKETS`] (cumulative, as Prometheus
    /// histograms are).
    pub buckets: [u64; BUCKETS.len()],
}

impl CallCounts {
    /// Mean latency of the calls made, if any.
    pub fn mean(&self) -> Option<Duration> {
        (self.calls > 0).then(|| Duration::from_secs_f64(self.seconds_total / self.calls as f64))
    }
}

/// A plugin's counters, by call kind.
#[derive(Debug, Default)]
pub struct CallStats {
    calls: Mutex<BTreeMap<&'static str, CallCounts>>,
}

impl CallStats {
    /// Count a call that was made.
    pub fn record(&self, call: &'static str, took: Duration, failed: bool) {
        let mut calls = self.calls.lock().unwrap();
        let c = calls.entry(call).or_default();
        c.calls += 1;
        c.errors += u64::from(failed);
        let secs = took.as_secs_f64();
        c.seconds_total += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                c.buckets[i] += 1;
            }
        }
    }

    /// Count a call an open breaker refused.
    pub fn rejected(&self, call: &'static str) {
        self.calls.lock().unwrap().entry(call).or_default().rejected += 1;
    }

    /// The counters, by call kind.
    pub fn snapshot(&self) -> BTreeMap<&'static str, CallCounts> {
        self.calls.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_errors_and_refusals_are_counted_with_cumulative_buckets() {
        let s = CallStats::default();
        s.record("check", Duration::from_micros(300), false);
        s.record("check", Duration::from_millis(30), true);
        s.rejected("check");
        s.record("notify", Duration::from_secs(20), false);
        let snap = s.snapshot();
        let check = &snap["check"];
        assert_eq!((check.calls, check.errors, check.rejected), (2, 1, 1));
        // 300 µs is under 0.0005; 30 ms under 0.05.
        assert_eq!(check.buckets, [0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(check.mean(), Some(Duration::from_micros(15150)));
        // Beyond the last bucket: counted only in the total (+Inf).
        assert_eq!(snap["notify"].buckets, [0; 12]);
        assert_eq!(snap["notify"].calls, 1);
    }
}
