//! `builtin:router-metrics`: asks the local runtime's router for one slot's
//! metrics over a window (`GET /v1/services/{name}/stats`) and judges one of
//! them (error ratio, a latency quantile, the request count) against a
//! condition.
//!
//! Too little traffic in the window (fewer than `min_requests`) or a metric
//! the runtime cannot compute (null) is *inconclusive*, never a pass; a
//! refused or failed call is an error, not a failure.

use std::time::Duration;

use rollcage_sdk::HealthCheck;
use rollcage_sdk::condition::Condition;
use rollcage_sdk::http::{Request, encode, redact};
use rollcage_sdk::types::{CheckTarget, Measurement, Verdict};
use serde::Deserialize;

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The runtime's admin API, for example `http://127.0.0.1:43121`.
    pub admin_url: String,
    /// The admin API's bearer token (the host fills it from a secret).
    pub token: String,
    /// The runtime's service name; `{environment}` is filled in, so
    /// `"{environment}-api"` follows the `local` provider's naming.
    pub service: String,
    /// What to judge (default `error_ratio`).
    #[serde(default)]
    pub metric: Metric,
    /// How far back to look, a duration in whole seconds (default `30s`).
    #[serde(default = "default_window")]
    pub window: String,
    /// What a healthy value is: `< 0.05`, `<= 0.5`, `>= 10`, `between 0 1`...
    pub pass_if: String,
    /// Fewer requests than this in the window is inconclusive (default 1).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Time allowed for the call (default 5000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_window() -> String {
    "30s".into()
}
fn default_min_requests() -> u64 {
    1
}
fn default_timeout() -> u64 {
    5000
}

/// A metric of the stats route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of requests answered 5xx, 0 to 1.
    #[default]
    ErrorRatio,
    /// Median latency in seconds.
    P50Seconds,
    /// 90th percentile latency in seconds.
    P90Seconds,
    /// 99th percentile latency in seconds.
    P99Seconds,
    /// Number of requests.
    Requests,
}

impl Metric {
    /// How a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            Metric::ErrorRatio => "error ratio",
            Metric::P50Seconds => "p50 latency",
            Metric::P90Seconds => "p90 latency",
            Metric::P99Seconds => "p99 latency",
            Metric::Requests => "requests",
        }
    }
}

/// What the config means, once checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The condition to judge with.
    pub condition: Condition,
    /// The window in seconds.
    pub window_secs: u64,
}

impl Config {
    /// The checked config, or every problem with it.
    pub fn plan(&self) -> Result<Plan, String> {
        let mut problems = Vec::new();
        if !(self.admin_url.starts_with("http://") || self.admin_url.starts_with("https://")) {
            problems.push(format!(
                "admin_url `{}` must be an http:// URL, such as http://127.0.0.1:43121",
                self.admin_url
            ));
        }
        if self.token.trim().is_empty() {
            problems.push(
                "token is empty: fill it from a secret, token = \"${secret:NAME}\", and grant NAME"
                    .into(),
            );
        }
        if self.service.trim().is_empty() {
            problems.push(
                "service is empty: name the runtime's service, such as \"{environment}-api\""
                    .into(),
            );
        }
        let window = match rollcage_sdk::duration::parse(&self.window) {
            Ok(d) if d < Duration::from_secs(1) || d.subsec_nanos() != 0 => {
                problems.push(format!(
                    "window `{}` must be whole seconds, at least 1s",
                    self.window
                ));
                None
            }
            Ok(d) => Some(d.as_secs()),
            Err(e) => {
                problems.push(format!("window: {e}"));
                None
            }
        };
        let condition = match Condition::parse(&self.pass_if) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("pass_if: {e}"));
                None
            }
        };
        match (condition, window) {
            (Some(condition), Some(window_secs)) if problems.is_empty() => Ok(Plan {
                condition,
                window_secs,
            }),
            _ => Err(problems.join("; ")),
        }
    }
}

/// The runtime's service name with `{environment}` filled in.
pub fn service_name(service: &str, target: &CheckTarget) -> String {
    service.replace("{environment}", &target.environment)
}

/// The stats path (with query) for the target's slot over `window_secs`.
pub fn stats_path(service: &str, slot: &str, window_secs: u64) -> String {
    format!(
        "/v1/services/{}/stats?slot={}&window={window_secs}",
        encode(service),
        encode(slot)
    )
}

