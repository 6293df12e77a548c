//! Rollcage's HTTP API (axum): hosted runs are started, followed, approved,
//! aborted, retried and rolled back here; the CLI's `--server` mode, CI
//! pipelines and dashboards are its clients.
//!
//! * [`auth`]: bearer tokens (stored as hashes) with roles per environment;
//! * [`rate`]: a token bucket per token;
//! * `routes`: the handlers, one module per resource;
//! * `metrics`: `/metrics` in the Prometheus text format;
//! * `openapi`: `/v1/openapi.json`, generated from the handlers and types.
//!
//! [`Api::router`] is the whole API as a `Router`, testable without a
//! socket; [`Api::serve`] runs it with graceful shutdown. The API drives
//! the runs it starts (and those a restarted host finds unfinished) in
//! background tasks; stopping leaves them resumable.

pub mod auth;
mod error;
mod json;
mod metrics;
mod openapi;
pub mod rate;
mod routes;
pub mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rollcage_engine::breaker::Breaker;
use rollcage_engine::run::Engine;
use tokio::sync::watch;

pub use auth::{Auth, Principal, Role, TokenEntry, hash_token, new_token};
pub use error::ApiError;
pub use rate::RateSettings;

/// A loaded plugin instance, as `/v1/plugins` and `/metrics` show it.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    pub id: String,
    pub kind: String,
    /// `builtin:<name>` or the component's path.
    pub component: String,
    pub allow_hosts: Vec<String>,
    pub secrets: Vec<String>,
    pub memory_mb: u64,
    pub timeout_ms: u64,
    /// The breaker every call to it passes (which also counts the calls).
    pub breaker: Arc<Breaker>,
}

/// Limits of the API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub body_limit_bytes: usize,
    pub rate: RateSettings,
    /// Longest a request may take (live event streams excepted).
    pub request_timeout: Duration,
    /// How often a live event stream looks for entries written by another
    /// process (entries of this one wake it at once).
    pub event_poll: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            body_limit_bytes: 64 * 1024,
            rate: RateSettings::default(),
            request_timeout: Duration::from_secs(30),
            event_poll: Duration::from_secs(1),
        }
    }
}

pub(crate) struct AppState {
    engine: Arc<Engine>,
    auth: Auth,
    plugins: Vec<PluginEntry>,
    options: ApiOptions,
    metrics: metrics::Metrics,
    rate: rate::RateLimiter,
    /// Runs being driven by this host, by id.
    runs: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Set when the host stops: live streams end, readiness fails.
    stopping: watch::Sender<bool>,
}

/// The API over one engine.
#[derive(Clone)]
pub struct Api {
    state: Arc<AppState>,
}

impl Api {
    pub fn new(
        engine: Arc<Engine>,
        auth: Auth,
        plugins: Vec<PluginEntry>,
        options: ApiOptions,
    ) -> Api {
        Api {
            state: Arc::new(AppState {
                engine,
                auth,
                plugins,
                rate: rate::RateLimiter::new(options.rate),
                options,
                metrics: metrics::Metrics::default(),
                runs: Mutex::default(),
                stopping: watch::channel(false).0,
            }),
        }
    }

    /// Every route.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// Drive every run the store has not seen finish (after a restart).
    /// How many there were.
    pub async fn resume_unfinished(&self) -> Result<usize, rollcage_store::StoreError> {
        let runs = self.state.engine.store().unfinished_runs().await?;
        for r in &runs {
            tracing::info!(run_id = %r.id, "resuming run");
            self.state.drive(r.id.clone());
        }
        Ok(runs.len())
    }

    /// Runs this host is driving now.
    pub fn active_runs(&self) -> usize {
        self.state.runs.lock().unwrap().len()
    }

    /// Serve on `listener` until `signal` completes; then stop taking
    /// connections, end live streams, finish the requests in flight, and
    /// stop driving runs (they stay resumable: the next start resumes them).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.state.stopping.clone();
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                signal.await;
                tracing::info!("stopping: finishing requests in flight");
                stopping.send_replace(true);
            })
            .await;
        self.stop_runs();
        result
    }

    /// Stop driving runs; each is left where its log says, to be resumed.
    pub fn stop_runs(&self) {
        self.state.stopping.send_replace(true);
        for (id, task) in self.state.runs.lock().unwrap().drain() {
            tracing::info!(run_id = %id, "run left resumable");
            task.abort();
        }
    }
}

impl AppState {
    /// Drive run `id` in the background, unless this host already does.
    fn drive(self: &Arc<Self>, id: String) {
        let mut runs = self.runs.lock().unwrap();
        if runs.contains_key(&id) || *self.stopping.borrow() {
            return;
        }
        let state = self.clone();
        let run_id = id.clone();
        let task = tokio::spawn(async move {
            match state.engine.execute(&run_id).await {
                Ok(status) => {
                    let pipeline = match state.engine.store().run(&run_id).await {
                        Ok(r) => r.run.pipeline,
                        Err(_) => String::new(),
                    };
                    state.metrics.run_finished(&pipeline, status.as_str());
                }
                Err(e) => tracing::error!(run_id = %run_id, "run stopped: {e}"),
            }
            state.runs.lock().unwrap().remove(&run_id);
        });
        runs.insert(id, task.abort_handle());
    }
}

/// Count every request by route template and status, and time it.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    state.metrics.request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Authenticate (401), then rate-limit per token (429); the principal goes
/// into the request's extensions for the handlers.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match state.auth.authenticate(req.headers()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(wait) = state.rate.take(&principal.name) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "token `{}` is over {} requests per second; retry in {secs} s",
                principal.name, state.options.rate.per_second
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Answer 503 to a request that takes longer than the configured timeout.
async fn time_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let limit = state.options.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}

/// Layers shared by every route.
fn layered(router: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    let limit = state.options.body_limit_bytes;
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}
