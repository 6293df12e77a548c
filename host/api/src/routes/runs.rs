//! Runs: start, list, show, and the decisions and follow-ups a person or a
//! CI job takes on one (approve, abort, retry, roll back).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rollcage_engine::position;
use rollcage_engine::run::RunRequest;
use rollcage_engine::stage::Decision;
use rollcage_store::{Run, RunFilter, RunStatus};
use serde_json::json;

use super::Params;
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::error::{ApiError, clip};
use crate::json::{ApiJson, OptionalJson};
use crate::path::ApiPath;
use crate::views::{ErrorBody, RollbackRun, RunDetail, RunPage, RunView, StartRun};

/// 202 with the run and its location.
fn accepted(run: &Run) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/runs/{}", run.id))],
        Json(RunView::from(run)),
    )
        .into_response()
}

/// Start a run: it is recorded, then driven in the background; follow it
/// at `/v1/runs/{id}/events`.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", security(("bearer" = [])),
    request_body = StartRun,
    responses(
        (status = 202, description = "Recorded and started", body = RunView),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token may not deploy to one of the stages", body = ErrorBody),
        (status = 422, description = "Unknown field, pipeline or stage, or a release that is not SemVer", body = ErrorBody)))]
pub(crate) async fn start_run(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<Response, ApiError> {
    let engine = &state.engine;
    let Some(pipeline) = engine.pipeline(&body.pipeline) else {
        let known: Vec<&str> = engine.pipelines().map(|p| p.name.as_str()).collect();
        return Err(ApiError::unprocessable(
            "unknown_pipeline",
            format!("unknown pipeline `{}`", clip(&body.pipeline)),
        )
        .with_details(json!({"pipelines": known})));
    };
    let stages = body
        .stages
        .clone()
        .unwrap_or_else(|| pipeline.stages.clone());
    who.require(Permission::Deploy, &stages)?;
    state.admit(&pipeline.name).await?;
    let id = engine
        .create(RunRequest {
            pipeline: body.pipeline,
            release: body.release,
            notes: body.notes,
            params: body.params.into_iter().collect(),
            stages: body.stages,
            started_by: who.name.clone(),
        })
        .await
        .map_err(|e| match e {
            rollcage_engine::run::EngineError::UnknownStage { .. } => {
                ApiError::from(e).with_details(json!({"stages": pipeline.stages}))
            }
            e => e.into(),
        })?;
    let run = engine.store().run(&id).await?;
    state.queued();
    Ok(accepted(&run))
}

/// Runs, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", security(("bearer" = [])),
    params(
        ("pipeline" = Option<String>, Query, description = "Only this pipeline"),
        ("environment" = Option<String>, Query, description = "Only runs through this environment"),
        ("status" = Option<String>, Query, description = "queued, running, awaiting_approval, succeeded, rolled_back or failed"),
        ("since" = Option<String>, Query, pattern = r"^(?:[0-9]{0,19}|(?:[0-9]{1,9}(?:ms|s|m|h))+)$", description = "Milliseconds since the epoch, or a duration ago (24h)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "1 to 500 (default 50)")),
    responses((status = 200, body = RunPage),
              (status = 422, description = "Bad query", body = ErrorBody)))]
pub(crate) async fn list_runs(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Json<RunPage>, ApiError> {
    let p = Params::new(
        q.as_deref(),
        &[
            "pipeline",
            "environment",
            "status",
            "since",
            "cursor",
            "limit",
        ],
    )?;
    let status = match p.get("status") {
        None => None,
        Some(s) => Some(parse_status(&s)?),
    };
    let limit = p.limit()?;
    let runs = state
        .engine
        .store()
        .list_runs(&RunFilter {
            pipeline: p.get("pipeline"),
            environment: p.get("environment"),
            status,
            since_ms: p.since_ms()?,
            before: p.get("cursor"),
            limit,
        })
        .await?;
    let next_cursor = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(RunPage {
        runs: runs.iter().map(RunView::from).collect(),
        next_cursor,
    }))
}

fn parse_status(s: &str) -> Result<RunStatus, ApiError> {
    let all = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::AwaitingApproval,
        RunStatus::Succeeded,
        RunStatus::RolledBack,
        RunStatus::Failed,
    ];
    all.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|x| x.as_str()).collect();
        ApiError::unprocessable(
            "invalid_query",
            format!(
                "status = `{}`: expected one of {}",
                clip(s),
                names.join(", ")
            ),
        )
    })
}

