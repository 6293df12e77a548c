//! Request statistics per second over the last ten minutes, so that the
//! admin API can answer "over the last W seconds" (requests, 5xx, latency
//! quantiles) for a slot without a Prometheus server.

/// Upper bounds of the latency buckets, in seconds; the same as the
/// Prometheus histogram, plus an implicit `+Inf`.
pub const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How far back a window can reach.
pub const SPAN_SECONDS: u64 = 600;

/// The latency bucket a duration falls in (`BOUNDS.len()` is `+Inf`).
pub fn bucket_of(seconds: f64) -> usize {
    BOUNDS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(BOUNDS.len())
}

/// Requests, server errors and latency bucket counts over some seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    pub latency: [u64; BOUNDS.len() + 1],
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }

    /// The `q` quantile of latency, interpolated linearly inside its bucket
    /// as Prometheus' `histogram_quantile` does (so the numbers agree with a
    /// query over the exported histogram); the largest finite bound when it
    /// falls in `+Inf`; `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &count) in self.latency.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let Some(&upper) = BOUNDS.get(i) else {
                    return Some(BOUNDS[BOUNDS.len() - 1]);
                };
                let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
                let within = (rank - below as f64).max(0.0) / count as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += count;
        }
        None
    }
}

/// A ring of per-second counts, indexed by second modulo the span.
#[derive(Debug, Clone)]
pub struct Window {
    seconds: Vec<(u64, Counts)>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            seconds: vec![(0, Counts::default()); SPAN_SECONDS as usize],
        }
    }
}

impl Window {
    /// Count one request finished at second `now` (of a monotonic clock).
    pub fn record(&mut self, now: u64, error: bool, latency_seconds: f64) {
        let (second, counts) = &mut self.seconds[(now % SPAN_SECONDS) as usize];
        if *second != now {
            // The slot last held a second one span ago: start it afresh.
            *second = now;
            *counts = Counts::default();
        }
        counts.requests += 1;
        counts.errors += u64::from(error);
        counts.latency[bucket_of(latency_seconds)] += 1;
    }

    /// The sum over the last `window` seconds up to and including `now`.
    pub fn sum(&self, now: u64, window: u64) -> Counts {
        let mut total = Counts::default();
        for (second, counts) in &self.seconds {
            if *second <= now && now - second < window.min(SPAN_SECONDS) {
                total.add(counts);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.005), 0);
        assert_eq!(bucket_of(0.0051), 1);
        assert_eq!(bucket_of(10.0), 10);
        assert_eq!(bucket_of(11.0), 11);
    }

    #[test]
    fn sums_cover_exactly_the_window() {
        let mut w = Window::default();
        w.record(100, false, 0.001);
        w.record(105, true, 0.2);
        w.record(109, false, 0.2);
        w.record(110, false, 0.2);
        assert_eq!(w.sum(110, 1).requests, 1);
        assert_eq!(w.sum(110, 2).requests, 2);
        let six = w.sum(110, 6);
        assert_eq!((six.requests, six.errors), (3, 1));
        assert_eq!(w.sum(110, 60).requests, 4);
        // Ten minutes later the ring has moved on.
        w.record(110 + SPAN_SECONDS, false, 0.2);
        assert_eq!(w.sum(110 + SPAN_SECONDS, SPAN_SECONDS).requests, 1);
        assert_eq!(w.sum(2000, 60), Counts::default());
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let mut c = Counts::default();
        assert_eq!(c.quantile(0.5), None);
        // 10 requests in (0.1, 0.25]: the median is halfway through.
        c.latency[bucket_of(0.2)] = 10;
        let p50 = c.quantile(0.5).unwrap();
        assert!((p50 - 0.175).abs() < 1e-9, "{p50}");
        c.latency[bucket_of(0.001)] = 90;
        assert!(c.quantile(0.5).unwrap() <= 0.005);
        let p99 = c.quantile(0.99).unwrap();
        assert!(p99 > 0.1 && p99 <= 0.25, "{p99}");
        c.latency[bucket_of(30.0)] = 1000;
        assert_eq!(c.quantile(0.99), Some(10.0));
    }
}
