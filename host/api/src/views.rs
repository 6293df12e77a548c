//! What the API answers and accepts, as plain serializable types with
//! their OpenAPI schemas. A run's detail is built from its log, so it shows
//! exactly what the engine recorded.

use std::collections::BTreeMap;

use rollcage_store::{Event, Run};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/runs`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The pipeline to run.
    pub pipeline: String,
    /// A SemVer version such as `1.4.0`.
    pub release: String,
    /// Release notes, passed to notifiers.
    #[serde(default)]
    pub notes: Option<String>,
    /// Run parameters (such as `jira_issue`), passed to plugins.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Only these stages, in pipeline order; all when absent.
    #[serde(default)]
    pub stages: Option<Vec<String>>,
}

/// `POST /v1/runs/{id}/rollback`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRun {
    /// The environment to take back (default: the run's last stage).
    #[serde(default)]
    pub environment: Option<String>,
}

/// A run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub pipeline: String,
    pub release: String,
    pub notes: Option<String>,
    pub params: BTreeMap<String, String>,
    pub stages: Vec<String>,
    pub started_by: String,
    pub config_hash: String,
    /// `queued`, `running`, `awaiting_approval`, `succeeded`,
    /// `rolled_back` or `failed`.
    pub status: String,
    /// The stage in progress, waiting or queued for; for a finished run,
    /// the stage it stopped in (its last stage if it succeeded).
    pub stage: Option<String>,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl From<&Run> for RunView {
    fn from(r: &Run) -> Self {
        RunView {
            id: r.id.clone(),
            pipeline: r.run.pipeline.clone(),
            release: r.run.release.clone(),
            notes: r.run.notes.clone(),
            params: r.run.params.iter().cloned().collect(),
            stages: r.run.stages.clone(),
            started_by: r.run.started_by.clone(),
            config_hash: r.run.config_hash.clone(),
            status: r.status.as_str().to_string(),
            // Not started yet: the first stage is the one it waits for.
            stage: r.stage.clone().or_else(|| r.run.stages.first().cloned()),
            reason: r.reason.clone(),
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        }
    }
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One entry of a run's log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Position in the run's log, from 1: the SSE event id.
    pub seq: u64,
    pub at_ms: u64,
    /// `run-started`, `stage-started`, `intent`, `step`, `analysis`,
    /// `awaiting-approval`, `decision`, `approved`, `rolling-back`,
    /// `rollback-step`, `notification`, `stage-finished`, `run-finished`...
    /// A `run-started` entry's `data.plugins` maps each plugin the run
    /// loaded to the `sha256:` digest of its component.
    pub kind: String,
    pub stage: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView {
            seq: e.seq,
            at_ms: e.at_ms,
            kind: e.kind.clone(),
            stage: e.stage.clone(),
            data: e.data.clone(),
        }
    }
}

/// An executed action and its outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub at_ms: u64,
    /// The action, as the strategy asked for it.
    #[schema(value_type = Object)]
    pub action: Value,
    #[schema(value_type = Object)]
    pub outcome: Value,
}

/// One analysis and every measurement taken in it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AnalysisView {
    pub at_ms: u64,
    pub outcome: String,
    /// Per check: verdict, value and detail, or the error.
    #[schema(value_type = Vec<Object>)]
    pub measurements: Vec<Value>,
}

/// A notification sent (or given up on).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationView {
    pub at_ms: u64,
    pub notifier: String,
    pub attempts: u64,
    pub error: Option<String>,
}

/// A person's decision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecisionView {
    pub at_ms: u64,
    /// `approve` or `abort`.
    pub action: String,
    pub by: String,
}

/// One stage of a run, from its log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageView {
    pub name: String,
    /// `pending`, `running`, `awaiting_approval`, `succeeded`, `failed`
    /// or `rolled_back`.
    pub status: String,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub reason: Option<String>,
    pub steps: Vec<StepView>,
    pub analyses: Vec<AnalysisView>,
    /// Actions of the rollback plan, as executed.
    #[schema(value_type = Vec<Object>)]
    pub rollback: Vec<Value>,
    pub decisions: Vec<DecisionView>,
    pub notifications: Vec<NotificationView>,
}

/// A run with everything that happened in it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunDetail {
    pub run: RunView,
    pub stages: Vec<StageView>,
    /// Notifications about the run as a whole (started, succeeded).
    pub notifications: Vec<NotificationView>,
    /// How many entries its log has (the last SSE event id).
    pub events: u64,
    /// The `sha256:` digest of the component each plugin of the run was
    /// loaded from, by the name the configuration gives it (builtins,
    /// files and registry components alike), as recorded when the run
    /// started; empty before it has.
    pub plugins: BTreeMap<String, String>,
}

impl RunDetail {
    /// The detail of `run` from its whole log.
    pub fn build(run: &Run, log: &[Event]) -> RunDetail {
        let mut stages: Vec<StageView> = run
            .run
            .stages
            .iter()
            .map(|name| StageView {
                name: name.clone(),
                status: "pending".into(),
                started_ms: None,
                finished_ms: None,
                reason: None,
                steps: Vec::new(),
                analyses: Vec::new(),
                rollback: Vec::new(),
                decisions: Vec::new(),
                notifications: Vec::new(),
            })
            .collect();
        let mut notifications = Vec::new();
        let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        for e in log {
            let notification = || NotificationView {
                at_ms: e.at_ms,
                notifier: str_of(&e.data, "notifier").unwrap_or_default(),
                attempts: e.data.get("attempts").and_then(Value::as_u64).unwrap_or(0),
                error: str_of(&e.data, "error"),
            };
            let Some(stage) = e
                .stage
                .as_deref()
                .and_then(|s| stages.iter_mut().find(|v| v.name == s))
            else {
                if e.kind == "notification" {
                    notifications.push(notification());
                }
                continue;
            };
            let first_touch = stage.started_ms.is_none();
            if first_touch {
                stage.started_ms = Some(e.at_ms);
                stage.status = "running".into();
            }
            match e.kind.as_str() {
                "step" => stage.steps.push(StepView {
                    at_ms: e.at_ms,
                    action: e.data.get("action").cloned().unwrap_or(Value::Null),
                    outcome: e.data.get("outcome").cloned().unwrap_or(Value::Null),
                }),
                "analysis" => stage.analyses.push(AnalysisView {
                    at_ms: e.at_ms,
                    outcome: str_of(&e.data, "outcome").unwrap_or_default(),
                    measurements: e
                        .data
                        .get("measurements")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                }),
                "rollback-step" => stage.rollback.push(e.data.clone()),
                // A rollback after promotion: the actions taken on the way
                // back (its pauses and analyses are not waited for).
                "restore-step" => {
                    let action = e.data.get("action").cloned().unwrap_or(Value::Null);
                    if !matches!(action["type"].as_str(), Some("pause" | "analyze")) {
                        stage.rollback.push(action);
                    }
                }
                "rolling-back" => stage.reason = str_of(&e.data, "reason"),
                "awaiting-approval" => stage.status = "awaiting_approval".into(),
                "approved" if stage.status == "awaiting_approval" => {
                    stage.status = "running".into()
                }
                "decision" => stage.decisions.push(DecisionView {
                    at_ms: e.at_ms,
                    action: str_of(&e.data, "action").unwrap_or_default(),
                    by: str_of(&e.data, "by").unwrap_or_default(),
                }),
                "notification" => stage.notifications.push(notification()),
                "stage-finished" | "refused" => {
                    stage.finished_ms = Some(e.at_ms);
                    stage.status = str_of(&e.data, "result").unwrap_or_else(|| "failed".into());
                    if let Some(r) = str_of(&e.data, "reason") {
                        stage.reason = Some(r);
                    }
                }
                _ => {}
            }
            // A step after a pause for a person: moving again.
            if e.kind == "step" && stage.status == "awaiting_approval" {
                stage.status = "running".into();
            }
        }
        let mut view = RunView::from(run);
        // The stage from the log, which the summary field can lag behind.
        view.stage =
            rollcage_engine::position::acting_stage(&run.run.stages, log).map(str::to_string);
        let plugins = log
            .iter()
            .find(|e| e.kind == "run-started")
            .and_then(|e| e.data.get("plugins"))
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .filter_map(|(name, d)| Some((name.clone(), d.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        RunDetail {
            run: view,
            stages,
            notifications,
            events: log.last().map(|e| e.seq).unwrap_or(0),
            plugins,
        }
    }
}

/// One slot of a service in an environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlotView {
    pub name: String,
    pub release: String,
    pub desired: u32,
    pub ready: u32,
    /// Percent of traffic.
    pub weight: u32,
}

/// A pipeline's service as an environment runs it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceView {
    pub pipeline: String,
    pub service: String,
    pub slots: Vec<SlotView>,
    /// Why the status could not be read, if it could not.
    pub error: Option<String>,
}

/// An environment: its plan, what runs in it, and its last run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnvironmentView {
    pub name: String,
    pub provider: String,
    pub strategy: String,
    pub approval: bool,
    pub require_different_approver: bool,
    pub window: Option<String>,
    pub services: Vec<ServiceView>,
    pub last_run: Option<RunView>,
}

/// Counters of one call kind of a plugin.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallView {
    pub calls: u64,
    pub errors: u64,
    /// Refused by the open circuit breaker.
    pub rejected: u64,
    pub mean_ms: Option<f64>,
}

/// A loaded plugin instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginView {
    pub id: String,
    pub kind: String,
    pub component: String,
    pub allow_hosts: Vec<String>,
    /// Names of the secrets it may read (never their values).
    pub secrets: Vec<String>,
    pub memory_mb: u64,
    pub timeout_ms: u64,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// By call kind (`decide`, `check`, `notify`, `apply-slot`...).
    pub calls: BTreeMap<String, CallView>,
}

/// A line of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: u64,
    pub at_ms: u64,
    pub actor: String,
    /// `start`, `approve`, `abort`.
    pub action: String,
    pub run_id: Option<String>,
    pub config_hash: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is not.
    pub status: String,
    pub checks: BTreeMap<String, String>,
}

/// The body of every error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `unauthorized`, `forbidden`,
    /// `not_found`, `no_such_run`, `malformed_json`, `invalid_body`,
    /// `unknown_pipeline`, `invalid_release`, `unknown_stage`,
    /// `not_waiting`, `finished`, `same_approver`, `rate_limited`,
    /// `too_many_failures`, `too_many_runs`, `too_many_streams`,
    /// `invalid_stages`, `invalid_path`, `body_too_large`,
    /// `request_timeout`, `timeout`, `internal`...
    pub code: String,
    pub message: String,
    /// Present where there is more to say (the field at fault, the names
    /// that would have been valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_store::{NewRun, RunStatus};
    use serde_json::json;

    #[test]
    fn a_rollback_after_promotion_shows_its_actions_but_not_its_skipped_waits() {
        let run = Run {
            id: "r1".into(),
            run: NewRun {
                pipeline: "web".into(),
                release: "1.2.0".into(),
                notes: None,
                params: vec![],
                stages: vec!["production".into()],
                started_by: "ci".into(),
                config_hash: "h".into(),
            },
            status: RunStatus::RolledBack,
            stage: Some("production".into()),
            reason: Some("bake: check `root` failed".into()),
            created_ms: 1,
            updated_ms: 9,
        };
        let route = json!({"type": "route", "weights": [{"slot": "1.0.0", "weight": 100}]});
        let analyze = json!({"type": "analyze", "checks": [], "slot": "1.0.0"});
        let entry = |seq: u64, kind: &str, data: Value| Event {
            seq,
            at_ms: seq,
            kind: kind.into(),
            stage: Some("production".into()),
            data,
            epoch: 1,
        };
        let log = [
            entry(
                1,
                "rolling-back",
                json!({"reason": "bake: check `root` failed", "after_promotion": true, "to": "1.0.0"}),
            ),
            entry(
                2,
                "restore-step",
                json!({"action": analyze, "outcome": "analysis_passed"}),
            ),
            entry(3, "restore-step", json!({"action": route, "outcome": "ok"})),
            entry(
                4,
                "stage-finished",
                json!({"result": "rolled_back", "reason": "bake: check `root` failed"}),
            ),
        ];
        let d = RunDetail::build(&run, &log);
        let stage = &d.stages[0];
        assert_eq!(stage.status, "rolled_back");
        assert_eq!(stage.reason.as_deref(), Some("bake: check `root` failed"));
        assert_eq!(stage.rollback, [route]);
    }
}
