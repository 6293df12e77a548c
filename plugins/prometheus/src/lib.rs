//! `builtin:prometheus`: runs an instant query through Prometheus' HTTP API
//! (`GET /api/v1/query`) and judges the result against a condition.
//!
//! The query may use `{slot}`, `{release}` and `{environment}`. An empty
//! result or NaN is *inconclusive*, never a pass; a Prometheus error (bad
//! query, server down) is an error, never a failure.

use std::time::Duration;

use rollcage_sdk::HealthCheck;
use rollcage_sdk::http::Request;
use rollcage_sdk::types::{CheckTarget, Measurement, Verdict};
use serde::Deserialize;
use serde_json::Value;

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Prometheus' base URL (default `http://127.0.0.1:9090`).
    #[serde(default = "default_url")]
    pub url: String,
    /// PromQL, templated with `{slot}`, `{release}`, `{environment}`.
    pub query: String,
    /// What a healthy value is: `< 0.05`, `>= 0.99`, `between 0.1 0.5`...
    pub pass_if: String,
    /// Time allowed for the query (default 5000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_url() -> String {
    "http://127.0.0.1:9090".into()
}
fn default_timeout() -> u64 {
    5000
}

/// A condition a value must meet to pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Lt(f64),
    Le(f64),
    Gt(f64),
    Ge(f64),
    Eq(f64),
    Ne(f64),
    Between(f64, f64),
}

impl Condition {
    /// Parse `< 0.05`, `>= 0.99`, `== 1`, `!= 0`, `between 0.1 0.5`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let bad = || {
            format!(
                "invalid condition `{text}`: use <, <=, >, >=, ==, != and a number, or `between LOW HIGH`"
            )
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let num = |s: &str| s.parse::<f64>().map_err(|_| bad());
        match words.as_slice() {
            ["between", lo, hi] => {
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(format!("invalid condition `{text}`: {lo} is above {hi}"));
                }
                Ok(Condition::Between(lo, hi))
            }
            [op, n] => {
                let n = num(n)?;
                Ok(match *op {
                    "<" => Condition::Lt(n),
                    "<=" => Condition::Le(n),
                    ">" => Condition::Gt(n),
                    ">=" => Condition::Ge(n),
                    "==" => Condition::Eq(n),
                    "!=" => Condition::Ne(n),
                    _ => return Err(bad()),
                })
            }
            _ => Err(bad()),
        }
    }

    /// Whether `v` passes.
    pub fn holds(self, v: f64) -> bool {
        match self {
            Condition::Lt(n) => v < n,
            Condition::Le(n) => v <= n,
            Condition::Gt(n) => v > n,
            Condition::Ge(n) => v >= n,
            Condition::Eq(n) => v == n,
            Condition::Ne(n) => v != n,
            Condition::Between(lo, hi) => (lo..=hi).contains(&v),
        }
    }
}

/// Percent-encode a query parameter value (RFC 3986 unreserved kept).
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query with `{slot}`, `{release}` and `{environment}` filled in.
pub fn render(query: &str, target: &CheckTarget) -> String {
    query
        .replace("{slot}", &target.slot)
        .replace("{release}", &target.release)
        .replace("{environment}", &target.environment)
}

