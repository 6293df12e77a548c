//! Pictures drawn on the server as inline SVG (no script, no style
//! attribute, so the page's `default-src 'self'` policy allows them): an
//! analysis chart of one check's measurements against its threshold, and a
//! traffic split as one bar.

use std::fmt::Write;

use rollcage_core::Threshold;

/// One measurement of a check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    /// `None` when the check could not be measured (an error).
    pub value: Option<f64>,
    /// `pass`, `fail`, `inconclusive` or `error`.
    pub verdict: String,
}

const W: f64 = 360.0;
const H: f64 = 150.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 26.0;

/// A chart of `points` in the order they were measured, with the threshold
/// as a dashed line. Every point carries its value and verdict (as a
/// `<title>` for people, and `data-` attributes), the line its value.
pub(crate) fn analysis(check: &str, points: &[Point], threshold: Option<Threshold>) -> String {
    let values: Vec<f64> = points.iter().filter_map(|p| p.value).collect();
    let mut lo = values.iter().copied().fold(0.0_f64, f64::min);
    let mut hi = values.iter().copied().fold(f64::MIN, f64::max);
    if let Some(t) = threshold {
        lo = lo.min(t.value);
        hi = hi.max(t.value);
    }
    if hi <= lo || !hi.is_finite() {
        hi = lo + 1.0;
    }
    hi += (hi - lo) * 0.15;
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let n = points.len().max(1);
    let x = |i: usize| {
        if n == 1 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + i as f64 * (W - LEFT - RIGHT) / (n - 1) as f64
        }
    };
    let failed = points.iter().filter(|p| p.verdict == "fail").count();
    let label = format!(
        "{check}: {} measurement(s), {failed} failed{}",
        points.len(),
        threshold
            .map(|t| format!(", pass if {t}"))
            .unwrap_or_default()
    );
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}" data-check="{}"><title>{}</title>"#,
        esc(&label),
        esc(check),
        esc(&label)
    );
    // Axes and the range's ends.
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#555"/><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#555"/><text x="{tx}" y="{ty1:.1}" font-size="11" text-anchor="end" fill="#222">{}</text><text x="{tx}" y="{ty2:.1}" font-size="11" text-anchor="end" fill="#222">{}</text>"##,
        num(hi),
        num(lo),
        b = H - BOTTOM,
        r = W - RIGHT,
        tx = LEFT - 4.0,
        ty1 = TOP + 4.0,
        ty2 = H - BOTTOM,
    );
    if let Some(t) = threshold {
        let ty = y(t.value);
        let _ = write!(
            s,
            r##"<line class="threshold" x1="{LEFT}" y1="{ty:.2}" x2="{r}" y2="{ty:.2}" stroke="#b3261e" stroke-width="1.5" stroke-dasharray="5 4" data-value="{v}"><title>threshold: pass if {t}</title></line><text x="{r}" y="{ly:.1}" font-size="11" text-anchor="end" fill="#8c1d18">pass if {t}</text>"##,
            r = W - RIGHT,
            v = t.value,
            ly = if ty - 4.0 < TOP + 8.0 {
                ty + 13.0
            } else {
                ty - 4.0
            },
            t = esc(&t.to_string()),
        );
    }
    // The values in order, then each as a point coloured by its verdict.
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.value.map(|v| format!("{:.2},{:.2}", x(i), y(v))))
        .collect();
    if path.len() > 1 {
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#44546a" stroke-width="1.5"/>"##,
            path.join(" ")
        );
    }
    for (i, p) in points.iter().enumerate() {
        let (fill, shown) = match p.verdict.as_str() {
            "pass" => ("#1b7f3b", "pass"),
            "fail" => ("#b3261e", "fail"),
            "inconclusive" => ("#6b6b6b", "inconclusive"),
            _ => ("#6b6b6b", "error"),
        };
        match p.value {
            Some(v) => {
                let _ = write!(
                    s,
                    r#"<circle class="point {shown}" cx="{:.2}" cy="{:.2}" r="5" fill="{fill}" data-value="{v}" data-verdict="{shown}"><title>#{} {}: {shown}</title></circle>"#,
                    x(i),
                    y(v),
                    i + 1,
                    num(v)
                );
            }
            None => {
                let _ = write!(
                    s,
                    r#"<text class="point error" x="{:.2}" y="{:.2}" font-size="13" text-anchor="middle" fill="{fill}" data-verdict="error">×<title>#{} could not be measured</title></text>"#,
                    x(i),
                    H - BOTTOM - 4.0,
                    i + 1
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// Colours of a split's slots, in order (each with white text legible on it).
const SLOT_COLOURS: [&str; 4] = ["#1f5fa8", "#a8551f", "#5b2a86", "#2a6b5b"];

/// A traffic split as one bar of `slot weight%` segments.
pub(crate) fn traffic(weights: &[(String, u32)]) -> String {
    const BAR_W: f64 = 300.0;
    const BAR_H: f64 = 20.0;
    let total: u32 = weights.iter().map(|(_, w)| *w).sum::<u32>().max(1);
    let label: Vec<String> = weights.iter().map(|(s, w)| format!("{s} {w}%")).collect();
    let label = format!("traffic: {}", label.join(", "));
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="split" viewBox="0 0 {BAR_W} {BAR_H}" width="{BAR_W}" height="{BAR_H}" role="img" aria-label="{}"><title>{}</title><rect x="0" y="0" width="{BAR_W}" height="{BAR_H}" fill="#e6e6e6"/>"##,
        esc(&label),
        esc(&label)
    );
    let mut at = 0.0;
    for (i, (slot, w)) in weights.iter().enumerate() {
        let width = BAR_W * f64::from(*w) / f64::from(total);
        if width <= 0.0 {
            continue;
        }
        let _ = write!(
            s,
            r#"<rect class="slot" x="{at:.2}" y="0" width="{width:.2}" height="{BAR_H}" fill="{}" data-slot="{}" data-weight="{w}"/>"#,
            SLOT_COLOURS[i % SLOT_COLOURS.len()],
            esc(slot)
        );
        if width >= 60.0 {
            let _ = write!(
                s,
                r##"<text x="{:.2}" y="14" font-size="11" fill="#fff">{} {w}%</text>"##,
                at + 4.0,
                esc(slot)
            );
        }
        at += width;
    }
    s.push_str("</svg>");
    s
}

/// A number as short as it can be read: `0.05`, `1.25`, `1200`.
pub(crate) fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let text = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(svg: &str, at: usize, name: &str) -> f64 {
        let rest = &svg[at..];
        let start = rest.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let end = rest[start..].find('"').unwrap();
        rest[start..start + end].parse().unwrap()
    }

    #[test]
    fn a_failing_value_is_drawn_above_the_threshold_line() {
        let points = vec![
            Point {
                value: Some(0.01),
                verdict: "pass".into(),
            },
            Point {
                value: Some(0.3),
                verdict: "fail".into(),
            },
            Point {
                value: None,
                verdict: "error".into(),
            },
        ];
        let svg = analysis("error-rate", &points, Threshold::parse("< 0.05"));
        let line = attr(&svg, svg.find("class=\"threshold\"").unwrap(), "y1");
        let pass = attr(&svg, svg.find("class=\"point pass\"").unwrap(), "cy");
        let fail = attr(&svg, svg.find("class=\"point fail\"").unwrap(), "cy");
        // SVG's y grows downwards: above the line is a smaller y.
        assert!(fail < line && line < pass, "{fail} {line} {pass}");
        assert!(svg.contains("pass if &lt; 0.05"), "{svg}");
        assert!(svg.contains("3 measurement(s), 1 failed"), "{svg}");
        assert!(svg.contains("could not be measured"));
        assert!(!svg.contains("style="), "the CSP forbids inline styles");
    }

    #[test]
    fn a_split_is_one_segment_per_slot_in_proportion() {
        let svg = traffic(&[("canary".into(), 25), ("stable".into(), 75)]);
        let canary = attr(&svg, svg.find("class=\"slot\"").unwrap(), "width");
        assert_eq!(canary, 75.0);
        assert!(svg.contains("traffic: canary 25%, stable 75%"));
        assert_eq!(num(0.05), "0.05");
        assert_eq!(num(1200.0), "1200");
        assert_eq!(num(2.5), "2.5");
    }
}
