//! The five plugin traits the engine calls, the plugin identity types and the
//! one error type every plugin call returns.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::types::{
    Action, CheckTarget, DeployState, EnvironmentStatus, Event, ExposureStatus, Job, JobResult,
    Measurement, Problem, RouteWeight, SlotSpec, Target,
};

/// The id an operator gives a plugin instance (`[plugins.<id>]`).
///
/// Lower-case ASCII letters, digits and `-`, starting with a letter, at most
/// 64 characters: it shows up in logs, metrics labels and URLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginId(String);

/// Why a string is not a valid [`PluginId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid plugin id `{0}`: use lower-case letters, digits and `-`, starting with a letter, at most 64 characters"
)]
pub struct PluginIdError(pub String);

impl PluginId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PluginId {
    type Err = PluginIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(PluginId(s.to_string()))
        } else {
            Err(PluginIdError(s.to_string()))
        }
    }
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The five kinds of plugin, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    EnvironmentProvider,
    Strategy,
    HealthCheck,
    Notifier,
    Exposure,
}

/// The version of the plugin contract (`wit/`) the host is built against.
pub const WIT_CURRENT: &str = "0.2.0";

/// Every contract version the host serves, newest first.
pub const WIT_SERVED: [&str; 2] = ["0.2.0", "0.1.0"];

impl PluginKind {
    /// Every kind, in a stable order.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::EnvironmentProvider,
        PluginKind::Strategy,
        PluginKind::HealthCheck,
        PluginKind::Notifier,
        PluginKind::Exposure,
    ];

    /// The WIT world name (`environment-provider`, `strategy`, ...).
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::EnvironmentProvider => "environment-provider",
            PluginKind::Strategy => "strategy",
            PluginKind::HealthCheck => "health-check",
            PluginKind::Notifier => "notifier",
            PluginKind::Exposure => "exposure",
        }
    }

    /// The interface the world exports, without its version
    /// (`rollcage:plugin/strategy-api`, ...).
    pub fn export_name(self) -> &'static str {
        match self {
            PluginKind::EnvironmentProvider => "rollcage:plugin/provider-api",
            PluginKind::Strategy => "rollcage:plugin/strategy-api",
            PluginKind::HealthCheck => "rollcage:plugin/health-check-api",
            PluginKind::Notifier => "rollcage:plugin/notifier-api",
            PluginKind::Exposure => "rollcage:plugin/exposure-api",
        }
    }

    /// The interface the world exports in the current contract
    /// (`rollcage:plugin/strategy-api@0.2.0`, ...).
    pub fn export_interface(self) -> String {
        format!("{}@{WIT_CURRENT}", self.export_name())
    }

    /// The contract versions that have this kind: exposure plugins came with 0.2.0.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            PluginKind::Exposure => &["0.2.0"],
            _ => &WIT_SERVED,
        }
    }

    /// The contract version of an export name (`rollcage:plugin/strategy-api@0.1.0`
    /// is this kind's export in 0.1.0), if it is this kind's export in a served version.
    pub fn version_of_export(self, export: &str) -> Option<&'static str> {
        let version = export.strip_prefix(self.export_name())?.strip_prefix('@')?;
        self.versions().iter().copied().find(|v| *v == version)
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.world())
    }
}

impl FromStr for PluginKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PluginKind::ALL
            .into_iter()
            .find(|k| k.world() == s)
            .ok_or_else(|| {
                format!(
                    "unknown plugin kind `{s}`: expected one of environment-provider, strategy, health-check, notifier, exposure"
                )
            })
    }
}

/// Why a plugin call did not return a result. Every variant names the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The plugin ran and returned an error of its own.
    #[error("plugin `{plugin}` failed: {message}")]
    Failed { plugin: PluginId, message: String },
    /// The plugin rejected the parameters it was given.
    #[error("plugin `{plugin}` rejected its parameters: {}", problems.join("; "))]
    InvalidParams {
        plugin: PluginId,
        problems: Vec<String>,
    },
    /// The call ran past the plugin's time limit and was stopped.
    #[error("plugin `{plugin}` was stopped after its time limit of {limit_ms} ms")]
    Timeout { plugin: PluginId, limit_ms: u64 },
    /// The plugin tried to grow its memory past its limit and was stopped.
    #[error("plugin `{plugin}` was stopped at its memory limit of {limit_mb} MiB")]
    MemoryLimit { plugin: PluginId, limit_mb: u64 },
    /// The plugin reached another of its limits (`limits.<name>`): host
    /// resources, requests, bodies.
    #[error("plugin `{plugin}` hit its limit limits.{limit} = {value}: {detail}")]
    Limit {
        plugin: PluginId,
        limit: String,
        value: u64,
        detail: String,
    },
    /// The plugin used a capability it was not granted.
    #[error("plugin `{plugin}` was denied capability `{capability}`: {detail}")]
    Denied {
        plugin: PluginId,
        capability: String,
        detail: String,
    },
    /// The plugin crashed (a trap: a panic, an unreachable, a bad memory access).
    #[error("plugin `{plugin}` crashed: {message}")]
    Trap { plugin: PluginId, message: String },
    /// The host could not run the plugin at all.
    #[error("plugin `{plugin}` could not be run: {message}")]
    Host { plugin: PluginId, message: String },
}