/// Judge a `/api/v1/query` answer.
pub fn judge(
    body: &Value,
    condition: Condition,
    pass_if: &str,
    query: &str,
) -> Result<Measurement, String> {
    if body["status"] != "success" {
        return Err(format!(
            "Prometheus refused `{query}`: {}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("no message")
        ));
    }
    let data = &body["data"];
    let samples: Vec<(String, &Value)> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| (s["metric"].to_string(), &s["value"][1]))
                    .collect()
            })
            .unwrap_or_default(),
        Some("scalar") => vec![(String::new(), &data["result"][1])],
        other => {
            return Err(format!(
                "query `{query}` returned {other:?}, not a vector or scalar"
            ));
        }
    };
    if samples.is_empty() {
        return Ok(Measurement {
            verdict: Verdict::Inconclusive,
            value: None,
            detail: format!("`{query}` returned no data"),
        });
    }
    let mut worst: Option<(f64, String)> = None;
    for (labels, raw) in &samples {
        let value: f64 = raw
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unreadable sample value {raw}"))?;
        if value.is_nan() {
            return Ok(Measurement {
                verdict: Verdict::Inconclusive,
                value: None,
                detail: format!("`{query}` is NaN {labels}"),
            });
        }
        if !condition.holds(value) && worst.is_none() {
            worst = Some((value, labels.clone()));
        }
    }
    let first: f64 = samples[0]
        .1
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Ok(match worst {
        None => Measurement {
            verdict: Verdict::Pass,
            value: Some(first),
            detail: format!("{first} (pass if {pass_if})"),
        },
        Some((v, labels)) => Measurement {
            verdict: Verdict::Fail,
            value: Some(v),
            detail: format!("{v} {labels} fails `{pass_if}`"),
        },
    })
}

/// The check.
pub struct Prometheus;

impl HealthCheck for Prometheus {
    fn check(target: CheckTarget) -> Result<Measurement, String> {
        let config: Config = rollcage_sdk::config()?;
        let condition = Condition::parse(&config.pass_if)?;
        let query = render(&config.query, &target);
        let url = format!(
            "{}/api/v1/query?query={}",
            config.url.trim_end_matches('/'),
            encode(&query)
        );
        let response = Request::get(&url)
            .timeout(Duration::from_millis(config.timeout_ms))
            .send()?;
        // Prometheus answers 400/422/503 with a JSON error body; read it.
        let body: Value = serde_json::from_slice(&response.body).map_err(|_| {
            format!(
                "Prometheus answered {} without JSON: {}",
                response.status,
                response.text().chars().take(200).collect::<String>()
            )
        })?;
        judge(&body, condition, &config.pass_if, &query)
    }
}

rollcage_sdk::export_health_check!(Prometheus);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_and_hold() {
        assert!(Condition::parse("< 0.05").unwrap().holds(0.01));
        assert!(!Condition::parse("< 0.05").unwrap().holds(0.05));
        assert!(Condition::parse(">= 0.99").unwrap().holds(0.99));
        assert!(Condition::parse("between 0.1 0.5").unwrap().holds(0.5));
        assert!(!Condition::parse("between 0.1 0.5").unwrap().holds(0.6));
        for bad in ["<", "about 3", "< x", "between 2 1"] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_are_judged() {
        let c = Condition::parse("< 0.05").unwrap();
        let vector = |v: &str| json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"slot": "canary"}, "value": [1.0, v]}]}});
        assert_eq!(
            judge(&vector("0.01"), c, "< 0.05", "q").unwrap().verdict,
            Verdict::Pass
        );
        let fail = judge(&vector("0.3"), c, "< 0.05", "q").unwrap();
        assert_eq!((fail.verdict, fail.value), (Verdict::Fail, Some(0.3)));
        assert_eq!(
            judge(&vector("NaN"), c, "< 0.05", "q").unwrap().verdict,
            Verdict::Inconclusive
        );
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(
            judge(&empty, c, "< 0.05", "q").unwrap().verdict,
            Verdict::Inconclusive
        );
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0"]}});
        assert_eq!(
            judge(&scalar, c, "< 0.05", "q").unwrap().verdict,
            Verdict::Pass
        );
        let error = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert_eq!(
            judge(&error, c, "< 0.05", "q").unwrap_err(),
            "Prometheus refused `q`: bad_data: parse error"
        );
    }

    #[test]
    fn queries_are_templated_and_encoded() {
        let t = CheckTarget {
            environment: "prod".into(),
            slot: "1.2.0".into(),
            release: "1.2.0".into(),
            endpoints: vec![],
        };
        assert_eq!(
            render(r#"up{slot="{slot}",env="{environment}"}"#, &t),
            r#"up{slot="1.2.0",env="prod"}"#
        );
        assert_eq!(encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
