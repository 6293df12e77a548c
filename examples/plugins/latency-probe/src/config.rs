//! The plugin's `config` table: what to request, how often, and the budget.

use serde::Deserialize;

/// The most requests per endpoint: a check is one plugin call, which must
/// finish within the plugin's `limits.timeout_ms`.
const MAX_REQUESTS: u32 = 1000;

/// The plugin's (or a check's) `config` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The budget: the 95th percentile of the answers' latency must not be
    /// above this many milliseconds. Required.
    pub max_p95_ms: f64,
    /// Path requested on each endpoint (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// GET requests per endpoint (default 20, at most 1000).
    #[serde(default = "default_requests")]
    pub requests: u32,
    /// Time allowed for each request, in milliseconds (default 2000); a
    /// request that takes longer is a failed request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Failed requests (no answer, or a status other than 2xx) tolerated
    /// before the check fails (default 0).
    #[serde(default)]
    pub max_failures: u32,
}

fn default_path() -> String {
    "/".into()
}

fn default_requests() -> u32 {
    20
}

fn default_timeout_ms() -> u64 {
    2000
}

impl Config {
    /// Parse the config's JSON text (what the host passes) and check every
    /// value; all the problems at once, each naming its key.
    pub fn parse(json: &str) -> Result<Config, String> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("invalid plugin config: {e}"))?;
        let mut problems = Vec::new();
        if !(config.max_p95_ms.is_finite() && config.max_p95_ms > 0.0) {
            problems.push(format!(
                "`max_p95_ms` must be a number of milliseconds above 0, not {}",
                config.max_p95_ms
            ));
        }
        if !config.path.starts_with('/') {
            problems.push(format!("`path` must start with `/`, not `{}`", config.path));
        }
        if !(1..=MAX_REQUESTS).contains(&config.requests) {
            problems.push(format!(
                "`requests` must be from 1 to {MAX_REQUESTS}, not {}",
                config.requests
            ));
        }
        if config.timeout_ms == 0 {
            problems.push("`timeout_ms` must be above 0".into());
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(format!("invalid plugin config: {}", problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_budget_is_required() {
        let c = Config::parse(r#"{"max_p95_ms": 250}"#).unwrap();
        assert_eq!(
            c,
            Config {
                max_p95_ms: 250.0,
                path: "/".into(),
                requests: 20,
                timeout_ms: 2000,
                max_failures: 0,
            }
        );
        let e = Config::parse("{}").unwrap_err();
        assert!(e.contains("missing field `max_p95_ms`"), "{e}");
    }

    #[test]
    fn a_misspelt_key_is_an_error_not_a_default() {
        let e = Config::parse(r#"{"max_p95_ms": 250, "request": 5}"#).unwrap_err();
        assert!(e.contains("unknown field `request`"), "{e}");
    }

    #[test]
    fn every_bad_value_is_named_at_once() {
        let e = Config::parse(
            r#"{"max_p95_ms": 0, "path": "healthz", "requests": 0, "timeout_ms": 0}"#,
        )
        .unwrap_err();
        for key in ["`max_p95_ms`", "`path`", "`requests`", "`timeout_ms`"] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = Config::parse(r#"{"max_p95_ms": 250, "requests": 1001}"#).unwrap_err();
        assert!(
            e.contains("`requests` must be from 1 to 1000, not 1001"),
            "{e}"
        );
    }
}
