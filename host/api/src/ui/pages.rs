//! The read-only pages and the view models their templates show: runs, a
//! run (with its charts), environments, plugins, the audit trail.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use rollcage_core::{Action, Threshold};
use rollcage_store::Event;
use serde_json::Value;

use super::chart::{self, Point};
use super::{Chrome, Signed, api_error_page, fmt, render, render_string};
use crate::AppState;
use crate::auth::Permission;
use crate::error::ApiError;
use crate::path::ApiPath;
use crate::routes::now_ms;
use crate::views::{RunDetail, RunView, StageView};

/// Run statuses, for the filter.
pub(crate) const STATUSES: [&str; 6] = [
    "queued",
    "running",
    "awaiting_approval",
    "succeeded",
    "rolled_back",
    "failed",
];

// ---------------------------------------------------------------- runs

pub(crate) struct RunRow {
    id: String,
    short_id: String,
    pipeline: String,
    release: String,
    status: String,
    stage: String,
    started_by: String,
    age: String,
    duration: String,
}

#[derive(Template)]
#[template(path = "runs_table.html")]
struct RunsTable {
    rows: Vec<RunRow>,
    more: bool,
    filtered: bool,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    chrome: Chrome,
    pipelines: Vec<String>,
    environments: Vec<String>,
    statuses: &'static [&'static str],
    filter_pipeline: String,
    filter_environment: String,
    filter_status: String,
    /// The filters, for the live table's fetches.
    query: String,
    table: String,
}

/// The runs the filters of `/ui/runs` select (the API's filters, checked
/// by the API's code), as rows, and whether the list was filtered.
async fn run_rows(state: &Arc<AppState>, raw: Option<String>) -> Result<RunsTable, ApiError> {
    // A filter left at "all" is no filter.
    let raw = raw.map(|q| {
        q.split('&')
            .filter(|p| !p.is_empty() && !p.ends_with('='))
            .collect::<Vec<_>>()
            .join("&")
    });
    let filtered = raw.as_deref().is_some_and(|q| !q.is_empty());
    let page = crate::routes::runs::list_runs(State(state.clone()), RawQuery(raw))
        .await?
        .0;
    let now = now_ms();
    Ok(RunsTable {
        more: page.next_cursor.is_some(),
        filtered,
        rows: page.runs.iter().map(|r| row(r, now)).collect(),
    })
}

fn row(r: &RunView, now: u64) -> RunRow {
    let finished = matches!(r.status.as_str(), "succeeded" | "rolled_back" | "failed");
    RunRow {
        id: r.id.clone(),
        short_id: r.id.chars().take(12).collect(),
        pipeline: r.pipeline.clone(),
        release: r.release.clone(),
        status: r.status.clone(),
        stage: r.stage.clone().unwrap_or_default(),
        started_by: r.started_by.clone(),
        age: fmt::age(r.created_ms, now),
        duration: if finished {
            fmt::duration(r.updated_ms.saturating_sub(r.created_ms))
        } else {
            format!("{} so far", fmt::duration(now.saturating_sub(r.created_ms)))
        },
    }
}

fn query_value(raw: Option<&str>, key: &str) -> String {
    raw.unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.replace('+', " ").replace("%5F", "_"))
        .unwrap_or_default()
}

/// `GET /ui/runs`.
pub(crate) async fn runs(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    let table = match run_rows(&state, raw.clone()).await {
        Ok(t) => t,
        Err(e) => return api_error_page(&signed, "Runs", &e),
    };
    let page = RunsPage {
        chrome: Chrome::new("Runs", "runs", Some(&signed)),
        pipelines: state.engine.pipelines().map(|p| p.name.clone()).collect(),
        environments: state
            .engine
            .environments()
            .map(|e| e.name.clone())
            .collect(),
        statuses: &STATUSES,
        filter_pipeline: query_value(raw.as_deref(), "pipeline"),
        filter_environment: query_value(raw.as_deref(), "environment"),
        filter_status: query_value(raw.as_deref(), "status"),
        query: raw.map(|q| format!("?{q}")).unwrap_or_default(),
        table: render_string(&table),
    };
    render(&page)
}

/// `GET /ui/runs/table`: the table alone, for the live page.
pub(crate) async fn runs_table(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    match run_rows(&state, raw).await {
        Ok(t) => render(&t),
        Err(e) => api_error_page(&signed, "Runs", &e),
    }
}

// ---------------------------------------------------------------- a run

