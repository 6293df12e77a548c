//! `latency-probe`: a Rollcage health check that sends GET requests to each
//! ready endpoint of a slot and fails it when the 95th percentile of the
//! answers' latency is over a budget (`max_p95_ms`), or when more requests
//! fail than tolerated. It needs no traffic and no metrics server: it
//! measures a slot before the router sends it any user.
//!
//! `config` reads and checks the plugin's table; `probe` measures and
//! judges; this module ties them to the host (config, clock, HTTP).

mod config;
mod probe;

use std::time::{Duration, Instant};

use rollcage_sdk::HealthCheck;
use rollcage_sdk::http::Request;
use rollcage_sdk::types::{CheckTarget, Measurement};

use config::Config;

struct LatencyProbe;

impl HealthCheck for LatencyProbe {
    fn check(target: CheckTarget) -> Result<Measurement, String> {
        let config = Config::parse(&rollcage_sdk::config_json())?;
        let timeout = Duration::from_millis(config.timeout_ms);
        probe::measure(&target.endpoints, &config, |url| {
            // The monotonic clock is a WASI import every plugin has.
            let start = Instant::now();
            let response = Request::get(url).timeout(timeout).send()?;
            Ok((response.status, start.elapsed()))
        })
    }
}

rollcage_sdk::export_health_check!(LatencyProbe);
