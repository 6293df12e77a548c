//! What a person does on the dashboard: sign in and out, and act on runs
//! (approve, abort, retry, roll back, start). Every action is confirmed on
//! a page that says what will happen, is posted with the session's CSRF
//! token from this host's own page, and is carried out by the API's own
//! handler with the session's principal: the API's checks decide.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Extension, Form, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use rollcage_store::NewAudit;
use serde_json::json;

use super::session::{self, over_tls, same_secret};
use super::{Chrome, Signed, api_error_page, error_page, render, safe_next, same_origin};
use crate::AppState;
use crate::auth::Permission;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::path::ApiPath;
use crate::views::StartRun;

type Fields = HashMap<String, String>;

// ---------------------------------------------------------------- sign-in

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    notice: Option<String>,
}

/// `GET /ui/login?next=...`.
pub(crate) async fn login_page(RawQuery(raw): RawQuery) -> Response {
    let q = parse_query(raw.as_deref());
    let notice = q
        .contains_key("expired")
        .then(|| "Your session ended; sign in again to go on.".to_string());
    render(&LoginPage {
        chrome: Chrome::new("Sign in", "", None),
        next: safe_next(q.get("next").map(String::as_str)),
        notice,
    })
}

fn login_failed(status: StatusCode, next: &str, message: String) -> Response {
    let page = LoginPage {
        chrome: Chrome::new("Sign in", "", None),
        next: next.to_string(),
        notice: Some(message),
    };
    (status, render(&page)).into_response()
}

/// `POST /ui/login`: a token for a session.
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    addr: Option<Extension<crate::server::ClientAddr>>,
    Form(form): Form<Fields>,
) -> Response {
    let address = addr.map_or_else(|| "unknown".into(), |a| a.0.0.ip().to_string());
    let next = safe_next(form.get("next").map(String::as_str));
    if let Err(why) = same_origin(&headers) {
        return error_page(
            Chrome::new("Refused", "", None),
            StatusCode::FORBIDDEN,
            "Refused",
            &why,
        );
    }
    let too_many = |wait: std::time::Duration| {
        login_failed(
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            format!(
                "Too many sign-ins from {address}; try again in {} s.",
                crate::retry_secs(wait)
            ),
        )
    };
    if let Err(wait) = state.auth_failures.check(&address) {
        return too_many(wait);
    }
    if let Err(wait) = state.ui.logins.take(&address) {
        return too_many(wait);
    }
    let token = form.get("token").map(|t| t.trim()).unwrap_or("");
    let mut bearer = HeaderMap::new();
    if let Ok(v) = format!("Bearer {token}").parse() {
        bearer.insert(header::AUTHORIZATION, v);
    }
    let principal = match state.auth.authenticate(&bearer) {
        Ok(p) => p,
        Err(_) => {
            tracing::warn!(%address, "failed dashboard sign-in");
            audit(
                &state,
                "(unknown token)",
                "login-failed",
                json!({"address": address}),
            )
            .await;
            if let Err(wait) = state.auth_failures.take(&address) {
                return too_many(wait);
            }
            return login_failed(
                StatusCode::UNAUTHORIZED,
                &next,
                "That token is not one this host knows.".into(),
            );
        }
    };
    // A token for Alertmanager sends alerts and reads nothing, here as
    // under /v1.
    if principal.role == crate::auth::Role::Alerts {
        audit(
            &state,
            &principal.name,
            "login-refused",
            json!({"address": address, "role": principal.role.as_str()}),
        )
        .await;
        return login_failed(
            StatusCode::FORBIDDEN,
            &next,
            format!(
                "Token `{}` has role alerts: it may only send alerts, not sign in.",
                principal.name
            ),
        );
    }
    let (id, _) = match state.ui.sessions.create(principal.clone()) {
        Ok(s) => s,
        Err(e) => return ApiError::internal(format!("no randomness: {e}")).into_response(),
    };
    audit(
        &state,
        &principal.name,
        "login",
        json!({"address": address, "role": principal.role.as_str()}),
    )
    .await;
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(&id, over_tls(&headers)),
        )],
        Redirect::to(&next),
    )
        .into_response()
}

/// `POST /ui/logout`.
pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_post(&headers, &signed, &form) {
        return r;
    }
    state.ui.sessions.remove(&signed.session_id);
    audit(&state, &signed.principal.name, "logout", json!({})).await;
    (
        [(
            header::SET_COOKIE,
            session::clear_cookie(over_tls(&headers)),
        )],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

async fn audit(state: &AppState, actor: &str, action: &str, detail: serde_json::Value) {
    let entry = NewAudit {
        actor: actor.to_string(),
        action: action.to_string(),
        run_id: None,
        config_hash: state.engine.config_hash().to_string(),
        detail,
    };
    if let Err(e) = state.engine.store().record_audit(entry).await {
        tracing::warn!("audit of {action} by {actor} not recorded: {e}");
    }
}

/// A POST is taken only from this host's own page of a live session: the
/// browser says the request is same-origin, and the form carries the
/// session's CSRF token. The refusal's page, if it is refused.
fn check_post(headers: &HeaderMap, signed: &Signed, form: &Fields) -> Option<Response> {
    let refuse = |why: &str| {
        error_page(
            Chrome::new("Refused", "", Some(signed)),
            StatusCode::FORBIDDEN,
            "Refused",
            why,
        )
    };
    if let Err(why) = same_origin(headers) {
        return Some(refuse(&why));
    }
    match form.get("csrf") {
        Some(t) if same_secret(t, &signed.csrf) => None,
        _ => Some(refuse(
            "This form is not one of your session's (its CSRF token is missing or wrong); reload the page and try again.",
        )),
    }
}

// ---------------------------------------------------------------- run actions

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    heading: String,
    what: String,
    action: String,
    hidden: Vec<(String, String)>,
    button: String,
    danger: bool,
    back: String,
}

