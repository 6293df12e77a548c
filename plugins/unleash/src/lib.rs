//! `builtin:unleash`: exposes a feature flag to a percent of users through
//! Unleash's Admin API. In each environment of a flag the plugin owns one
//! `flexibleRollout` strategy (found by its title, `rollcage` by default,
//! created when absent with `stickiness: default` and `groupId: <flag>`),
//! sets its `rollout` and enables the environment. The same user stays
//! exposed as the percent grows: Unleash hashes the user id with the group
//! id, and the group id never changes.
//!
//! The plugin never creates or deletes flags: a flag belongs to the code
//! that reads it.

pub mod api;
pub mod config;

use rollcage_sdk::Exposure;
use rollcage_sdk::http::{Request, Response};
use rollcage_sdk::types::{ExposureStatus, Problem};
use serde_json::Value;

use api::{Call, Target, url_safe};
use config::Config;

/// The exposure plugin.
pub struct Unleash;

/// The config, or its problems in one message (they were reported field by
/// field by `validate` before any run).
fn load() -> Result<Config, String> {
    config::parse(&rollcage_sdk::config_json()).map_err(|problems| {
        let lines: Vec<String> = problems
            .into_iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect();
        format!("invalid config: {}", lines.join("; "))
    })
}

/// Where `flag` lives for Rollcage environment `environment`.
fn target(config: &Config, flag: &str, environment: &str) -> Result<Target, String> {
    let unleash_env = config.unleash_environment(environment);
    if !url_safe(flag) {
        return Err(format!(
            "flag `{flag}` in environment `{environment}`: not an Unleash flag name (letters, digits, `-_.~`)"
        ));
    }
    Ok(Target {
        project: config.project.clone(),
        flag: flag.to_string(),
        environment: unleash_env.to_string(),
        title: config.strategy_title.clone(),
    })
}

/// An Admin API session: the base URL and the token.
struct Admin<'a> {
    config: &'a Config,
    token: String,
    target: &'a Target,
}

impl Admin<'_> {
    fn open<'a>(config: &'a Config, target: &'a Target) -> Result<Admin<'a>, String> {
        let token = rollcage_sdk::secret(&config.token_secret)
            .map_err(|e| format!("{}: {e}", target.describe()))?;
        Ok(Admin {
            config,
            token,
            target,
        })
    }

    fn send(&self, call: &Call) -> Result<Response, String> {
        let url = format!("{}{}", self.config.base(), call.path);
        let mut request = Request::new(call.method, &url)
            .header("authorization", &self.token)
            .header("accept", "application/json")
            .header("user-agent", "rollcage-unleash/1");
        if let Some(body) = &call.body {
            request = request
                .json(body)
                .map_err(|e| format!("{}: {e}", self.target.describe()))?;
        }
        let response = request
            .send()
            .map_err(|e| format!("{}: {e}", self.target.describe()))?;
        if !response.is_success() {
            return Err(self.target.status_error(
                call.method,
                response.status,
                &response.text(),
                &self.config.token_secret,
            ));
        }
        Ok(response)
    }

    fn state(&self) -> Result<api::State, String> {
        let flag: Value = self
            .send(&Call {
                method: "GET",
                path: self.target.feature_path(),
                body: None,
            })?
            .json()
            .map_err(|e| format!("{}: {e}", self.target.describe()))?;
        self.target
            .state(&flag)
            .map_err(|e| format!("{}: {e}", self.target.describe()))
    }
}

impl Exposure for Unleash {
    fn validate(params: String) -> Result<(), Vec<Problem>> {
        config::parse(&params).map(|_| ()).map_err(|problems| {
            problems
                .into_iter()
                .map(|(field, message)| Problem { field, message })
                .collect()
        })
    }

    fn set_exposure(flag: String, environment: String, percent: u32) -> Result<(), String> {
        let config = load()?;
        let target = target(&config, &flag, &environment)?;
        // Unleash itself stores a rollout of 150: out of range never
        // reaches it.
        if percent > 100 {
            return Err(format!(
                "{}: exposure {percent}% is not a percent (0-100)",
                target.describe()
            ));
        }
        let admin = Admin::open(&config, &target)?;
        let state = admin.state()?;
        if !state.others.is_empty() && percent < 100 {
            rollcage_sdk::log::warn(&format!(
                "{}: other strategies are enabled there ({}); Unleash exposes a user when any strategy does, so more than {percent}% may see the flag",
                target.describe(),
                state.others.join(", ")
            ));
        }
        for call in target.plan(&state, percent) {
            admin.send(&call)?;
        }
        Ok(())
    }

    fn get_exposure(flag: String, environment: String) -> Result<ExposureStatus, String> {
        let config = load()?;
        let target = target(&config, &flag, &environment)?;
        let state = Admin::open(&config, &target)?.state()?;
        let rollout = state.ours.as_ref().map_or(0, |(_, r)| *r);
        Ok(ExposureStatus {
            percent: if state.enabled { rollout } else { 0 },
            enabled: state.enabled,
            revision: state.revision,
        })
    }
}

rollcage_sdk::export_exposure!(Unleash);
