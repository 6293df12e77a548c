//! Rollcage's HTTP API (axum): hosted runs are started, followed, approved,
//! aborted, retried and rolled back here; the CLI's `--server` mode, CI
//! pipelines and dashboards are its clients.
//!
//! * [`auth`]: bearer tokens (stored as hashes) with roles per environment;
//! * [`rate`]: a token bucket per token (and per address for failed
//!   authentications);
//! * `server`: the connection loop, with its header timeout and limit of
//!   connections per address;
//! * `routes`: the handlers, one module per resource;
//! * `metrics`: `/metrics` in the Prometheus text format;
//! * `openapi`: `/v1/openapi.json`, generated from the handlers and types;
//! * `ui`: the web dashboard under `/ui`, signed in with a cookie session
//!   (`/v1` stays bearer-only).
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
mod path;
pub mod rate;
mod routes;
mod server;
mod slots;
mod ui;
pub mod views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rollcage_engine::alerts::AlertRules;
use rollcage_engine::breaker::Breaker;
use rollcage_engine::run::Engine;
use rollcage_engine::scheduler::Scheduler;
use rollcage_store::RunStatus;
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
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections one client address may hold at once.
    pub connections_per_address: usize,
    /// Failed authentications one client address may make a minute (and
    /// at once) before it is answered 429.
    pub auth_failures_per_minute: u32,
    /// Unfinished runs (queued, running or waiting) accepted at once over
    /// every host sharing the store, in all.
    pub max_runs: usize,
    /// Unfinished runs accepted at once, per pipeline.
    pub max_runs_per_pipeline: usize,
    /// Runs this host drives at once; more wait queued for a host with
    /// room.
    pub max_active_runs: usize,
    /// Live event streams one token may hold open at once.
    pub streams_per_token: usize,
    /// A dashboard session ends after this long without a request.
    pub session_idle: Duration,
    /// ... and this long after sign-in, however busy.
    pub session_lifetime: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            body_limit_bytes: 64 * 1024,
            rate: RateSettings::default(),
            request_timeout: Duration::from_secs(30),
            event_poll: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(10),
            connections_per_address: 32,
            auth_failures_per_minute: 10,
            max_runs: 200,
            max_runs_per_pipeline: 20,
            max_active_runs: 50,
            streams_per_token: 8,
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 60 * 60),
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
    /// Failed authentications, by client address.
    auth_failures: rate::RateLimiter,
    /// Live event streams, by token.
    streams: slots::Slots<String>,
    /// The runs this host drives: claimed from the store up to
    /// `max_active_runs`, as they are queued (here or on another host) or
    /// their host goes away.
    scheduler: std::sync::OnceLock<Arc<Scheduler>>,
    /// Set when the host stops: live streams end, readiness fails.
    stopping: watch::Sender<bool>,
    /// The dashboard's sessions and its own rate limit on sign-ins.
    ui: ui::UiState,
    /// What alerts from Alertmanager act on (`[alerts]`).
    alert_rules: std::sync::OnceLock<AlertRules>,
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
                auth_failures: rate::RateLimiter::per_minute(options.auth_failures_per_minute),
                streams: slots::Slots::new(options.streams_per_token),
                ui: ui::UiState::new(&options),
                options,
                metrics: metrics::Metrics::default(),
                scheduler: std::sync::OnceLock::new(),
                stopping: watch::channel(false).0,
                alert_rules: std::sync::OnceLock::new(),
            }),
        }
    }

    /// What alerts posted to `/v1/hooks/alertmanager` act on; without
    /// it, every alert is ignored (and audited). Set once.
    pub fn with_alert_rules(self, rules: AlertRules) -> Api {
        let _ = self.state.alert_rules.set(rules);
        self
    }

    /// Every route.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// Start driving runs: this host's share of the unfinished ones
    /// (those no live host drives: left by a restart, or queued), and from
    /// then on those queued as they come.
    pub fn start_scheduler(&self) -> Arc<Scheduler> {
        let state = self.state.clone();
        self.state
            .scheduler
            .get_or_init(|| {
                let metrics = state.clone();
                Scheduler::start(
                    state.engine.clone(),
                    state.options.max_active_runs,
                    Arc::new(move |pipeline: &str, status: RunStatus| {
                        metrics.metrics.run_finished(pipeline, status.as_str())
                    }),
                )
            })
            .clone()
    }

    /// [`Api::start_scheduler`], then how many runs it took at once.
    pub async fn start_runs(&self) -> usize {
        self.start_scheduler().claim_now().await
    }

    /// Runs this host is driving now.
    pub fn active_runs(&self) -> usize {
        self.state.active_runs()
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
        let limits = server::Limits {
            header_read_timeout: self.state.options.header_read_timeout,
            connections_per_address: self.state.options.connections_per_address,
        };
        let result = server::run(listener, self.router(), limits, async move {
            signal.await;
            tracing::info!("stopping: finishing requests in flight");
            stopping.send_replace(true);
        })
        .await;
        self.stop_runs().await;
        result
    }

    /// Stop driving runs and give their leases up; each is left where its
    /// log says, for another host or the next start.
    pub async fn stop_runs(&self) {
        self.state.stopping.send_replace(true);
        if let Some(s) = self.state.scheduler.get() {
            s.stop().await;
        }
    }
}

