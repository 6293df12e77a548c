//! Environments: their plan, what each pipeline's service runs there now
//! (release per slot, traffic split, readiness, from the provider), and
//! their last run.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use rollcage_core::Target;
use rollcage_engine::run::EnvironmentPlan;
use rollcage_store::RunFilter;

use crate::AppState;
use crate::error::{ApiError, clip};
use crate::path::ApiPath;
use crate::views::{EnvironmentView, ErrorBody, RunView, ServiceView, SlotView};

/// How long a provider may take to report an environment's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Every environment, with what runs there.
#[utoipa::path(get, path = "/v1/environments", tag = "environments", security(("bearer" = [])),
    responses((status = 200, body = Vec<EnvironmentView>)))]
pub(crate) async fn list_environments(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<EnvironmentView>>, ApiError> {
    let mut out = Vec::new();
    let envs: Vec<Arc<EnvironmentPlan>> = state.engine.environments().cloned().collect();
    for env in envs {
        out.push(view(&state, &env).await?);
    }
    Ok(Json(out))
}

/// One environment.
#[utoipa::path(get, path = "/v1/environments/{name}", tag = "environments", security(("bearer" = [])),
    params(("name" = String, Path, description = "Environment name")),
    responses((status = 200, body = EnvironmentView),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn get_environment(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<EnvironmentView>, ApiError> {
    let env = state.engine.environment(&name).cloned().ok_or_else(|| {
        let known: Vec<String> = state
            .engine
            .environments()
            .map(|e| e.name.clone())
            .collect();
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_such_environment",
            format!("no environment `{}`", clip(&name)),
        )
        .with_details(serde_json::json!({"environments": known}))
    })?;
    Ok(Json(view(&state, &env).await?))
}

async fn view(state: &AppState, env: &EnvironmentPlan) -> Result<EnvironmentView, ApiError> {
    let mut services = Vec::new();
    let pipelines: Vec<_> = state
        .engine
        .pipelines()
        .filter(|p| p.stages.contains(&env.name))
        .map(|p| (p.name.clone(), p.service.clone(), p.service_spec.clone()))
        .collect();
    for (pipeline, service, service_spec) in pipelines {
        let target = Target {
            environment: env.name.clone(),
            service: service.clone(),
            service_spec,
        };
        let status = tokio::time::timeout(STATUS_TIMEOUT, env.provider.status(&target)).await;
        let (slots, error) = match status {
            Ok(Ok(s)) => (
                s.slots
                    .iter()
                    .map(|slot| SlotView {
                        name: slot.name.clone(),
                        release: slot.release.clone(),
                        desired: slot.desired,
                        ready: slot.ready,
                        weight: s
                            .weights
                            .iter()
                            .find(|w| w.slot == slot.name)
                            .map(|w| w.weight)
                            .unwrap_or(0),
                    })
                    .collect(),
                None,
            ),
            Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
            Err(_) => (
                Vec::new(),
                Some(format!("no status within {} s", STATUS_TIMEOUT.as_secs())),
            ),
        };
        services.push(ServiceView {
            pipeline,
            service,
            slots,
            error,
        });
    }
    let last = state
        .engine
        .store()
        .list_runs(&RunFilter {
            environment: Some(env.name.clone()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    Ok(EnvironmentView {
        name: env.name.clone(),
        provider: env.provider.id().to_string(),
        strategy: env.strategy.id().to_string(),
        approval: env.approval,
        require_different_approver: env.require_different_approver,
        window: env.window.as_ref().map(|w| w.to_string()),
        services,
        last_run: last.first().map(RunView::from),
    })
}
