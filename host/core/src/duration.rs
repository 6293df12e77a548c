//! Durations as operators write them: `500ms`, `30s`, `5m`, `1h`, `1h30m`.

use std::time::Duration;

/// Parse a duration such as `30s`, `5m`, `1h30m` or `250ms`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration `{text}`: use a number and a unit, such as 500ms, 30s, 5m, 1h")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Milliseconds as an operator would write them: `250ms`, `30s`, `5m`,
/// `1h30m`; the inverse of [`parse`] for whole units.
pub fn format(ms: u64) -> String {
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_the_inverse_of_parse() {
        for (ms, text) in [
            (250, "250ms"),
            (30_000, "30s"),
            (300_000, "5m"),
            (5_400_000, "1h30m"),
            (0, "0ms"),
        ] {
            assert_eq!(format(ms), text);
            assert_eq!(parse(text).unwrap().as_millis() as u64, ms);
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        for bad in ["", "30", "s", "5 m", "1d", "-1s"] {
            assert!(
                parse(bad).unwrap_err().contains(&format!("`{bad}`")),
                "{bad}"
            );
        }
    }
}
