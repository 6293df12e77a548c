//! `GET /v1/plugins`: what is loaded, with which grants, and how its calls
//! have gone.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use rollcage_engine::breaker::BreakerState;

use crate::AppState;
use crate::views::{CallView, PluginView};

/// Loaded plugins: kind, component, grants, breaker, calls by kind.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, description = "Every loaded plugin instance", body = Vec<PluginView>),
              (status = 401, description = "No or unknown token", body = crate::views::ErrorBody)))]
pub(crate) async fn list_plugins(State(state): State<Arc<AppState>>) -> Json<Vec<PluginView>> {
    let views = state
        .plugins
        .iter()
        .map(|p| PluginView {
            id: p.id.clone(),
            kind: p.kind.clone(),
            component: p.component.clone(),
            allow_hosts: p.allow_hosts.clone(),
            secrets: p.secrets.clone(),
            memory_mb: p.memory_mb,
            timeout_ms: p.timeout_ms,
            breaker: match p.breaker.state() {
                BreakerState::Closed => "closed",
                BreakerState::Open { .. } => "open",
                BreakerState::HalfOpen => "half_open",
            }
            .into(),
            calls: p
                .breaker
                .stats()
                .snapshot()
                .into_iter()
                .map(|(call, c)| {
                    let view = CallView {
                        calls: c.calls,
                        errors: c.errors,
                        rejected: c.rejected,
                        mean_ms: c.mean().map(|d| d.as_secs_f64() * 1000.0),
                    };
                    (call.to_string(), view)
                })
                .collect(),
        })
        .collect();
    Json(views)
}