/// What an action on a run does, who may, and in which environments.
struct Plan {
    heading: String,
    what: String,
    button: &'static str,
    danger: bool,
    permission: Permission,
    environments: Vec<String>,
}

async fn plan(state: &AppState, id: &str, action: &str) -> Result<Plan, ApiError> {
    let (run, log) = state.engine.store().run_with_log(id).await?;
    let stage = rollcage_engine::position::acting_stage(&run.run.stages, &log)
        .map(str::to_string)
        .unwrap_or_default();
    let (p, r) = (&run.run.pipeline, &run.run.release);
    let plan = match action {
        "approve" => Plan {
            heading: format!("Approve {p} {r}?"),
            what: format!(
                "Run {id} goes on in stage {stage}: the release {r} moves past the wait for a person, and you are recorded as its approver."
            ),
            button: "Approve",
            danger: false,
            permission: Permission::Decide,
            environments: vec![stage],
        },
        "abort" => Plan {
            heading: format!("Abort {p} {r}?"),
            what: format!(
                "Run {id} stops at its next step and stage {stage} rolls back to the release it ran before; later stages are not touched."
            ),
            button: "Abort and roll back",
            danger: true,
            permission: Permission::Decide,
            environments: vec![stage],
        },
        "retry" => Plan {
            heading: format!("Retry {p} {r}?"),
            what: format!(
                "A new run takes release {r} through {} again, from the start.",
                run.run.stages.join(", ")
            ),
            button: "Start the new run",
            danger: false,
            permission: Permission::Deploy,
            environments: run.run.stages.clone(),
        },
        "rollback" => Plan {
            heading: format!("Roll back {stage}?"),
            what: format!(
                "A new run takes {stage} back to the release of pipeline {p}'s previous successful run there, replacing {r}."
            ),
            button: "Roll back",
            danger: true,
            permission: Permission::Deploy,
            environments: vec![stage],
        },
        other => {
            return Err(ApiError::not_found(format!(
                "no action `{}` (approve, abort, retry or rollback)",
                crate::error::clip(other)
            )));
        }
    };
    Ok(plan)
}

/// `GET /ui/runs/{id}/actions/{action}`: what will happen, and a button.
pub(crate) async fn confirm(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let plan = match plan(&state, &id, &action).await {
        Ok(p) => p,
        Err(e) => return api_error_page(&signed, "Confirm", &e),
    };
    if let Err(e) = signed
        .principal
        .require(plan.permission, &plan.environments)
    {
        return api_error_page(&signed, "Not allowed", &e);
    }
    render(&ConfirmPage {
        chrome: Chrome::new(&plan.heading, "runs", Some(&signed)),
        heading: plan.heading,
        what: plan.what,
        action: format!("/ui/runs/{id}/actions/{action}"),
        hidden: vec![],
        button: plan.button.into(),
        danger: plan.danger,
        back: format!("/ui/runs/{id}"),
    })
}

/// `POST /ui/runs/{id}/actions/{action}`: done by the API's handler.
pub(crate) async fn act(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_post(&headers, &signed, &form) {
        return r;
    }
    use crate::routes::runs;
    let (st, who, path) = (
        State(state.clone()),
        Extension(signed.principal.clone()),
        ApiPath(id.clone()),
    );
    let done = match action.as_str() {
        "approve" => runs::approve_run(st, who, path).await,
        "abort" => runs::abort_run(st, who, path).await,
        "retry" => runs::retry_run(st, who, path).await,
        "rollback" => {
            runs::rollback_run(st, who, path, crate::json::OptionalJson(Default::default())).await
        }
        other => Err(ApiError::not_found(format!(
            "no action `{}`",
            crate::error::clip(other)
        ))),
    };
    match done {
        Ok(response) => Redirect::to(&ui_location(&response, &id)).into_response(),
        Err(e) => api_error_page(&signed, "Refused", &e),
    }
}

/// The dashboard page of the run an API answer points at (a new run for
/// retry, roll back and start).
fn ui_location(response: &Response, fallback: &str) -> String {
    let id = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.strip_prefix("/v1/runs/"))
        .unwrap_or(fallback);
    format!("/ui/runs/{id}")
}

// ---------------------------------------------------------------- start

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    chrome: Chrome,
    pipelines: Vec<String>,
    pipeline: String,
    release: String,
    params: String,
    notes: String,
    pipeline_error: Option<String>,
    release_error: Option<String>,
    params_error: Option<String>,
    form_error: Option<String>,
    not_allowed: Option<String>,
    allowed: bool,
    why: String,
}