impl AppState {
    /// `Ok` if one more run of `pipeline` may be accepted: a bound on the
    /// unfinished runs over every host sharing the store, in all and per
    /// pipeline, so that queued runs cannot pile up without end. Checked
    /// as a run is asked for: requests at the same moment may pass it
    /// together.
    async fn admit(&self, pipeline: &str) -> Result<(), ApiError> {
        let count = self.engine.store().unfinished_count(pipeline).await?;
        let (max, per_pipeline) = (self.options.max_runs, self.options.max_runs_per_pipeline);
        let message = if count.all >= max {
            format!(
                "{max} runs are unfinished already ([server.api] max_runs); retry when some have finished"
            )
        } else if count.of_pipeline >= per_pipeline {
            format!(
                "pipeline `{pipeline}` has {per_pipeline} unfinished runs already ([server.api] max_runs_per_pipeline); retry when some have finished"
            )
        } else {
            return Ok(());
        };
        Err(
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_runs", message)
                .with_retry_after(5),
        )
    }

    /// A run was just queued: have this host's scheduler look for it (a
    /// host without room leaves it to another).
    fn alert_rules(&self) -> AlertRules {
        self.alert_rules.get().cloned().unwrap_or_default()
    }

    fn queued(&self) {
        if let Some(s) = self.scheduler.get() {
            s.wake();
        }
    }

    fn active_runs(&self) -> usize {
        self.scheduler.get().map_or(0, |s| s.active())
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
/// into the request's extensions for the handlers. An address that failed
/// to authenticate too often is answered 429 before its token is looked at,
/// so that guessing costs time.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let address = req
        .extensions()
        .get::<server::ClientAddr>()
        .map(|a| a.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let too_many_failures = |wait: Duration| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            format!(
                "too many failed authentications from {address}; retry in {} s",
                retry_secs(wait)
            ),
        )
        .with_retry_after(retry_secs(wait))
        .into_response()
    };
    if let Err(wait) = state.auth_failures.check(&address) {
        return too_many_failures(wait);
    }
    let principal = match state.auth.authenticate(req.headers()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%address, "failed authentication: {}", e.message);
            return match state.auth_failures.take(&address) {
                Ok(()) => e.into_response(),
                Err(wait) => too_many_failures(wait),
            };
        }
    };
    if let Err(wait) = state.rate.take(&principal.name) {
        let secs = retry_secs(wait);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "token `{}` is over {} requests per second; retry in {secs} s",
                principal.name, state.options.rate.per_second
            ),
        )
        .with_retry_after(secs)
        .into_response();
    }
    // A token for Alertmanager sends alerts and reads nothing.
    if principal.role == Role::Alerts && req.uri().path() != "/v1/hooks/alertmanager" {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` has role alerts: it may only POST /v1/hooks/alertmanager",
                principal.name
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Whole seconds to wait, at least one.
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Answer a request that takes longer than the configured timeout: 408
/// while its body was still arriving (the client was slow), else 503.
async fn time_limit(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let limit = state.options.request_timeout;
    // A request without a body has nothing to wait for.
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let read = json::BodyRead::default();
    read.0
        .store(!has_body, std::sync::atomic::Ordering::Relaxed);
    req.extensions_mut().insert(read.clone());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) if !read.0.load(std::sync::atomic::Ordering::Relaxed) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request's body did not arrive within {} s",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
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
