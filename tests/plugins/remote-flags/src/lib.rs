//! Test fixture: an exposure plugin whose feature flags are kept by a
//! test's HTTP server (`url`), so that a test sees every change of a
//! flag's exposure. `PUT {url}/flags/{flag}/{environment}` with
//! `{"percent": N}` sets it; `GET` of the same path answers
//! `{"percent", "enabled", "revision"}`, or 404 for a flag the
//! environment does not have (exposed to nobody).

use rollcage_sdk::Exposure;
use rollcage_sdk::http::Request;
use rollcage_sdk::types::{ExposureStatus, Problem};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
}

#[derive(Deserialize)]
struct Flag {
    percent: u32,
    enabled: bool,
    #[serde(default)]
    revision: String,
}

fn url(flag: &str, environment: &str) -> Result<String, String> {
    let c: Config = rollcage_sdk::config()?;
    Ok(format!(
        "{}/flags/{flag}/{environment}",
        c.url.trim_end_matches('/')
    ))
}

struct RemoteFlags;

impl Exposure for RemoteFlags {
    fn validate(params: String) -> Result<(), Vec<Problem>> {
        serde_json::from_str::<Config>(&params)
            .map(|_| ())
            .map_err(|e| {
                vec![Problem {
                    field: String::new(),
                    message: e.to_string(),
                }]
            })
    }

    fn set_exposure(flag: String, environment: String, percent: u32) -> Result<(), String> {
        rollcage_sdk::exposure::percent(percent)?;
        let r = Request::put(&url(&flag, &environment)?)
            .json(&json!({ "percent": percent }))
            .map_err(|e| e.to_string())?
            .send()
            .map_err(|e| e.to_string())?;
        if r.is_success() {
            Ok(())
        } else {
            Err(format!("set {flag}: {} {}", r.status, r.text()))
        }
    }

    fn get_exposure(flag: String, environment: String) -> Result<ExposureStatus, String> {
        let r = Request::get(&url(&flag, &environment)?)
            .send()
            .map_err(|e| e.to_string())?;
        if r.status == 404 {
            return Ok(ExposureStatus {
                percent: 0,
                enabled: false,
                revision: String::new(),
            });
        }
        if !r.is_success() {
            return Err(format!("get {flag}: {} {}", r.status, r.text()));
        }
        let f: Flag = r.json().map_err(|e| e.to_string())?;
        Ok(ExposureStatus {
            percent: f.percent,
            enabled: f.enabled,
            revision: f.revision,
        })
    }
}

rollcage_sdk::export_exposure!(RemoteFlags);
