//! The JSON of `plugins test --input` and `--print-input`: the WIT's types
//! (`wit/types.wit`) spelled as the WIT spells them (`run-id`,
//! `rolled-back`, `apply-slot`), so that a plugin author reads one
//! vocabulary in the contract, the input and the output. The host's own
//! types keep their stored (snake_case) form; this module only converts.
//!
//! A record is an object of its fields; an `option` is `null` or the
//! value; a `tuple` a two-element list; an `enum` its case's name; a
//! `variant` its case's name when the case carries nothing (`"done"`), else
//! an object of one key, the case's name, holding what it carries
//! (`{"route": [{"slot": "1.4.0", "weight": 10}]}`). Options and lists may
//! be left out of an input; they are then `null` and empty.

use rollcage_core as core;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Release {
    version: String,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    params: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Target {
    environment: String,
    service: String,
    service_spec: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SlotSpec {
    name: String,
    release: Release,
    replicas: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SlotStatus {
    name: String,
    release: String,
    desired: u32,
    ready: u32,
    #[serde(default)]
    endpoints: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RouteWeight {
    slot: String,
    weight: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EnvironmentStatus {
    #[serde(default)]
    slots: Vec<SlotStatus>,
    #[serde(default)]
    weights: Vec<RouteWeight>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pause {
    Duration(u64),
    Approval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AnalysisRequest {
    #[serde(default)]
    checks: Vec<String>,
    slot: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    ApplySlot(SlotSpec),
    Route(Vec<RouteWeight>),
    RemoveSlot(String),
    Pause(Pause),
    Analyze(AnalysisRequest),
    // Its fields (`control`, `flag`, `percent`) read the same in both spellings.
    Expose(core::ExposureChange),
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    AnalysisPassed,
    AnalysisFailed(String),
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StepRecord {
    action: Action,
    outcome: Outcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeployState {
    environment: String,
    release: Release,
    #[serde(default)]
    stable: Option<Release>,
    replicas: u32,
    params: String,
    #[serde(default)]
    history: Vec<StepRecord>,
    status: EnvironmentStatus,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Measurement {
    verdict: Verdict,
    value: Option<f64>,
    detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CheckTarget {
    environment: String,
    slot: String,
    release: String,
    #[serde(default)]
    endpoints: Vec<String>,
    // Its fields (`flag`, `percent`) read the same in both spellings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exposure: Option<core::ExposureTarget>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Event {
    kind: EventKind,
    run_id: String,
    pipeline: String,
    #[serde(default)]
    environment: Option<String>,
    release: Release,
    message: String,
    #[serde(default)]
    fields: Vec<(String, String)>,
    #[serde(default)]
    url: Option<String>,
    timestamp_ms: u64,
}

/// An event kind by its WIT name (`rolled-back`), or a message listing them.
pub fn event_kind(name: &str) -> Result<core::EventKind, String> {
    serde_json::from_value::<EventKind>(serde_json::Value::String(name.to_string()))
        .map(Into::into)
        .map_err(|_| {
            format!(
                "unknown event kind `{name}`: expected one of run-started, stage-started, awaiting-approval, step, analysis-failed, rolled-back, succeeded, failed"
            )
        })
}

/// `value` in WIT spelling: any of this module's types, as JSON.
pub fn to_value<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).expect("plain data serializes")
}

/// Conversions both ways between a WIT-spelled record and the host's, field
/// by field.
macro_rules! both_ways {
    ($wit:ident <-> $core:path { $($field:ident),* $(,)? }) => {
        impl From<$wit> for $core {
            fn from(w: $wit) -> Self {
                Self { $($field: w.$field.into()),* }
            }
        }
        impl From<$core> for $wit {
            fn from(c: $core) -> Self {
                Self { $($field: c.$field.into()),* }
            }
        }
    };
}

/// A list, element by element.
fn list<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(B::from).collect()
}

both_ways!(Release <-> core::Release { version, notes, params });
both_ways!(Target <-> core::Target { environment, service, service_spec });
both_ways!(SlotSpec <-> core::SlotSpec { name, release, replicas });
both_ways!(SlotStatus <-> core::SlotStatus { name, release, desired, ready, endpoints });
both_ways!(RouteWeight <-> core::RouteWeight { slot, weight });
both_ways!(AnalysisRequest <-> core::AnalysisRequest { checks, slot });
both_ways!(StepRecord <-> core::StepRecord { action, outcome });
both_ways!(CheckTarget <-> core::CheckTarget { environment, slot, release, endpoints, exposure });

impl From<EnvironmentStatus> for core::EnvironmentStatus {
    fn from(w: EnvironmentStatus) -> Self {
        Self {
            slots: list(w.slots),
            weights: list(w.weights),
        }
    }
}

impl From<core::EnvironmentStatus> for EnvironmentStatus {
    fn from(c: core::EnvironmentStatus) -> Self {
        Self {
            slots: list(c.slots),
            weights: list(c.weights),
        }
    }
}

impl From<Pause> for core::Pause {
    fn from(w: Pause) -> Self {
        match w {
            Pause::Duration(ms) => core::Pause::DurationMs(ms),
            Pause::Approval => core::Pause::Approval,
        }
    }
}

impl From<core::Pause> for Pause {
    fn from(c: core::Pause) -> Self {
        match c {
            core::Pause::DurationMs(ms) => Pause::Duration(ms),
            core::Pause::Approval => Pause::Approval,
        }
    }
}

impl From<Action> for core::Action {
    fn from(w: Action) -> Self {
        match w {
            Action::ApplySlot(s) => core::Action::ApplySlot(s.into()),
            Action::Route(weights) => core::Action::Route {
                weights: list(weights),
            },
            Action::RemoveSlot(slot) => core::Action::RemoveSlot { slot },
            Action::Pause(p) => core::Action::Pause { pause: p.into() },
            Action::Analyze(r) => core::Action::Analyze(r.into()),
            Action::Expose(e) => core::Action::Expose(e),
            Action::Done => core::Action::Done,
        }
    }
}

impl From<core::Action> for Action {
    fn from(c: core::Action) -> Self {
        match c {
            core::Action::ApplySlot(s) => Action::ApplySlot(s.into()),
            core::Action::Route { weights } => Action::Route(list(weights)),
            core::Action::RemoveSlot { slot } => Action::RemoveSlot(slot),
            core::Action::Pause { pause } => Action::Pause(pause.into()),
            core::Action::Analyze(r) => Action::Analyze(r.into()),
            core::Action::Expose(e) => Action::Expose(e),
            core::Action::Done => Action::Done,
        }
    }
}

impl From<Outcome> for core::Outcome {
    fn from(w: Outcome) -> Self {
        match w {
            Outcome::Ok => core::Outcome::Ok,
            Outcome::AnalysisPassed => core::Outcome::AnalysisPassed,
            Outcome::AnalysisFailed(r) => core::Outcome::AnalysisFailed(r),
            Outcome::Failed(r) => core::Outcome::Failed(r),
        }
    }
}

impl From<core::Outcome> for Outcome {
    fn from(c: core::Outcome) -> Self {
        match c {
            core::Outcome::Ok => Outcome::Ok,
            core::Outcome::AnalysisPassed => Outcome::AnalysisPassed,
            core::Outcome::AnalysisFailed(r) => Outcome::AnalysisFailed(r),
            core::Outcome::Failed(r) => Outcome::Failed(r),
        }
    }
}

impl From<DeployState> for core::DeployState {
    fn from(w: DeployState) -> Self {
        Self {
            environment: w.environment,
            release: w.release.into(),
            stable: w.stable.map(Into::into),
            replicas: w.replicas,
            params: w.params,
            history: list(w.history),
            status: w.status.into(),
        }
    }
}

impl From<core::DeployState> for DeployState {
    fn from(c: core::DeployState) -> Self {
        Self {
            environment: c.environment,
            release: c.release.into(),
            stable: c.stable.map(Into::into),
            replicas: c.replicas,
            params: c.params,
            history: list(c.history),
            status: c.status.into(),
        }
    }
}

impl From<core::Verdict> for Verdict {
    fn from(c: core::Verdict) -> Self {
        match c {
            core::Verdict::Pass => Verdict::Pass,
            core::Verdict::Fail => Verdict::Fail,
            core::Verdict::Inconclusive => Verdict::Inconclusive,
        }
    }
}

impl From<core::Measurement> for Measurement {
    fn from(c: core::Measurement) -> Self {
        Self {
            verdict: c.verdict.into(),
            value: c.value,
            detail: c.detail,
        }
    }
}

impl From<EventKind> for core::EventKind {
    fn from(w: EventKind) -> Self {
        match w {
            EventKind::RunStarted => core::EventKind::RunStarted,
            EventKind::StageStarted => core::EventKind::StageStarted,
            EventKind::AwaitingApproval => core::EventKind::AwaitingApproval,
            EventKind::Step => core::EventKind::Step,
            EventKind::AnalysisFailed => core::EventKind::AnalysisFailed,
            EventKind::RolledBack => core::EventKind::RolledBack,
            EventKind::Succeeded => core::EventKind::Succeeded,
            EventKind::Failed => core::EventKind::Failed,
        }
    }
}

impl From<core::EventKind> for EventKind {
    fn from(c: core::EventKind) -> Self {
        match c {
            core::EventKind::RunStarted => EventKind::RunStarted,
            core::EventKind::StageStarted => EventKind::StageStarted,
            core::EventKind::AwaitingApproval => EventKind::AwaitingApproval,
            core::EventKind::Step => EventKind::Step,
            core::EventKind::AnalysisFailed => EventKind::AnalysisFailed,
            core::EventKind::RolledBack => EventKind::RolledBack,
            core::EventKind::Succeeded => EventKind::Succeeded,
            core::EventKind::Failed => EventKind::Failed,
        }
    }
}

impl From<Event> for core::Event {
    fn from(w: Event) -> Self {
        Self {
            kind: w.kind.into(),
            run_id: w.run_id,
            pipeline: w.pipeline,
            environment: w.environment,
            release: w.release.into(),
            message: w.message,
            fields: w.fields,
            url: w.url,
            timestamp_ms: w.timestamp_ms,
        }
    }
}

impl From<core::Event> for Event {
    fn from(c: core::Event) -> Self {
        Self {
            kind: c.kind.into(),
            run_id: c.run_id,
            pipeline: c.pipeline,
            environment: c.environment,
            release: c.release.into(),
            message: c.message,
            fields: c.fields,
            url: c.url,
            timestamp_ms: c.timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variants_and_enums_are_spelled_as_the_wit_spells_them() {
        let action = core::Action::Pause {
            pause: core::Pause::DurationMs(60_000),
        };
        assert_eq!(
            to_value(Action::from(action.clone())),
            json!({"pause": {"duration": 60000}})
        );
        assert_eq!(to_value(Action::from(core::Action::Done)), json!("done"));
        assert_eq!(
            to_value(Action::from(core::Action::RemoveSlot {
                slot: "1.3.2".into()
            })),
            json!({"remove-slot": "1.3.2"})
        );
        assert_eq!(
            to_value(Outcome::from(core::Outcome::AnalysisFailed("slow".into()))),
            json!({"analysis-failed": "slow"})
        );
        assert_eq!(event_kind("rolled-back"), Ok(core::EventKind::RolledBack));
        assert!(event_kind("rolled_back").is_err());
        // And back.
        let back: Action = serde_json::from_value(json!({"pause": {"duration": 60000}})).unwrap();
        assert_eq!(core::Action::from(back), action);
    }

    #[test]
    fn a_deploy_state_goes_there_and_back() {
        let state = core::DeployState {
            environment: "production".into(),
            release: core::Release::new("2.0.0"),
            stable: Some(core::Release::new("1.0.0")),
            replicas: 2,
            params: "{}".into(),
            history: vec![core::StepRecord {
                action: core::Action::Route {
                    weights: vec![core::RouteWeight {
                        slot: "2.0.0".into(),
                        weight: 100,
                    }],
                },
                outcome: core::Outcome::AnalysisPassed,
            }],
            status: core::EnvironmentStatus::default(),
        };
        let wit = to_value(DeployState::from(state.clone()));
        assert_eq!(
            wit["history"],
            json!([{"action": {"route": [{"slot": "2.0.0", "weight": 100}]}, "outcome": "analysis-passed"}])
        );
        let back: DeployState = serde_json::from_value(wit).unwrap();
        assert_eq!(core::DeployState::from(back), state);
        // A field of the host's spelling is refused, not ignored.
        let e = serde_json::from_value::<Event>(json!({"kind": "succeeded", "run_id": "r1"}));
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("unknown field `run_id`")
        );
    }
}