pub(crate) struct RollbackBlock {
    stage: String,
    reason: String,
    steps: Vec<String>,
}

pub(crate) struct ActionButton {
    name: &'static str,
    label: &'static str,
    enabled: bool,
    /// Why not, when not enabled (the role needed).
    why: String,
    danger: bool,
}

pub(crate) struct StepLine {
    at: String,
    text: String,
    outcome: String,
    outcome_class: &'static str,
    bar: String,
}

pub(crate) struct ChartView {
    check: String,
    svg: String,
    caption: String,
}

pub(crate) struct NoteLine {
    state: &'static str,
    text: String,
}

pub(crate) struct StageBlock {
    name: String,
    status: String,
    touched: bool,
    gates: String,
    reason: Option<String>,
    pause: Option<String>,
    steps: Vec<StepLine>,
    charts: Vec<ChartView>,
    decisions: Vec<String>,
    notifications: Vec<NoteLine>,
}

pub(crate) struct RunBodyView {
    id: String,
    pipeline: String,
    release: String,
    status: String,
    stage: Option<String>,
    reason: Option<String>,
    started_by: String,
    created: String,
    duration: String,
    events: u64,
    params: String,
    notes: Option<String>,
    rollbacks: Vec<RollbackBlock>,
    actions: Vec<ActionButton>,
    stages: Vec<StageBlock>,
    notifications: Vec<NoteLine>,
    plugins: Vec<PluginLine>,
}

/// A plugin of the run and the digest of the component it was loaded from.
pub(crate) struct PluginLine {
    name: String,
    digest: String,
}

#[derive(Template)]
#[template(path = "run_body.html")]
struct RunBody {
    v: RunBodyView,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    chrome: Chrome,
    id: String,
    live: bool,
    body: String,
}

/// The run's view for `signed`, and whether it is finished.
async fn run_view(
    state: &AppState,
    signed: &Signed,
    id: &str,
) -> Result<(RunBodyView, bool), ApiError> {
    let (run, log) = state.engine.store().run_with_log(id).await?;
    let detail = RunDetail::build(&run, &log);
    let finished = run.status.is_finished();
    Ok((body_view(state, signed, &detail, &log), finished))
}

fn body_view(state: &AppState, signed: &Signed, d: &RunDetail, log: &[Event]) -> RunBodyView {
    let r = &d.run;
    let now = now_ms();
    let finished = matches!(r.status.as_str(), "succeeded" | "rolled_back" | "failed");
    let acting: Vec<String> = r.stage.iter().cloned().collect();
    let button = |name, label, danger, what: Permission, envs: &[String]| {
        let allowed = signed.may(what, envs);
        ActionButton {
            name,
            label,
            enabled: allowed.is_ok(),
            why: allowed.err().unwrap_or_default(),
            danger,
        }
    };
    let mut actions = Vec::new();
    if r.status == "awaiting_approval" {
        actions.push(button(
            "approve",
            "Approve",
            false,
            Permission::Decide,
            &acting,
        ));
    }
    if !finished {
        actions.push(button("abort", "Abort", true, Permission::Decide, &acting));
    } else {
        if r.status != "succeeded" {
            actions.push(button(
                "retry",
                "Retry",
                false,
                Permission::Deploy,
                &r.stages,
            ));
        }
        actions.push(button(
            "rollback",
            "Roll back",
            true,
            Permission::Deploy,
            &acting,
        ));
    }
    let rollbacks = d
        .stages
        .iter()
        .filter(|s| !s.rollback.is_empty() || s.status == "rolled_back")
        .map(|s| RollbackBlock {
            stage: s.name.clone(),
            reason: s
                .reason
                .clone()
                .unwrap_or_else(|| "no reason recorded".into()),
            steps: s.rollback.iter().map(action_text).collect(),
        })
        .collect();
    RunBodyView {
        id: r.id.clone(),
        pipeline: r.pipeline.clone(),
        release: r.release.clone(),
        status: r.status.clone(),
        stage: r.stage.clone(),
        reason: r.reason.clone(),
        started_by: r.started_by.clone(),
        created: fmt::time(r.created_ms),
        duration: if finished {
            fmt::duration(r.updated_ms.saturating_sub(r.created_ms))
        } else {
            String::new()
        },
        events: d.events,
        params: r
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        notes: r.notes.clone(),
        rollbacks,
        actions,
        stages: d
            .stages
            .iter()
            .map(|s| stage_block(state, s, log, now))
            .collect(),
        notifications: d.notifications.iter().map(note).collect(),
        plugins: d
            .plugins
            .iter()
            .map(|(name, digest)| PluginLine {
                name: name.clone(),
                digest: digest.clone(),
            })
            .collect(),
    }
}

