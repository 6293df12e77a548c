//! Test fixture: an environment provider whose environments are kept by a
//! test's HTTP server (`url`), so that several hosts (processes) act on the
//! same environments and the server sees every action, in order. Each
//! call is one request: `POST {url}/apply`, `/route`, `/remove`, and
//! `GET {url}/status?environment=NAME`, which answers the status as JSON.

use rollcage_sdk::EnvironmentProvider;
use rollcage_sdk::http::Request;
use rollcage_sdk::types::*;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
}

#[derive(Deserialize)]
struct Slot {
    name: String,
    release: String,
    desired: u32,
    ready: u32,
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
struct Weight {
    slot: String,
    weight: u32,
}

#[derive(Deserialize)]
struct Status {
    slots: Vec<Slot>,
    weights: Vec<Weight>,
}

fn url(path: &str) -> Result<String, String> {
    let c: Config = rollcage_sdk::config()?;
    Ok(format!("{}{path}", c.url.trim_end_matches('/')))
}

fn post(op: &str, body: Value) -> Result<(), String> {
    let r = Request::post(&url(&format!("/{op}"))?)
        .json(&body)
        .map_err(|e| e.to_string())?
        .send()
        .map_err(|e| e.to_string())?;
    if r.is_success() {
        Ok(())
    } else {
        Err(format!("{op}: {} {}", r.status, r.text()))
    }
}

struct Remote;

impl EnvironmentProvider for Remote {
    fn apply_slot(t: Target, spec: SlotSpec) -> Result<(), String> {
        post(
            "apply",
            json!({"environment": t.environment, "slot": spec.name, "release": spec.release.version, "replicas": spec.replicas}),
        )
    }
    fn route(t: Target, weights: Vec<RouteWeight>) -> Result<(), String> {
        let weights: Vec<Value> = weights
            .iter()
            .map(|w| json!({"slot": w.slot, "weight": w.weight}))
            .collect();
        post(
            "route",
            json!({"environment": t.environment, "weights": weights}),
        )
    }
    fn status(t: Target) -> Result<EnvironmentStatus, String> {
        let r = Request::get(&url(&format!("/status?environment={}", t.environment))?)
            .send()
            .map_err(|e| e.to_string())?;
        if !r.is_success() {
            return Err(format!("status: {} {}", r.status, r.text()));
        }
        let s: Status = r.json().map_err(|e| e.to_string())?;
        Ok(EnvironmentStatus {
            slots: s
                .slots
                .into_iter()
                .map(|s| SlotStatus {
                    name: s.name,
                    release: s.release,
                    desired: s.desired,
                    ready: s.ready,
                    endpoints: s.endpoints,
                })
                .collect(),
            weights: s
                .weights
                .into_iter()
                .map(|w| RouteWeight {
                    slot: w.slot,
                    weight: w.weight,
                })
                .collect(),
        })
    }
    fn remove_slot(t: Target, slot: String) -> Result<(), String> {
        post(
            "remove",
            json!({"environment": t.environment, "slot": slot}),
        )
    }
}

rollcage_sdk::export_environment_provider!(Remote);
