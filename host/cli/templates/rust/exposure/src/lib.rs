//! __NAME__: an exposure plugin. It shows a feature flag to a percent of
//! users in an environment, so that a release can be deployed dark and
//! exposed step by step (`{ expose = 10 }`, `{ expose = 50 }`...). This one
//! speaks a small REST API at `api_url`; replace the calls with your flag
//! service's:
//!
//! * `PUT {api_url}/flags/{flag}/{environment}` `{"percent": N}`
//! * `GET {api_url}/flags/{flag}/{environment}` → `{"percent": N, "enabled": bool, "revision": "..."}`
//!
//! `set_exposure` is desired state, never a delta: the engine repeats it
//! after a crash and calls it with the percent from before a run to roll
//! back, so repeating it must be harmless.

use rollcage_sdk::Exposure;
use rollcage_sdk::http::{Request, encode};
use rollcage_sdk::types::{ExposureStatus, Problem};
use serde::Deserialize;

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The flag service, such as `http://127.0.0.1:8080`.
    api_url: String,
}

/// The config's problems, each naming its key.
fn problems(params: &str) -> Vec<Problem> {
    let problem = |field: &str, message: String| Problem {
        field: field.into(),
        message,
    };
    match serde_json::from_str::<Config>(params) {
        Err(e) => vec![problem("", e.to_string())],
        Ok(c) if !c.api_url.starts_with("http://") && !c.api_url.starts_with("https://") => {
            vec![problem("api_url", format!("`{}` is not an http:// or https:// URL", c.api_url))]
        }
        Ok(_) => Vec::new(),
    }
}

fn flag_url(flag: &str, environment: &str) -> Result<String, String> {
    let config: Config = rollcage_sdk::config()?;
    Ok(format!(
        "{}/flags/{}/{}",
        config.api_url.trim_end_matches('/'),
        encode(flag),
        encode(environment)
    ))
}

#[derive(Deserialize)]
struct StatusJson {
    percent: u32,
    enabled: bool,
    #[serde(default)]
    revision: String,
}

struct Plugin;

impl Exposure for Plugin {
    fn validate(params: String) -> Result<(), Vec<Problem>> {
        let found = problems(&params);
        if found.is_empty() { Ok(()) } else { Err(found) }
    }

    fn set_exposure(flag: String, environment: String, percent: u32) -> Result<(), String> {
        if percent > 100 {
            return Err(format!("flag `{flag}` in `{environment}`: {percent}% is not a percent"));
        }
        let url = flag_url(&flag, &environment)?;
        let body = serde_json::json!({ "percent": percent });
        let r = Request::put(&url)
            .json(&body)
            .map_err(|e| e.to_string())?
            .send()
            .map_err(|e| format!("flag `{flag}` in `{environment}`: {e}"))?;
        if !r.is_success() {
            return Err(format!(
                "flag `{flag}` in `{environment}`: the flag service answered {}: {}",
                r.status,
                r.text()
            ));
        }
        Ok(())
    }

    fn get_exposure(flag: String, environment: String) -> Result<ExposureStatus, String> {
        let url = flag_url(&flag, &environment)?;
        let r = Request::get(&url)
            .send()
            .map_err(|e| format!("flag `{flag}` in `{environment}`: {e}"))?;
        if !r.is_success() {
            return Err(format!(
                "flag `{flag}` in `{environment}`: the flag service answered {}: {}",
                r.status,
                r.text()
            ));
        }
        let s: StatusJson = r.json().map_err(|e| e.to_string())?;
        Ok(ExposureStatus {
            percent: s.percent,
            enabled: s.enabled,
            revision: s.revision,
        })
    }
}

rollcage_sdk::export_exposure!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_checked_key_by_key() {
        assert!(problems(r#"{"api_url": "http://127.0.0.1:8080"}"#).is_empty());
        let found = problems(r#"{"api_url": "127.0.0.1:8080"}"#);
        assert_eq!(found[0].field, "api_url");
        assert!(!problems(r#"{"api_ur": "http://x"}"#).is_empty());
    }
}