fn stage_block(state: &AppState, s: &StageView, log: &[Event], now: u64) -> StageBlock {
    let mut gates = Vec::new();
    if let Some(env) = state.engine.environment(&s.name) {
        if env.approval {
            gates.push("approval".to_string());
        }
        if let Some(w) = &env.window {
            gates.push(format!("window {w}"));
        }
    }
    StageBlock {
        name: s.name.clone(),
        status: s.status.clone(),
        touched: s.started_ms.is_some(),
        gates: gates.join(", "),
        reason: s.reason.clone(),
        pause: pause_left(&s.name, log, now),
        steps: s
            .steps
            .iter()
            .map(|st| {
                let (outcome, outcome_class) = outcome_text(&st.outcome);
                let bar = match serde_json::from_value::<Action>(st.action.clone()) {
                    Ok(Action::Route { weights }) => chart::traffic(
                        &weights
                            .iter()
                            .map(|w| (w.slot.clone(), w.weight))
                            .collect::<Vec<_>>(),
                    ),
                    _ => String::new(),
                };
                StepLine {
                    at: fmt::time(st.at_ms),
                    text: action_text(&st.action),
                    outcome,
                    outcome_class,
                    bar,
                }
            })
            .collect(),
        charts: charts(s),
        decisions: s
            .decisions
            .iter()
            .map(|d| format!("{} by {} at {}", d.action, d.by, fmt::time(d.at_ms)))
            .collect(),
        notifications: s.notifications.iter().map(note).collect(),
    }
}

/// One chart per check of the stage, over every analysis in it.
fn charts(s: &StageView) -> Vec<ChartView> {
    let mut by_check: BTreeMap<String, (Vec<Point>, Option<Threshold>)> = BTreeMap::new();
    for a in &s.analyses {
        for m in &a.measurements {
            let check = m.get("check").and_then(Value::as_str).unwrap_or("?");
            let entry = by_check.entry(check.to_string()).or_default();
            if entry.1.is_none() {
                entry.1 = m
                    .get("threshold")
                    .and_then(|t| serde_json::from_value(t.clone()).ok());
            }
            entry.0.push(Point {
                value: m.get("value").and_then(Value::as_f64),
                verdict: m
                    .get("verdict")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_string(),
            });
        }
    }
    by_check
        .into_iter()
        .map(|(check, (points, threshold))| {
            let failed = points.iter().filter(|p| p.verdict == "fail").count();
            let last = points
                .iter()
                .rev()
                .find_map(|p| p.value)
                .map(chart::num)
                .unwrap_or_else(|| "none".into());
            ChartView {
                svg: chart::analysis(&check, &points, threshold),
                caption: format!(
                    "{check}: {} measurement(s), {failed} failed, last value {last}{}",
                    points.len(),
                    threshold
                        .map(|t| format!("; passes if {t}"))
                        .unwrap_or_else(|| "; no threshold stated".into())
                ),
                check,
            }
        })
        .collect()
}

/// `pause 30s: 12s left` while a stage waits out a timed pause.
fn pause_left(stage: &str, log: &[Event], now: u64) -> Option<String> {
    let in_stage: Vec<&Event> = log
        .iter()
        .filter(|e| e.stage.as_deref() == Some(stage))
        .collect();
    let last_intent = in_stage.iter().rposition(|e| e.kind == "intent")?;
    let e = in_stage[last_intent];
    // Done once its step is logged.
    if in_stage[last_intent..].iter().any(|x| x.kind == "step") {
        return None;
    }
    match serde_json::from_value::<Action>(e.data.clone()).ok()? {
        Action::Pause {
            pause: rollcage_core::Pause::DurationMs(ms),
        } => {
            let left = (e.at_ms + ms).saturating_sub(now);
            Some(format!(
                "Pausing for {}: {} left.",
                fmt::duration(ms),
                fmt::duration(left)
            ))
        }
        Action::Pause {
            pause: rollcage_core::Pause::Approval,
        } => Some("Waiting for a person to approve.".into()),
        _ => None,
    }
}

fn action_text(v: &Value) -> String {
    match serde_json::from_value::<Action>(v.clone()) {
        Ok(a) => a.to_string(),
        Err(_) => v.to_string(),
    }
}