impl StartPage {
    fn new(state: &AppState, signed: &Signed, form: &Fields) -> StartPage {
        let pipelines: Vec<String> = state.engine.pipelines().map(|p| p.name.clone()).collect();
        let pipeline = form
            .get("pipeline")
            .cloned()
            .or_else(|| pipelines.first().cloned())
            .unwrap_or_default();
        let stages = state
            .engine
            .pipeline(&pipeline)
            .map(|p| p.stages.clone())
            .unwrap_or_default();
        let allowed = signed.may(Permission::Deploy, &stages);
        StartPage {
            chrome: Chrome::new("Start a run", "start", Some(signed)),
            pipelines,
            pipeline,
            release: form.get("release").cloned().unwrap_or_default(),
            params: form.get("params").cloned().unwrap_or_default(),
            notes: form.get("notes").cloned().unwrap_or_default(),
            pipeline_error: None,
            release_error: None,
            params_error: None,
            form_error: None,
            not_allowed: allowed.as_ref().err().map(|w| {
                format!(
                    "You are {} ({}): starting a run {w}.",
                    signed.principal.name,
                    signed.principal.role.as_str()
                )
            }),
            allowed: allowed.is_ok(),
            why: allowed.err().unwrap_or_default(),
        }
    }
}

/// `GET /ui/start`.
pub(crate) async fn start_page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    render(&StartPage::new(
        &state,
        &signed,
        &parse_query(raw.as_deref()),
    ))
}

/// `name=value` lines.
fn parse_params(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(format!(
                    "line {}: `{}` is not name=value",
                    n + 1,
                    crate::error::clip(line)
                ));
            }
        }
    }
    Ok(out)
}

/// `POST /ui/start`: first the confirmation, then (with `confirmed`) the
/// API's `POST /v1/runs`; its error, if any, beside the field at fault.
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_post(&headers, &signed, &form) {
        return r;
    }
    let mut page = StartPage::new(&state, &signed, &form);
    let params = match parse_params(&page.params) {
        Ok(p) => p,
        Err(e) => {
            page.params_error = Some(e);
            return (StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response();
        }
    };
    if !form.contains_key("confirmed") {
        let stages = state
            .engine
            .pipeline(&page.pipeline)
            .map(|p| p.stages.join(" → "))
            .unwrap_or_else(|| "(unknown pipeline)".into());
        let mut hidden: Vec<(String, String)> = ["pipeline", "release", "params", "notes"]
            .iter()
            .map(|k| (k.to_string(), form.get(*k).cloned().unwrap_or_default()))
            .collect();
        hidden.push(("confirmed".into(), "1".into()));
        let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return render(&ConfirmPage {
            chrome: Chrome::new("Start a run", "start", Some(&signed)),
            heading: format!("Start {} {}?", page.pipeline, page.release),
            what: format!(
                "A new run takes release {} of pipeline {} through {stages}, each stage by its strategy and checks, rolling back by itself if a check fails.{}",
                page.release,
                page.pipeline,
                if shown.is_empty() {
                    String::new()
                } else {
                    format!(" Parameters: {}.", shown.join(", "))
                }
            ),
            action: "/ui/start".into(),
            hidden,
            button: "Start the run".into(),
            danger: false,
            back: "/ui/start".into(),
        });
    }
    let body = StartRun {
        pipeline: page.pipeline.clone(),
        release: page.release.trim().to_string(),
        notes: Some(page.notes.clone()).filter(|n| !n.trim().is_empty()),
        params,
        stages: None,
    };
    let done = crate::routes::runs::start_run(
        State(state.clone()),
        Extension(signed.principal.clone()),
        ApiJson(body),
    )
    .await;
    match done {
        Ok(response) => Redirect::to(&ui_location(&response, "")).into_response(),
        Err(e) => {
            match e.code {
                "unknown_pipeline" => page.pipeline_error = Some(e.message.clone()),
                "invalid_release" => page.release_error = Some(e.message.clone()),
                "invalid_params" | "invalid_param" => page.params_error = Some(e.message.clone()),
                _ => page.form_error = Some(e.message.clone()),
            }
            (e.status, render(&page)).into_response()
        }
    }
}

fn parse_query(raw: Option<&str>) -> Fields {
    raw.map(|q| {
        q.split('&')
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Some((decode(k)?, decode(v)?))
            })
            .collect()
    })
    .unwrap_or_default()
}

fn decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_name_value_lines() {
        let p = parse_params("jira_issue = OPS-1\n\nticket=9").unwrap();
        assert_eq!(p["jira_issue"], "OPS-1");
        assert_eq!(p["ticket"], "9");
        let e = parse_params("ok=1\nbroken").unwrap_err();
        assert!(e.contains("line 2") && e.contains("broken"), "{e}");
        let q = parse_query(Some("next=%2Fui%2Fruns%2Fx&expired=1"));
        assert_eq!(q["next"], "/ui/runs/x");
        assert!(q.contains_key("expired"));
    }
}