/// A run with its stages, steps, analyses (every measurement), decisions
/// and notifications.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunDetail),
              (status = 404, description = "No such run", body = ErrorBody)))]
pub(crate) async fn get_run(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let (run, log) = state.engine.store().run_with_log(&id).await?;
    Ok(Json(RunDetail::build(&run, &log)))
}

async fn decide(
    state: &AppState,
    who: &Principal,
    id: &str,
    decision: Decision,
) -> Result<Response, ApiError> {
    let store = state.engine.store();
    // Authorized on the position the log shows, and decided on that same
    // read: the engine drops the decision if the run has left that stage
    // by the time it takes it.
    let (run, log) = store.run_with_log(id).await?;
    let stage: Vec<String> = match position::acting_stage(&run.run.stages, &log) {
        Some(s) => vec![s.to_string()],
        None => run.run.stages.clone(),
    };
    who.require(Permission::Decide, &stage)?;
    state.engine.decide_at(&run, &log, decision).await?;
    let run = store.run(id).await?;
    Ok(accepted(&run))
}

/// Approve a run waiting for a person. Environments with
/// `require_different_approver` refuse the token that started the run.
#[utoipa::path(post, path = "/v1/runs/{id}/approve", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 202, description = "Queued for the run", body = RunView),
        (status = 403, description = "Wrong role or environment, or the approver started the run", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The run is not waiting for a decision", body = ErrorBody)))]
pub(crate) async fn approve_run(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let by = who.name.clone();
    decide(&state, &who, &id, Decision::Approve { by }).await
}

/// Abort a run: it rolls back at its next step.
#[utoipa::path(post, path = "/v1/runs/{id}/abort", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 202, description = "Queued for the run", body = RunView),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The run is finished", body = ErrorBody)))]
pub(crate) async fn abort_run(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let by = who.name.clone();
    decide(&state, &who, &id, Decision::Abort { by }).await
}

/// Start a finished run that did not succeed again, as a new run.
#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 202, description = "The new run", body = RunView),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The run is not finished, or succeeded", body = ErrorBody)))]
pub(crate) async fn retry_run(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let store = state.engine.store();
    let run = store.run(&id).await?;
    who.require(Permission::Deploy, &run.run.stages)?;
    state.admit(&run.run.pipeline).await?;
    let new = state.engine.retry(&id, &who.name).await?;
    let new_run = store.run(&new).await?;
    state.queued();
    Ok(accepted(&new_run))
}

/// Take an environment of a finished run back to the release of the
/// pipeline's previous successful run there, as a new run.
#[utoipa::path(post, path = "/v1/runs/{id}/rollback", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    request_body(content = Option<RollbackRun>, description = "Optional: the environment (default: the run's last stage)"),
    responses(
        (status = 202, description = "The new run, of the previous release", body = RunView),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Not finished, or no earlier release to go back to", body = ErrorBody),
        (status = 422, description = "The run did not go through that environment", body = ErrorBody)))]
pub(crate) async fn rollback_run(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RollbackRun>,
) -> Result<Response, ApiError> {
    let store = state.engine.store();
    let (run, log) = store.run_with_log(&id).await?;
    // The same default the engine takes: where the run stopped, per its log.
    let env = match body.environment.clone() {
        Some(e) => e,
        None => position::acting_stage(&run.run.stages, &log)
            .unwrap_or_default()
            .to_string(),
    };
    who.require(Permission::Deploy, std::slice::from_ref(&env))?;
    state.admit(&run.run.pipeline).await?;
    let new = state
        .engine
        .rollback(&id, body.environment.as_deref(), &who.name)
        .await?;
    let new_run = store.run(&new).await?;
    state.queued();
    Ok(accepted(&new_run))
}