fn outcome_text(v: &Value) -> (String, &'static str) {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let reason = v.get("reason").and_then(Value::as_str);
    match (kind, reason) {
        ("ok", _) => ("ok".into(), "pass"),
        ("analysis_passed", _) => ("analysis passed".into(), "pass"),
        ("analysis_failed", Some(r)) => (format!("analysis failed: {r}"), "fail"),
        ("failed", Some(r)) => (format!("failed: {r}"), "fail"),
        (k, _) => (k.replace('_', " "), "fail"),
    }
}

fn note(n: &crate::views::NotificationView) -> NoteLine {
    match &n.error {
        None => NoteLine {
            state: "delivered",
            text: format!("{} at {}", n.notifier, fmt::time(n.at_ms)),
        },
        Some(e) => NoteLine {
            state: "failed",
            text: format!("{} after {} attempt(s): {e}", n.notifier, n.attempts),
        },
    }
}

/// `GET /ui/runs/{id}`.
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match run_view(&state, &signed, &id).await {
        Ok((v, finished)) => {
            let page = RunPage {
                chrome: Chrome::new(
                    &format!("{} {}", v.pipeline, v.release),
                    "runs",
                    Some(&signed),
                ),
                id: id.clone(),
                live: !finished,
                body: render_string(&RunBody { v }),
            };
            render(&page)
        }
        Err(e) => api_error_page(&signed, "Run", &e),
    }
}

/// `GET /ui/runs/{id}/body`: the page's moving part, for live updates.
pub(crate) async fn run_body(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match run_view(&state, &signed, &id).await {
        Ok((v, _)) => render(&RunBody { v }),
        Err(e) => api_error_page(&signed, "Run", &e),
    }
}

// ---------------------------------------------------------------- environments

pub(crate) struct SlotRow {
    name: String,
    release: String,
    ready: u32,
    desired: u32,
    weight: u32,
}

pub(crate) struct ServiceBlock {
    pipeline: String,
    service: String,
    error: Option<String>,
    bar: String,
    slots: Vec<SlotRow>,
}

pub(crate) struct EnvBlock {
    name: String,
    provider: String,
    strategy: String,
    gates: String,
    services: Vec<ServiceBlock>,
    /// Id and a line about it.
    last_run: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "environments.html")]
struct EnvironmentsPage {
    chrome: Chrome,
    envs: Vec<EnvBlock>,
}

/// `GET /ui/environments`.
pub(crate) async fn environments(State(state): State<Arc<AppState>>, signed: Signed) -> Response {
    let envs = match crate::routes::environments::list_environments(State(state.clone())).await {
        Ok(e) => e.0,
        Err(e) => return api_error_page(&signed, "Environments", &e),
    };
    let envs = envs
        .into_iter()
        .map(|e| {
            let mut gates = Vec::new();
            if e.approval {
                gates.push("approval".to_string());
            }
            if e.require_different_approver {
                gates.push("a different approver".to_string());
            }
            if let Some(w) = &e.window {
                gates.push(format!("window {w}"));
            }
            EnvBlock {
                name: e.name.clone(),
                provider: e.provider.clone(),
                strategy: e.strategy.clone(),
                gates: gates.join(", "),
                services: e
                    .services
                    .iter()
                    .map(|s| ServiceBlock {
                        pipeline: s.pipeline.clone(),
                        service: s.service.clone(),
                        error: s.error.clone(),
                        bar: if s.slots.is_empty() {
                            String::new()
                        } else {
                            chart::traffic(
                                &s.slots
                                    .iter()
                                    .map(|sl| (sl.name.clone(), sl.weight))
                                    .collect::<Vec<_>>(),
                            )
                        },
                        slots: s
                            .slots
                            .iter()
                            .map(|sl| SlotRow {
                                name: sl.name.clone(),
                                release: sl.release.clone(),
                                ready: sl.ready,
                                desired: sl.desired,
                                weight: sl.weight,
                            })
                            .collect(),
                    })
                    .collect(),
                last_run: e.last_run.as_ref().map(|r| {
                    (
                        r.id.clone(),
                        format!(
                            "{} {} ({}) {}",
                            r.pipeline,
                            r.release,
                            r.status,
                            fmt::age(r.created_ms, now_ms())
                        ),
                    )
                }),
            }
        })
        .collect();
    render(&EnvironmentsPage {
        chrome: Chrome::new("Environments", "environments", Some(&signed)),
        envs,
    })
}

