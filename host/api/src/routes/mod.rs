//! The routes, one module per resource, and the router that joins them.

pub(crate) mod audit;
pub(crate) mod environments;
mod events;
mod health;
pub(crate) mod hooks;
pub(crate) mod plugins;
pub(crate) mod runs;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::routing::{get, post};

use crate::error::{ApiError, clip};
use crate::{AppState, authenticate, layered, time_limit};

pub(crate) use audit::__path_list_audit;
pub(crate) use environments::{__path_get_environment, __path_list_environments};
pub(crate) use events::__path_run_events;
pub(crate) use health::{__path_healthz, __path_metrics, __path_readyz};
pub(crate) use hooks::{__path_alertmanager, AlertmanagerAlert, AlertmanagerPayload};
pub(crate) use plugins::__path_list_plugins;
pub(crate) use runs::{
    __path_abort_run, __path_approve_run, __path_get_run, __path_list_runs, __path_retry_run,
    __path_rollback_run, __path_start_run,
};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    // Requests with an answer to compute are time-limited; the live event
    // stream is meant to stay open.
    let timed = Router::new()
        .route("/v1/runs", get(runs::list_runs).post(runs::start_run))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/approve", post(runs::approve_run))
        .route("/v1/runs/{id}/abort", post(runs::abort_run))
        .route("/v1/runs/{id}/rollback", post(runs::rollback_run))
        .route("/v1/runs/{id}/retry", post(runs::retry_run))
        .route("/v1/environments", get(environments::list_environments))
        .route(
            "/v1/environments/{name}",
            get(environments::get_environment),
        )
        .route("/v1/plugins", get(plugins::list_plugins))
        .route("/v1/audit", get(audit::list_audit))
        .route("/v1/hooks/alertmanager", post(hooks::alertmanager))
        .route_layer(middleware::from_fn_with_state(state.clone(), time_limit));
    let v1 = timed
        .route("/v1/runs/{id}/events", get(events::run_events))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(crate::openapi::document));
    layered(
        open.merge(v1)
            .merge(crate::ui::router())
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed),
        state,
    )
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", clip(uri.path())))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", clip(uri.path())),
    )
}

/// Query parameters, checked against the names a route takes: an unknown
/// one is an error, not silently ignored.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn new(raw: Option<&str>, known: &[&str]) -> Result<Params, ApiError> {
        let mut map = BTreeMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k)?, decode(v)?);
            if !known.contains(&k.as_str()) {
                return Err(ApiError::unprocessable(
                    "invalid_query",
                    format!(
                        "unknown query parameter `{}`; expected one of: {}",
                        clip(&k),
                        known.join(", ")
                    ),
                ));
            }
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    /// The value of `k`; an empty one (`?cursor=`) is as good as none.
    pub(crate) fn get(&self, k: &str) -> Option<String> {
        self.0.get(k).filter(|v| !v.is_empty()).cloned()
    }

    /// `limit`: 1 to 500, 50 by default.
    pub(crate) fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit").as_deref() {
            None => Ok(50),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=500).contains(&n) => Ok(n),
                _ => Err(ApiError::unprocessable(
                    "invalid_query",
                    format!("limit = `{}`: expected a number from 1 to 500", clip(v)),
                )),
            },
        }
    }

    /// `since`: milliseconds since the Unix epoch, or a duration ago
    /// (`24h`).
    pub(crate) fn since_ms(&self) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get("since") else {
            return Ok(None);
        };
        if let Ok(ms) = v.parse::<u64>() {
            return Ok(Some(ms));
        }
        match rollcage_core::duration::parse(&v) {
            Ok(d) => Ok(Some(now_ms().saturating_sub(d.as_millis() as u64))),
            Err(_) => Err(ApiError::unprocessable(
                "invalid_query",
                format!(
                    "since = `{}`: expected milliseconds since the Unix epoch, or a duration such as 24h",
                    clip(&v)
                ),
            )),
        }
    }
}

fn decode(s: &str) -> Result<String, ApiError> {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => {
                    return Err(ApiError::unprocessable(
                        "invalid_query",
                        format!("bad percent-encoding in `{}`", clip(&s)),
                    ));
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::unprocessable("invalid_query", "query is not UTF-8"))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