impl PluginError {
    /// The plugin the error belongs to.
    pub fn plugin(&self) -> &PluginId {
        match self {
            PluginError::Failed { plugin, .. }
            | PluginError::InvalidParams { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::Limit { plugin, .. }
            | PluginError::Denied { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::Host { plugin, .. } => plugin,
        }
    }
}

/// Something every plugin handle can say about itself.
pub trait Plugin: Send + Sync {
    /// The instance id from the configuration.
    fn id(&self) -> &PluginId;
}

/// Drives a platform to a desired state. Every method is idempotent.
#[async_trait]
pub trait EnvironmentProvider: Plugin {
    /// Check one service's provider-specific spec (JSON) before any run
    /// uses it: every problem found, each naming its field. A provider that
    /// cannot check anything (one built for contract 0.1) finds nothing.
    async fn validate(&self, service_spec: &str) -> Result<Vec<Problem>, PluginError> {
        let _ = service_spec;
        Ok(Vec::new())
    }
    async fn prepare(&self, target: &Target) -> Result<(), PluginError>;
    async fn apply_slot(&self, target: &Target, spec: &SlotSpec) -> Result<(), PluginError>;
    async fn route(&self, target: &Target, weights: &[RouteWeight]) -> Result<(), PluginError>;
    async fn status(&self, target: &Target) -> Result<EnvironmentStatus, PluginError>;
    async fn remove_slot(&self, target: &Target, slot: &str) -> Result<(), PluginError>;
    async fn run_job(&self, target: &Target, job: &Job) -> Result<JobResult, PluginError>;
}

/// Decides how a release moves through an environment. Pure.
#[async_trait]
pub trait Strategy: Plugin {
    async fn validate(&self, params: &str) -> Result<(), PluginError>;
    async fn decide(&self, state: &DeployState) -> Result<Action, PluginError>;
    async fn rollback(&self, state: &DeployState) -> Result<Vec<Action>, PluginError>;
}

/// Takes one measurement of a slot's health.
#[async_trait]
pub trait HealthCheck: Plugin {
    async fn check(&self, target: &CheckTarget) -> Result<Measurement, PluginError>;
    /// The threshold the check holds values against, when its
    /// configuration states one (`pass_if`): recorded beside each value.
    fn threshold(&self) -> Option<crate::Threshold> {
        None
    }
}

/// Tells people what happened.
#[async_trait]
pub trait Notifier: Plugin {
    async fn notify(&self, event: &Event) -> Result<(), PluginError>;
}

/// Moves a feature flag's exposure in a flag service. Desired state:
/// repeating a call is harmless, so a resumed run repeats the one in flight.
#[async_trait]
pub trait ExposureControl: Plugin {
    /// Check the plugin's configuration (JSON): every problem found.
    async fn validate(&self, params: &str) -> Result<Vec<Problem>, PluginError>;
    /// Expose `flag` in `environment` to `percent` (0-100) of users.
    async fn set_exposure(
        &self,
        flag: &str,
        environment: &str,
        percent: u32,
    ) -> Result<(), PluginError>;
    /// The flag's exposure in `environment` as the flag service reports it.
    async fn get_exposure(
        &self,
        flag: &str,
        environment: &str,
    ) -> Result<ExposureStatus, PluginError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_name_their_contract_version() {
        let k = PluginKind::Strategy;
        assert_eq!(k.export_interface(), "rollcage:plugin/strategy-api@0.2.0");
        assert_eq!(
            k.version_of_export("rollcage:plugin/strategy-api@0.1.0"),
            Some("0.1.0")
        );
        assert_eq!(
            k.version_of_export("rollcage:plugin/strategy-api@0.3.0"),
            None
        );
        assert_eq!(
            PluginKind::Exposure.version_of_export("rollcage:plugin/exposure-api@0.1.0"),
            None
        );
        assert_eq!(
            PluginKind::Exposure.version_of_export("rollcage:plugin/exposure-api@0.2.0"),
            Some("0.2.0")
        );
    }

    #[test]
    fn plugin_ids_are_validated() {
        assert!("slack".parse::<PluginId>().is_ok());
        assert!("error-rate-2".parse::<PluginId>().is_ok());
        for bad in ["", "Slack", "2fast", "a_b", "a b", &"x".repeat(65)] {
            let err = bad.parse::<PluginId>().unwrap_err();
            assert_eq!(err, PluginIdError(bad.to_string()));
        }
    }

    #[test]
    fn kinds_round_trip_through_their_world_names() {
        for kind in PluginKind::ALL {
            assert_eq!(kind.world().parse::<PluginKind>(), Ok(kind));
        }
        assert!(
            "nope"
                .parse::<PluginKind>()
                .unwrap_err()
                .contains("unknown plugin kind")
        );
    }
}
