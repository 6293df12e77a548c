//! __NAME__: an environment provider. It drives a platform's API to run a
//! service's slots (a release and its replicas each) and split traffic
//! between them. This one speaks a small REST API at `api_url`; replace the
//! calls with your platform's:
//!
//! * `PUT  {api_url}/services/{service}/slots/{slot}` `{"release", "replicas", "spec"}`
//! * `DELETE {api_url}/services/{service}/slots/{slot}`
//! * `PUT  {api_url}/services/{service}/weights` `[{"slot", "weight"}]`
//! * `GET  {api_url}/services/{service}` → `{"slots": [...], "weights": [...]}`
//!
//! Actions are desired state, never deltas: the engine may repeat one
//! after a crash, and repeating it must be harmless.

use rollcage_sdk::EnvironmentProvider;
use rollcage_sdk::http::{Request, encode};
use rollcage_sdk::types::{EnvironmentStatus, RouteWeight, SlotSpec, SlotStatus, Target};
use serde::Deserialize;

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The platform API, such as `http://127.0.0.1:8080`.
    api_url: String,
}

fn service_url(target: &Target) -> Result<String, String> {
    let config: Config = rollcage_sdk::config()?;
    Ok(format!(
        "{}/services/{}",
        config.api_url.trim_end_matches('/'),
        encode(&target.service)
    ))
}

/// `Ok` for a 2xx answer, else an error with the status.
fn expect_success(what: &str, r: rollcage_sdk::http::Response) -> Result<(), String> {
    if r.is_success() {
        Ok(())
    } else {
        Err(format!("{what}: the platform answered {}: {}", r.status, r.text()))
    }
}

#[derive(Deserialize)]
struct Status {
    slots: Vec<SlotJson>,
    weights: Vec<WeightJson>,
}

#[derive(Deserialize)]
struct SlotJson {
    name: String,
    release: String,
    desired: u32,
    ready: u32,
    #[serde(default)]
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
struct WeightJson {
    slot: String,
    weight: u32,
}

struct Plugin;

impl EnvironmentProvider for Plugin {
    fn apply_slot(target: Target, spec: SlotSpec) -> Result<(), String> {
        let url = format!("{}/slots/{}", service_url(&target)?, encode(&spec.name));
        let body = serde_json::json!({
            "release": spec.release.version,
            "replicas": spec.replicas,
            "spec": target.service_spec,
        });
        let r = Request::put(&url).json(&body).map_err(|e| e.to_string())?.send();
        expect_success("apply-slot", r.map_err(|e| e.to_string())?)
    }

    fn route(target: Target, weights: Vec<RouteWeight>) -> Result<(), String> {
        let url = format!("{}/weights", service_url(&target)?);
        let body: Vec<_> = weights
            .iter()
            .map(|w| serde_json::json!({"slot": w.slot, "weight": w.weight}))
            .collect();
        let r = Request::put(&url).json(&body).map_err(|e| e.to_string())?.send();
        expect_success("route", r.map_err(|e| e.to_string())?)
    }

    fn status(target: Target) -> Result<EnvironmentStatus, String> {
        let r = Request::get(&service_url(&target)?).send().map_err(|e| e.to_string())?;
        if r.status == 404 {
            return Ok(EnvironmentStatus { slots: vec![], weights: vec![] });
        }
        let s: Status = r.json().map_err(|e| format!("status: {e}"))?;
        Ok(EnvironmentStatus {
            slots: s
                .slots
                .into_iter()
                .map(|x| SlotStatus {
                    name: x.name,
                    release: x.release,
                    desired: x.desired,
                    ready: x.ready,
                    endpoints: x.endpoints,
                })
                .collect(),
            weights: s
                .weights
                .into_iter()
                .map(|w| RouteWeight { slot: w.slot, weight: w.weight })
                .collect(),
        })
    }

    fn remove_slot(target: Target, slot: String) -> Result<(), String> {
        let url = format!("{}/slots/{}", service_url(&target)?, encode(&slot));
        let r = Request::new("DELETE", &url).send().map_err(|e| e.to_string())?;
        // Removing a slot that is not there succeeds.
        if r.status == 404 {
            return Ok(());
        }
        expect_success("remove-slot", r)
    }
}

rollcage_sdk::export_environment_provider!(Plugin);
