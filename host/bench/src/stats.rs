//! Summaries of samples (medians, percentiles) and the human forms of
//! durations, rates, sizes and verdicts that the tables print.
//!
//! Percentiles interpolate linearly between the two nearest ranks (numpy's
//! default), so a median of an even count is the mean of the middle two and
//! a p99 of few samples does not jump to the maximum.

/// A summary of samples, in the samples' unit (seconds for timings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `samples` (any order); `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            n: sorted.len(),
            median: percentile_sorted(&sorted, 50.0),
            p99: percentile_sorted(&sorted, 99.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The `p`th percentile (0 to 100) of samples sorted ascending.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "no samples");
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Seconds as a person reads them: `850 ns`, `3.42 µs`, `12.3 ms`, `4.51 s`.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    let a = s.abs();
    let (value, unit) = if a < 1e-6 {
        (s * 1e9, "ns")
    } else if a < 1e-3 {
        (s * 1e6, "µs")
    } else if a < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    format!("{} {unit}", three_digits(value))
}

/// Three significant digits, at most two decimals: `3.42`, `12.3`, `850`.
fn three_digits(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A count per second: `2,000/s`, `12.5/s`.
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 100.0 {
        format!("{}/s", thousands(per_sec.round() as u64))
    } else {
        format!("{}/s", three_digits(per_sec))
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as `18.6 MB` (decimal units, as file sizes are quoted in the issue).
pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{} GB", three_digits(b / 1e9))
    } else if b >= 1e6 {
        format!("{} MB", three_digits(b / 1e6))
    } else if b >= 1e3 {
        format!("{} kB", three_digits(b / 1e3))
    } else {
        format!("{bytes} B")
    }
}

/// A ratio such as `3.2×`.
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        return "n/a".into();
    }
    format!("{}×", three_digits(r))
}

/// Whether `measured` is within an upper bound `limit`, said with the
/// numbers: `met (3.1 µs ≤ 10 µs)`, `missed by 2.3× (23 µs > 10 µs)`.
/// `fmt` prints both numbers in the same unit family.
pub fn verdict_at_most(measured: f64, limit: f64, fmt: impl Fn(f64) -> String) -> Verdict {
    if measured <= limit {
        Verdict {
            met: true,
            text: format!("met ({} ≤ {})", fmt(measured), fmt(limit)),
        }
    } else {
        Verdict {
            met: false,
            text: format!(
                "missed by {} ({} > {})",
                fmt_ratio(measured / limit),
                fmt(measured),
                fmt(limit)
            ),
        }
    }
}

/// Whether a target was met, and the sentence that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub met: bool,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let one_to_hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&one_to_hundred).unwrap();
        assert_eq!(s.n, 100);
        assert!((s.median - 50.5).abs() < 1e-9);
        assert!((s.p99 - 99.01).abs() < 1e-9);
        assert_eq!((s.min, s.max), (1.0, 100.0));
        // Order does not matter; one sample is every percentile.
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert!((s.median - 2.5).abs() < 1e-9);
        assert_eq!(Summary::of(&[7.0]).unwrap().p99, 7.0);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0], 0.0), 1.0);
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0], 100.0), 3.0);
    }

    #[test]
    fn durations_rates_and_sizes_read_as_a_person_writes_them() {
        assert_eq!(fmt_secs(850e-9), "850 ns");
        assert_eq!(fmt_secs(3.4216e-6), "3.42 µs");
        assert_eq!(fmt_secs(0.01234), "12.3 ms");
        assert_eq!(fmt_secs(4.512), "4.51 s");
        assert_eq!(fmt_secs(f64::NAN), "n/a");
        assert_eq!(fmt_rate(2000.4), "2,000/s");
        assert_eq!(fmt_rate(12.5), "12.5/s");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(fmt_bytes(18_598_111), "18.6 MB");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_ratio(3.21), "3.21×");
    }

    #[test]
    fn verdicts_say_by_how_much_a_target_is_missed() {
        let met = verdict_at_most(3.1e-6, 10e-6, fmt_secs);
        assert!(met.met);
        assert_eq!(met.text, "met (3.10 µs ≤ 10.0 µs)");
        let missed = verdict_at_most(23e-6, 10e-6, fmt_secs);
        assert!(!missed.met);
        assert_eq!(missed.text, "missed by 2.30× (23.0 µs > 10.0 µs)");
    }
}