/// What the stats route answers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Stats {
    /// The slot measured.
    #[serde(default)]
    pub slot: Option<String>,
    /// The release it runs.
    #[serde(default)]
    pub release: Option<String>,
    /// Requests in the window.
    #[serde(default)]
    pub requests: u64,
    /// 5xx answers among them.
    #[serde(default)]
    pub errors: u64,
    /// `errors / requests`; null without requests.
    #[serde(default)]
    pub error_ratio: Option<f64>,
    /// Latency quantiles in seconds; null without requests.
    #[serde(default)]
    pub p50_seconds: Option<f64>,
    #[serde(default)]
    pub p90_seconds: Option<f64>,
    #[serde(default)]
    pub p99_seconds: Option<f64>,
}

impl Stats {
    /// The value of `metric`, if the runtime has one.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::ErrorRatio => self.error_ratio,
            Metric::P50Seconds => self.p50_seconds,
            Metric::P90Seconds => self.p90_seconds,
            Metric::P99Seconds => self.p99_seconds,
            Metric::Requests => Some(self.requests as f64),
        }
    }
}

/// A number as a person reads it: at most four decimals, no trailing zeros.
pub fn show(v: f64) -> String {
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// Judge `stats` of `target` for `metric` against `condition`; `window` is
/// the window as the operator wrote it. `min_requests` does not apply to the
/// `requests` metric itself, which judges the traffic.
pub fn judge(
    stats: &Stats,
    target: &CheckTarget,
    metric: Metric,
    condition: Condition,
    window: &str,
    min_requests: u64,
) -> Measurement {
    let release = stats
        .release
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(&target.release);
    let slot = stats
        .slot
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(&target.slot);
    let what = format!("{slot} ({release}) over {window}");
    let n = stats.requests;
    let plural = |n: u64| if n == 1 { "request" } else { "requests" };
    if metric != Metric::Requests && n < min_requests {
        return Measurement {
            verdict: Verdict::Inconclusive,
            value: None,
            detail: format!(
                "{} of {what}: only {n} {} in the window, fewer than min_requests {min_requests}: too little traffic to judge",
                metric.label(),
                plural(n)
            ),
        };
    }
    let Some(value) = stats.value(metric).filter(|v| !v.is_nan()) else {
        return Measurement {
            verdict: Verdict::Inconclusive,
            value: None,
            detail: format!(
                "{} of {what}: the runtime has no value ({n} {})",
                metric.label(),
                plural(n)
            ),
        };
    };
    let (verdict, word) = if condition.holds(value) {
        (Verdict::Pass, "passes")
    } else {
        (Verdict::Fail, "fails")
    };
    let measured = match metric {
        Metric::ErrorRatio => format!(
            "error ratio of {what}: {} ({} of {n} {})",
            show(value),
            stats.errors,
            plural(n)
        ),
        Metric::Requests => format!("requests to {what}: {n}"),
        latency => format!(
            "{} of {what}: {}s ({n} {})",
            latency.label(),
            show(value),
            plural(n)
        ),
    };
    Measurement {
        verdict,
        value: Some(value),
        detail: format!("{measured} — {word} {condition}"),
    }
}

/// The message for a refused call: the HTTP status and the runtime's error
/// (`{"error":{"code","message"}}`), or the start of the body.
pub fn error_text(path: &str, status: u16, body: &[u8]) -> String {
    let reason = rollcage_sdk::http::error_reason(body);
    format!("the local runtime answered {status} to GET {path}: {reason}")
}

/// The check.
pub struct RouterMetrics;

impl HealthCheck for RouterMetrics {
    fn check(target: CheckTarget) -> Result<Measurement, String> {
        let config: Config = rollcage_sdk::config()?;
        let plan = config.plan().map_err(|e| format!("router-metrics: {e}"))?;
        let service = service_name(&config.service, &target);
        let path = stats_path(&service, &target.slot, plan.window_secs);
        let url = format!("{}{path}", config.admin_url.trim_end_matches('/'));
        let response = Request::get(&url)
            .header("authorization", &format!("Bearer {}", config.token))
            .header("accept", "application/json")
            .timeout(Duration::from_millis(config.timeout_ms))
            .send()
            .map_err(|e| {
                redact(
                    &format!("the local runtime could not be reached for GET {path}: {e}"),
                    &config.token,
                )
            })?;
        if !response.is_success() {
            return Err(redact(
                &error_text(&path, response.status, &response.body),
                &config.token,
            ));
        }
        let stats: Stats = serde_json::from_slice(&response.body)
            .map_err(|e| format!("the local runtime's stats are not what was expected: {e}"))?;
        Ok(judge(
            &stats,
            &target,
            config.metric,
            plan.condition,
            &config.window,
            config.min_requests,
        ))
    }
}

rollcage_sdk::export_health_check!(RouterMetrics);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn target() -> CheckTarget {
        CheckTarget {
            environment: "production".into(),
            slot: "canary".into(),
            release: "1.2.0".into(),
            endpoints: vec!["127.0.0.1:40010".into()],
            exposure: None,
        }
    }

    fn config(extra: Value) -> Config {
        let mut base = json!({
            "admin_url": "http://127.0.0.1:43121",
            "token": "s3cret",
            "service": "{environment}-api",
            "pass_if": "< 0.05",
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn stats(requests: u64, errors: u64) -> Stats {
        let ratio = (requests > 0).then(|| errors as f64 / requests as f64);
        let latency = (requests > 0).then_some(0.25);
        Stats {
            slot: Some("canary".into()),
            release: Some("1.2.0".into()),
            requests,
            errors,
            error_ratio: ratio,
            p50_seconds: latency,
            p90_seconds: latency.map(|l| l * 2.0),
            p99_seconds: latency.map(|l| l * 4.0),
        }
    }

    #[test]
    fn config_has_defaults_and_checks_itself() {
        let c = config(json!({}));
        assert_eq!(c.metric, Metric::ErrorRatio);
        assert_eq!(c.window, "30s");
        assert_eq!(c.min_requests, 1);
        assert_eq!(
            c.plan().unwrap(),
            Plan {
                condition: Condition::Lt(0.05),
                window_secs: 30
            }
        );
        assert_eq!(
            config(json!({"metric": "p90_seconds", "window": "2m"}))
                .plan()
                .unwrap()
                .window_secs,
            120
        );
        let e = config(json!({"window": "500ms", "pass_if": "about 3", "token": ""}))
            .plan()
            .unwrap_err();
        assert!(e.contains("token is empty"), "{e}");
        assert!(e.contains("window `500ms` must be whole seconds"), "{e}");
        assert!(e.contains("pass_if: invalid condition `about 3`"), "{e}");
        assert!(
            config(json!({"window": "soon"}))
                .plan()
                .unwrap_err()
                .contains("window: invalid duration `soon`")
        );
        let unknown = serde_json::from_value::<Config>(json!({
            "admin_url": "http://x", "token": "t", "service": "s", "pass_if": "< 1", "metric": "p95_seconds"
        }))
        .unwrap_err()
        .to_string();
        assert!(
            unknown.contains("unknown variant `p95_seconds`"),
            "{unknown}"
        );
        let missing = serde_json::from_value::<Config>(json!({
            "admin_url": "http://x", "token": "t", "pass_if": "< 1"
        }))
        .unwrap_err()
        .to_string();
        assert!(missing.contains("missing field `service`"), "{missing}");
    }

    #[test]
    fn the_stats_url_names_service_slot_and_window() {
        let service = service_name("{environment}-api", &target());
        assert_eq!(service, "production-api");
        assert_eq!(
            stats_path(&service, "canary", 30),
            "/v1/services/production-api/stats?slot=canary&window=30"
        );
        assert_eq!(
            stats_path("a b", "x&y", 5),
            "/v1/services/a%20b/stats?slot=x%26y&window=5"
        );
    }

    #[test]
    fn error_ratio_is_judged_with_a_readable_detail() {
        let c = Condition::parse("< 0.05").unwrap();
        let fail = judge(&stats(300, 93), &target(), Metric::ErrorRatio, c, "30s", 1);
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(fail.value, Some(0.31));
        assert_eq!(
            fail.detail,
            "error ratio of canary (1.2.0) over 30s: 0.31 (93 of 300 requests) — fails < 0.05"
        );
        let pass = judge(&stats(300, 3), &target(), Metric::ErrorRatio, c, "30s", 1);
        assert_eq!(pass.verdict, Verdict::Pass);
        assert_eq!(
            pass.detail,
            "error ratio of canary (1.2.0) over 30s: 0.01 (3 of 300 requests) — passes < 0.05"
        );
    }

    #[test]
    fn latency_and_requests_are_judged() {
        let c = Condition::parse("< 0.4").unwrap();
        let p90 = judge(&stats(10, 0), &target(), Metric::P90Seconds, c, "1m", 1);
        assert_eq!((p90.verdict, p90.value), (Verdict::Fail, Some(0.5)));
        assert_eq!(
            p90.detail,
            "p90 latency of canary (1.2.0) over 1m: 0.5s (10 requests) — fails < 0.4"
        );
        let p50 = judge(&stats(10, 0), &target(), Metric::P50Seconds, c, "1m", 1);
        assert_eq!(p50.verdict, Verdict::Pass);
        let at_least = Condition::parse(">= 1").unwrap();
        // min_requests does not gate the request count itself.
        let none = judge(
            &stats(0, 0),
            &target(),
            Metric::Requests,
            at_least,
            "30s",
            5,
        );
        assert_eq!((none.verdict, none.value), (Verdict::Fail, Some(0.0)));
        assert_eq!(
            none.detail,
            "requests to canary (1.2.0) over 30s: 0 — fails >= 1"
        );
    }

    #[test]
    fn too_little_traffic_or_no_value_is_inconclusive() {
        let c = Condition::parse("< 0.05").unwrap();
        let quiet = judge(&stats(0, 0), &target(), Metric::ErrorRatio, c, "30s", 1);
        assert_eq!((quiet.verdict, quiet.value), (Verdict::Inconclusive, None));
        assert_eq!(
            quiet.detail,
            "error ratio of canary (1.2.0) over 30s: only 0 requests in the window, fewer than min_requests 1: too little traffic to judge"
        );
        let few = judge(&stats(1, 1), &target(), Metric::ErrorRatio, c, "30s", 20);
        assert_eq!(few.verdict, Verdict::Inconclusive);
        assert!(
            few.detail.contains("only 1 request in the window"),
            "{}",
            few.detail
        );
        let mut null = stats(5, 0);
        null.p99_seconds = None;
        let m = judge(&null, &target(), Metric::P99Seconds, c, "30s", 1);
        assert_eq!(m.verdict, Verdict::Inconclusive);
        assert_eq!(
            m.detail,
            "p99 latency of canary (1.2.0) over 30s: the runtime has no value (5 requests)"
        );
    }

    #[test]
    fn stats_parse_with_nulls_and_fall_back_to_the_target() {
        let s: Stats = serde_json::from_value(json!({
            "slot": "canary", "release": "1.2.0", "requests": 0, "errors": 0,
            "error_ratio": null, "p50_seconds": null, "p90_seconds": null, "p99_seconds": null
        }))
        .unwrap();
        assert_eq!(s.value(Metric::ErrorRatio), None);
        assert_eq!(s.value(Metric::Requests), Some(0.0));
        let bare: Stats =
            serde_json::from_value(json!({"requests": 4, "errors": 0, "error_ratio": 0.0}))
                .unwrap();
        let m = judge(
            &bare,
            &target(),
            Metric::ErrorRatio,
            Condition::Lt(0.05),
            "30s",
            1,
        );
        assert_eq!(
            m.detail,
            "error ratio of canary (1.2.0) over 30s: 0 (0 of 4 requests) — passes < 0.05"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(show(0.31), "0.31");
        assert_eq!(show(1.0 / 3.0), "0.3333");
        assert_eq!(show(2.0), "2");
        assert_eq!(show(0.0), "0");
        assert_eq!(show(0.00001), "0");
    }

    #[test]
    fn errors_carry_status_and_message_but_not_the_token() {
        assert_eq!(
            error_text(
                "/v1/services/production-api/stats?slot=canary&window=30",
                404,
                br#"{"error":{"code":"not_found","message":"no service `production-api`"}}"#
            ),
            "the local runtime answered 404 to GET /v1/services/production-api/stats?slot=canary&window=30: no service `production-api` (not_found)"
        );
        assert_eq!(
            error_text("/x", 401, b""),
            "the local runtime answered 401 to GET /x: no error message"
        );
        assert_eq!(redact("Bearer s3cret", "s3cret"), "Bearer <redacted>");
    }
}
