//! `rollcage serve`: the long-running host. It starts the engine (and the
//! local runtime when the configuration uses it), resumes the runs a
//! previous host left unfinished, and serves the HTTP API until SIGINT or
//! SIGTERM; then it finishes the requests in flight, gives pending
//! notifications a bounded time, and stops, leaving unfinished runs,
//! undelivered notifications and the local runtime's services to the next
//! start.

use std::process::ExitCode;

use anyhow::Context as _;
use rollcage_api::{Api, ApiOptions, Auth, RateSettings, Role, TokenEntry};
use rollcage_config::TokenRole;
use rollcage_engine::alerts::{AlertRules, Matcher, Place};

use super::BAD_INPUT;
use crate::cli::ServeArgs;
use crate::host::{Host, HostOptions};

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config =
        rollcage_config::Config::load(&args.host.config, &crate::plugins::config_context());
    crate::logging::init(config.as_ref().ok().map(|c| &c.server.log), true);
    let config = match config {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(BAD_INPUT));
        }
    };
    let tokens = config
        .server
        .tokens
        .iter()
        .map(|(name, t)| {
            let role = match t.role {
                TokenRole::Viewer => Role::Viewer,
                TokenRole::Deployer => Role::Deployer,
                TokenRole::Approver => Role::Approver,
                TokenRole::Alerts => Role::Alerts,
                TokenRole::Admin => Role::Admin,
            };
            TokenEntry::new(name, &t.hash, role, t.environments.clone())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if tokens.is_empty() {
        tracing::warn!(
            "no [server.tokens]: every /v1 request will be refused (401); `rollcage token new` makes one"
        );
    }
    let listen = args.listen.clone().unwrap_or(config.server.listen.clone());
    // Bind first: a taken port fails before anything is started.
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} ([server] listen)"))?;
    let addr = listener.local_addr()?;
    let api_config = config.server.api.clone();
    let alert_rules = alert_rules(&config.alerts);
    let max_active_runs = config.server.max_active_runs.get();
    let host = Host::start(
        config,
        HostOptions {
            cache_dir: args.host.cache_dir.clone(),
            ..HostOptions::default()
        },
    )
    .await?;
    let api = Api::new(
        host.engine.clone(),
        Auth::new(tokens),
        host.plugins.clone(),
        ApiOptions {
            body_limit_bytes: api_config.body_limit_bytes,
            rate: RateSettings {
                per_second: api_config.requests_per_second,
                burst: api_config.burst,
            },
            request_timeout: api_config.request_timeout,
            header_read_timeout: api_config.header_read_timeout,
            connections_per_address: api_config.connections_per_address.get() as usize,
            auth_failures_per_minute: api_config.auth_failures_per_minute.get(),
            max_runs: api_config.max_runs.get() as usize,
            max_runs_per_pipeline: api_config.max_runs_per_pipeline.get() as usize,
            max_active_runs: max_active_runs as usize,
            streams_per_token: api_config.streams_per_token.get() as usize,
            session_idle: api_config.session_idle,
            session_lifetime: api_config.session_lifetime,
            ..ApiOptions::default()
        },
    );
    let api = api.with_alert_rules(alert_rules);
    let resumed = api.start_runs().await;
    // One line on stdout, for people and for scripts that start a server
    // on port 0.
    println!("rollcage serving http://{addr} ({resumed} unfinished runs resumed)");
    tracing::info!(%addr, resumed, "serving");
    let served = api.serve(listener, stop_signal()).await;
    // What does not end in time stays queued for the next start.
    host.settle_notifications().await;
    host.suspend().await;
    tracing::info!("stopped");
    served.context("the API server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// `[alerts]` as the engine takes it.
fn alert_rules(config: &rollcage_config::AlertsConfig) -> AlertRules {
    let place = |p: &rollcage_config::Place| match p {
        rollcage_config::Place::Fixed(v) => Place::Fixed(v.clone()),
        rollcage_config::Place::Label(l) => Place::Label(l.clone()),
    };
    AlertRules {
        matchers: config
            .matchers
            .iter()
            .map(|m| Matcher {
                alertnames: m.alertnames.clone(),
                labels: m.labels.clone(),
                environment: place(&m.environment),
                service: m.service.as_ref().map(place),
            })
            .collect(),
        after_promotion: config.after_promotion,
    }
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
