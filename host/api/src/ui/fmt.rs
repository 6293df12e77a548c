//! Times and durations as a person reads them on a page.

/// `2026-11-30 19:52:03 UTC` for milliseconds since the Unix epoch.
pub(crate) fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms after 1970"))
}

/// `1h 4m`, `3m 20s`, `12s`.
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

/// `3m ago`.
pub(crate) fn age(ms: u64, now_ms: u64) -> String {
    format!("{} ago", duration(now_ms.saturating_sub(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_plainly() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_796_068_323_000), "2026-11-30 19:52:03 UTC");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(duration(12_400), "12s");
        assert_eq!(duration(200_000), "3m 20s");
        assert_eq!(duration(3_840_000), "1h 4m");
        assert_eq!(age(1000, 61_000), "1m 0s ago");
    }
}
