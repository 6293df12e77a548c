//! `builtin:http`: probes every endpoint of a slot over HTTP and passes only
//! when each answers as expected (status, body, JSON value, latency).

use std::time::{Duration, Instant};

use rollcage_sdk::HealthCheck;
use rollcage_sdk::http::{Request, Response};
use rollcage_sdk::types::{CheckTarget, Measurement, Verdict};
use serde::Deserialize;

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// URL template; `{endpoint}` is replaced by each `host:port` of the slot.
    #[serde(default = "default_url")]
    pub url: String,
    /// Statuses that count as healthy.
    #[serde(default = "default_statuses")]
    pub expect_status: Vec<u16>,
    /// A substring the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// A JSON pointer (RFC 6901) into the body, compared with `json_equals`.
    #[serde(default)]
    pub json_pointer: Option<String>,
    /// The value expected at `json_pointer`.
    #[serde(default)]
    pub json_equals: Option<serde_json::Value>,
    /// Time allowed per request.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Slowest acceptable answer; none when absent.
    #[serde(default)]
    pub max_latency_ms: Option<u64>,
}

fn default_url() -> String {
    "http://{endpoint}/healthz".into()
}
fn default_statuses() -> Vec<u16> {
    vec![200]
}
fn default_timeout() -> u64 {
    2000
}

impl Config {
    /// Problems with the configuration itself.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.url.contains("{endpoint}") {
            problems.push(format!("url `{}` must contain `{{endpoint}}`", self.url));
        }
        if self.json_pointer.is_some() != self.json_equals.is_some() {
            problems.push("json_pointer and json_equals go together".into());
        }
        if self.expect_status.is_empty() {
            problems.push("expect_status must list at least one status".into());
        }
        problems
    }

    /// Why `response` (taking `latency`) is unhealthy, or `None` when healthy.
    pub fn judge(&self, response: &Response, latency: Duration) -> Option<String> {
        if !self.expect_status.contains(&response.status) {
            return Some(format!(
                "status {} not in {:?}",
                response.status, self.expect_status
            ));
        }
        if let Some(needle) = &self.body_contains
            && !response.text().contains(needle.as_str())
        {
            return Some(format!("body does not contain {needle:?}"));
        }
        if let (Some(pointer), Some(expected)) = (&self.json_pointer, &self.json_equals) {
            let body: serde_json::Value = match serde_json::from_slice(&response.body) {
                Ok(v) => v,
                Err(e) => return Some(format!("body is not JSON: {e}")),
            };
            match body.pointer(pointer) {
                Some(actual) if actual == expected => {}
                Some(actual) => return Some(format!("{pointer} is {actual}, expected {expected}")),
                None => return Some(format!("{pointer} is missing")),
            }
        }
        if let Some(max) = self.max_latency_ms
            && latency > Duration::from_millis(max)
        {
            return Some(format!(
                "answered in {} ms, over {max} ms",
                latency.as_millis()
            ));
        }
        None
    }
}

/// The check.
pub struct HttpCheck;

impl HealthCheck for HttpCheck {
    fn check(target: CheckTarget) -> Result<Measurement, String> {
        let config: Config = rollcage_sdk::config()?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if target.endpoints.is_empty() {
            return Ok(Measurement {
                verdict: Verdict::Inconclusive,
                value: None,
                detail: format!("slot `{}` has no ready endpoint to probe", target.slot),
            });
        }
        let mut failures = Vec::new();
        for endpoint in &target.endpoints {
            let url = config.url.replace("{endpoint}", endpoint);
            let started = Instant::now();
            let sent = Request::get(&url)
                .timeout(Duration::from_millis(config.timeout_ms))
                .send();
            let latency = started.elapsed();
            match sent {
                Ok(response) => {
                    if let Some(why) = config.judge(&response, latency) {
                        failures.push(format!("{url}: {why}"));
                    }
                }
                // A refused host is a configuration error, not an unhealthy slot.
                Err(e) if e.to_string().contains("denied") => return Err(e.to_string()),
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        let total = target.endpoints.len();
        let failed = failures.len();
        Ok(Measurement {
            verdict: if failed == 0 {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            value: Some(failed as f64 / total as f64),
            detail: if failed == 0 {
                format!("{total} of {total} endpoints healthy")
            } else {
                format!(
                    "{failed} of {total} endpoints unhealthy: {}",
                    failures.join("; ")
                )
            },
        })
    }
}

rollcage_sdk::export_health_check!(HttpCheck);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Config {
        serde_json::from_value(json).unwrap()
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn defaults_probe_healthz_for_200() {
        let c = config(serde_json::json!({}));
        assert_eq!(c.url, "http://{endpoint}/healthz");
        assert!(c.problems().is_empty());
        assert_eq!(c.judge(&response(200, ""), Duration::ZERO), None);
        assert_eq!(
            c.judge(&response(503, ""), Duration::ZERO).unwrap(),
            "status 503 not in [200]"
        );
    }

    #[test]
    fn body_json_and_latency_are_judged() {
        let c = config(serde_json::json!({
            "body_contains": "ok",
            "json_pointer": "/status",
            "json_equals": "ok",
            "max_latency_ms": 100
        }));
        assert_eq!(
            c.judge(
                &response(200, r#"{"status":"ok"}"#),
                Duration::from_millis(5)
            ),
            None
        );
        assert_eq!(
            c.judge(&response(200, r#"{"status":"down"}"#), Duration::ZERO)
                .unwrap(),
            "body does not contain \"ok\""
        );
        assert_eq!(
            c.judge(&response(200, r#"{"status":"okay"}"#), Duration::ZERO)
                .unwrap(),
            "/status is \"okay\", expected \"ok\""
        );
        assert_eq!(
            c.judge(
                &response(200, r#"{"status":"ok"}"#),
                Duration::from_millis(150)
            )
            .unwrap(),
            "answered in 150 ms, over 100 ms"
        );
    }

    #[test]
    fn bad_configs_are_named() {
        let c = config(
            serde_json::json!({"url": "http://x/", "json_pointer": "/a", "expect_status": []}),
        );
        assert_eq!(c.problems().len(), 3);
        assert!(serde_json::from_value::<Config>(serde_json::json!({"urll": "x"})).is_err());
    }
}
