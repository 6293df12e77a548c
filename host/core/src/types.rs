//! Domain types shared by the engine and every plugin kind; the Rust side of
//! `wit/types.wit`. Serializable so that the store can record them as they are.

use serde::{Deserialize, Serialize};

/// A release of a service: a SemVer version plus what the operator said of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Release {
    pub version: String,
    pub notes: Option<String>,
    pub params: Vec<(String, String)>,
}

impl Release {
    /// A release with a version and nothing else.
    pub fn new(version: impl Into<String>) -> Self {
        Release {
            version: version.into(),
            ..Release::default()
        }
    }
}

/// One service in one environment, with the provider-specific service definition as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Target {
    pub environment: String,
    pub service: String,
    pub service_spec: String,
}

/// The desired state of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSpec {
    pub name: String,
    pub release: Release,
    pub replicas: u32,
}

/// The observed state of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SlotStatus {
    pub name: String,
    pub release: String,
    pub desired: u32,
    pub ready: u32,
    pub endpoints: Vec<String>,
}

/// The share of traffic (percent) one slot receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteWeight {
    pub slot: String,
    pub weight: u32,
}

/// The observed state of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EnvironmentStatus {
    pub slots: Vec<SlotStatus>,
    pub weights: Vec<RouteWeight>,
}

impl EnvironmentStatus {
    /// The slot with this name, if the provider knows of it.
    pub fn slot(&self, name: &str) -> Option<&SlotStatus> {
        self.slots.iter().find(|s| s.name == name)
    }
}

/// A one-off command run to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub exit_code: i32,
    pub output: String,
}

/// What a pause waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    DurationMs(u64),
    Approval,
}

/// A request to run analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisRequest {
    pub checks: Vec<String>,
    pub slot: String,
}

/// A problem a plugin's `validate` found, naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Dotted path of the field within the validated JSON (`image`,
    /// `labels.app`); empty for the whole value.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A change of a feature flag's exposure, asked for by a strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureChange {
    /// Id of the exposure plugin instance; empty means the environment's `exposure`.
    pub control: String,
    /// The flag's name in the flag service.
    pub flag: String,
    /// Share of users who get the flag, 0-100.
    pub percent: u32,
}

/// The exposure a health check measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureTarget {
    pub flag: String,
    pub percent: u32,
}

/// A flag's exposure in one environment as the flag service reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExposureStatus {
    /// Share of users who get the flag, 0-100 (0 when the flag is disabled).
    pub percent: u32,
    /// Whether the flag is enabled in the environment at all.
    pub enabled: bool,
    /// The flag service's revision of the flag, for the log; empty when none.
    pub revision: String,
}

impl ExposureStatus {
    /// The share of users who actually get the flag: 0 when it is disabled.
    pub fn effective_percent(&self) -> u32 {
        if self.enabled {
            self.percent.min(100)
        } else {
            0
        }
    }
}

/// The next thing the engine should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Action {
    ApplySlot(SlotSpec),
    Route { weights: Vec<RouteWeight> },
    RemoveSlot { slot: String },
    Pause { pause: Pause },
    Analyze(AnalysisRequest),
    Expose(ExposureChange),
    Done,
}

impl std::fmt::Display for Action {
    /// One line for a person: `route canary=10% stable=90%`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::ApplySlot(s) => write!(
                f,
                "apply slot {}: {} x{}",
                s.name, s.release.version, s.replicas
            ),
            Action::Route { weights } => {
                f.write_str("route")?;
                for w in weights {
                    write!(f, " {}={}%", w.slot, w.weight)?;
                }
                Ok(())
            }
            Action::RemoveSlot { slot } => write!(f, "remove slot {slot}"),
            Action::Pause {
                pause: Pause::DurationMs(ms),
            } => write!(f, "pause {}", crate::duration::format(*ms)),
            Action::Pause {
                pause: Pause::Approval,
            } => f.write_str("pause for approval"),
            Action::Analyze(r) if r.checks.is_empty() => write!(f, "analyze {}", r.slot),
            Action::Analyze(r) => write!(f, "analyze {} ({})", r.slot, r.checks.join(", ")),
            Action::Expose(e) if e.control.is_empty() => {
                write!(f, "expose {} {}%", e.flag, e.percent)
            }
            Action::Expose(e) => write!(f, "expose {} {}% (via {})", e.flag, e.percent, e.control),
            Action::Done => f.write_str("done"),
        }
    }
}

/// How an executed action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "reason")]
pub enum Outcome {
    Ok,
    AnalysisPassed,
    AnalysisFailed(String),
    Failed(String),
}

/// One executed action and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub action: Action,
    pub outcome: Outcome,
}

/// Everything a strategy needs to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeployState {
    pub environment: String,
    pub release: Release,
    pub stable: Option<Release>,
    pub replicas: u32,
    pub params: String,
    pub history: Vec<StepRecord>,
    pub status: EnvironmentStatus,
}

/// The verdict of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// One health-check measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub verdict: Verdict,
    pub value: Option<f64>,
    pub detail: String,
}

/// What a health check measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CheckTarget {
    pub environment: String,
    pub slot: String,
    pub release: String,
    pub endpoints: Vec<String>,
    /// The flag exposure in force when the last strategy step changed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<ExposureTarget>,
}

/// Lifecycle events notifiers receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RunStarted,
    StageStarted,
    AwaitingApproval,
    Step,
    AnalysisFailed,
    RolledBack,
    Succeeded,
    Failed,
}

/// Something that happened in a deployment run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub run_id: String,
    pub pipeline: String,
    pub environment: Option<String>,
    pub release: Release,
    pub message: String,
    pub fields: Vec<(String, String)>,
    pub url: Option<String>,
    pub timestamp_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_reads_as_flag_and_percent() {
        let mut change = ExposureChange {
            control: String::new(),
            flag: "checkout-v2".into(),
            percent: 10,
        };
        assert_eq!(
            Action::Expose(change.clone()).to_string(),
            "expose checkout-v2 10%"
        );
        change.control = "flags".into();
        assert_eq!(
            Action::Expose(change).to_string(),
            "expose checkout-v2 10% (via flags)"
        );
    }

    #[test]
    fn a_disabled_flag_exposes_nobody() {
        let s = ExposureStatus {
            percent: 40,
            enabled: false,
            revision: String::new(),
        };
        assert_eq!(s.effective_percent(), 0);
    }

    #[test]
    fn check_targets_recorded_before_exposure_still_read() {
        let t: CheckTarget = serde_json::from_str(
            r#"{"environment":"production","slot":"canary","release":"1.0.0","endpoints":[]}"#,
        )
        .unwrap();
        assert_eq!(t.exposure, None);
    }
}
