//! `builtin:prometheus`: runs an instant query through Prometheus' HTTP API
//! (`GET /api/v1/query`) and judges the result against a condition.
//!
//! The query may use `{slot}`, `{release}` and `{environment}`. An empty
//! result or NaN is *inconclusive*, never a pass; a Prometheus error (bad
//! query, server down) is an error, never a failure.

use std::time::Duration;

use rollcage_sdk::HealthCheck;
pub use rollcage_sdk::condition::Condition;
use rollcage_sdk::http::{Request, encode};
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
            exposure: None,
        };
        assert_eq!(
            render(r#"up{slot="{slot}",env="{environment}"}"#, &t),
            r#"up{slot="1.2.0",env="prod"}"#
        );
        assert_eq!(encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
