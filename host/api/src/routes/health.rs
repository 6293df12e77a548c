//! Liveness, readiness and metrics: unauthenticated, for load balancers,
//! orchestrators and Prometheus.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::AppState;
use crate::views::Health;

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: BTreeMap::new(),
    })
}

/// The host can take work: its store answers and it is not stopping.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready; `checks` says why", body = Health)))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut checks = BTreeMap::new();
    let mut ok = true;
    match state.engine.store().ping().await {
        Ok(()) => checks.insert("store".to_string(), "ok".to_string()),
        Err(e) => {
            ok = false;
            tracing::warn!("readiness: store: {e}");
            checks.insert("store".into(), "unreachable".into())
        }
    };
    // Runs are driven only while their leases can be renewed.
    if !state.engine.store_healthy() {
        ok = false;
        checks.insert(
            "leases".into(),
            "cannot be renewed: runs are not driven until the store answers".into(),
        );
    }
    checks.insert("plugins".into(), format!("{} loaded", state.plugins.len()));
    if *state.stopping.borrow() {
        ok = false;
        checks.insert("host".into(), "stopping".into());
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ok { "ok" } else { "unavailable" }.into(),
        checks,
    };
    (status, Json(body))
}

/// Prometheus metrics: API requests, runs, plugin calls and breakers.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let active = state.active_runs();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(active, &state.plugins),
    )
}
