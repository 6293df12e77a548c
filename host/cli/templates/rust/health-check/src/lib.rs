//! __NAME__: a health check. For every endpoint of the slot under analysis
//! it GETs `path` and counts the answers with a 2xx status; the value is the
//! healthy fraction, and the verdict passes when it is at least `min_ratio`.

use rollcage_sdk::HealthCheck;
use rollcage_sdk::http::Request;
use rollcage_sdk::types::{CheckTarget, Measurement, Verdict};
use serde::Deserialize;

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Path on each endpoint (default `/healthz`).
    #[serde(default = "default_path")]
    path: String,
    /// Healthy fraction needed to pass (default 1.0: every endpoint).
    #[serde(default = "default_min_ratio")]
    min_ratio: f64,
}

fn default_path() -> String {
    "/healthz".into()
}
fn default_min_ratio() -> f64 {
    1.0
}

/// The measurement for `healthy` of `total` endpoints.
fn measure(healthy: usize, total: usize, min_ratio: f64) -> Measurement {
    if total == 0 {
        return Measurement {
            verdict: Verdict::Inconclusive,
            value: None,
            detail: "no endpoint to check".into(),
        };
    }
    let ratio = healthy as f64 / total as f64;
    Measurement {
        verdict: if ratio >= min_ratio { Verdict::Pass } else { Verdict::Fail },
        value: Some(ratio),
        detail: format!("{healthy} of {total} endpoints healthy"),
    }
}

struct Plugin;

impl HealthCheck for Plugin {
    fn check(target: CheckTarget) -> Result<Measurement, String> {
        let config: Config = rollcage_sdk::config()?;
        let mut healthy = 0;
        for endpoint in &target.endpoints {
            // A refused connection is an unhealthy endpoint, not an error;
            // a denied request is a grant to fix, not a measurement.
            let url = format!("http://{endpoint}{}", config.path);
            match Request::get(&url).send() {
                Ok(r) if r.is_success() => healthy += 1,
                Err(e @ rollcage_sdk::Error::Denied(_)) => return Err(e.to_string()),
                _ => {}
            }
        }
        Ok(measure(healthy, target.endpoints.len(), config.min_ratio))
    }
}

rollcage_sdk::export_health_check!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_follows_the_healthy_fraction() {
        assert_eq!(measure(2, 2, 1.0).verdict, Verdict::Pass);
        assert_eq!(measure(1, 2, 1.0).verdict, Verdict::Fail);
        assert_eq!(measure(1, 2, 0.5).value, Some(0.5));
        assert_eq!(measure(0, 0, 1.0).verdict, Verdict::Inconclusive);
    }
}