// ---------------------------------------------------------------- plugins

pub(crate) struct PluginRow {
    id: String,
    kind: String,
    component: String,
    grants: String,
    calls: u64,
    errors: u64,
    mean: String,
    breaker: String,
}

#[derive(Template)]
#[template(path = "plugins.html")]
struct PluginsPage {
    chrome: Chrome,
    plugins: Vec<PluginRow>,
}

/// `GET /ui/plugins`.
pub(crate) async fn plugins(State(state): State<Arc<AppState>>, signed: Signed) -> Response {
    let list = crate::routes::plugins::list_plugins(State(state)).await.0;
    let plugins = list
        .into_iter()
        .map(|p| {
            let calls: u64 = p.calls.values().map(|c| c.calls).sum();
            let errors: u64 = p.calls.values().map(|c| c.errors).sum();
            let weighted: f64 = p
                .calls
                .values()
                .filter_map(|c| c.mean_ms.map(|m| m * c.calls as f64))
                .sum();
            let mut grants = Vec::new();
            if !p.allow_hosts.is_empty() {
                grants.push(format!("hosts {}", p.allow_hosts.join(", ")));
            }
            if !p.secrets.is_empty() {
                grants.push(format!("secrets {}", p.secrets.join(", ")));
            }
            grants.push(format!("{} MiB, {} ms", p.memory_mb, p.timeout_ms));
            PluginRow {
                id: p.id,
                kind: p.kind,
                component: p.component,
                grants: grants.join("; "),
                calls,
                errors,
                mean: if calls > 0 {
                    format!("{:.1} ms", weighted / calls as f64)
                } else {
                    "no calls".into()
                },
                breaker: p.breaker,
            }
        })
        .collect();
    render(&PluginsPage {
        chrome: Chrome::new("Plugins", "plugins", Some(&signed)),
        plugins,
    })
}

// ---------------------------------------------------------------- audit

pub(crate) struct AuditRow {
    at: String,
    actor: String,
    action: String,
    run_id: Option<String>,
    detail: String,
    config: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<AuditRow>,
}

/// `GET /ui/audit`.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    let page = match crate::routes::audit::list_audit(State(state), RawQuery(raw)).await {
        Ok(p) => p.0,
        Err(e) => return api_error_page(&signed, "Audit", &e),
    };
    let entries = page
        .entries
        .into_iter()
        .map(|a| AuditRow {
            at: fmt::time(a.at_ms),
            actor: a.actor,
            action: a.action,
            run_id: a.run_id,
            detail: a.detail.to_string(),
            config: a.config_hash.chars().take(19).collect(),
        })
        .collect();
    render(&AuditPage {
        chrome: Chrome::new("Audit", "audit", Some(&signed)),
        entries,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: u64, at_ms: u64, kind: &str, data: Value) -> Event {
        Event {
            seq,
            at_ms,
            kind: kind.into(),
            stage: Some("staging".into()),
            data,
            epoch: 1,
        }
    }

    #[test]
    fn a_timed_pause_shows_its_time_left_until_its_step_is_logged() {
        let pause = json!({"type": "pause", "pause": {"duration_ms": 30_000}});
        let mut log = vec![event(1, 1_000, "intent", pause.clone())];
        assert_eq!(
            pause_left("staging", &log, 13_000).as_deref(),
            Some("Pausing for 30s: 18s left.")
        );
        assert_eq!(pause_left("production", &log, 13_000), None);
        log.push(event(
            2,
            31_000,
            "step",
            json!({"action": pause, "outcome": {"type": "ok"}}),
        ));
        assert_eq!(pause_left("staging", &log, 32_000), None);
        let approval = json!({"type": "pause", "pause": "approval"});
        log.push(event(3, 33_000, "intent", approval));
        assert_eq!(
            pause_left("staging", &log, 40_000).as_deref(),
            Some("Waiting for a person to approve.")
        );
    }

    #[test]
    fn outcomes_and_actions_read_as_words() {
        assert_eq!(
            action_text(
                &json!({"type": "route", "weights": [{"slot": "a", "weight": 10}, {"slot": "b", "weight": 90}]})
            ),
            "route a=10% b=90%"
        );
        assert_eq!(
            outcome_text(&json!({"type": "analysis_failed", "reason": "too many errors"})),
            ("analysis failed: too many errors".to_string(), "fail")
        );
        assert_eq!(outcome_text(&json!({"type": "ok"})).1, "pass");
    }
}
