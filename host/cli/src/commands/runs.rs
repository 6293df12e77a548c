//! `rollcage runs list|show|approve|abort|resume`. Listing and showing read
//! the store only; approving and aborting go through the engine (which
//! checks that the run waits, and who may approve it) and the store, so the
//! process driving the run takes the decision wherever it runs.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use rollcage_engine::run::{Engine, EngineError};
use rollcage_engine::stage::Decision;
use rollcage_store::{HostIdentity, RunFilter, RunStatus, Store, StoreError};

use super::run::{exit_code, whoami};
use super::{bad_input, progress, remote};
use crate::cli::{HostArgs, Output, RunsCommand};
use crate::database::{Database, Location};
use crate::host::{Host, HostOptions};
use crate::signals::Signals;

pub async fn run(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List {
            pipeline,
            status,
            limit,
            output,
            host,
        } => {
            if host.server.is_some() {
                return remote::list(&host, pipeline, status, limit, output).await;
            }
            list(&host, pipeline, status, limit, output).await
        }
        RunsCommand::Show { id, output, host } => {
            if host.server.is_some() {
                return remote::show(&host, &id, output).await;
            }
            show(&host, &id, output).await
        }
        RunsCommand::Approve { id, by, host } => {
            if host.server.is_some() {
                return on_server(&host, &id, "approve", by).await;
            }
            decide(&host, &id, Decision::Approve { by: whoami(by) }).await
        }
        RunsCommand::Abort { id, by, host } => {
            if host.server.is_some() {
                return on_server(&host, &id, "abort", by).await;
            }
            decide(&host, &id, Decision::Abort { by: whoami(by) }).await
        }
        RunsCommand::Resume { output, host } => {
            if host.server.is_some() {
                return Ok(bad_input(
                    "a server resumes its unfinished runs itself when it starts; `runs resume` is for runs of this machine".into(),
                ));
            }
            resume(&host, output).await
        }
    }
}

/// A decision through the server: who decides is the token's holder.
async fn on_server(
    host: &HostArgs,
    id: &str,
    action: &str,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    if by.is_some() {
        return Ok(bad_input(
            "--as does not apply with --server: the token says who decides".into(),
        ));
    }
    remote::decide(host, id, action).await
}

/// The configured store, without loading any plugin.
async fn open_store(host: &HostArgs) -> Result<Arc<dyn Store>, ExitCode> {
    let config = super::load_config(&host.config)?;
    if let Err(e) = Location::of(&config) {
        return Err(bad_input(format!("{e:#}")));
    }
    match Database::open(&config, HostIdentity::this_process(config.server.lease)).await {
        Ok(db) => Ok(db.store()),
        Err(e) => {
            eprintln!("error: {e:#}");
            Err(ExitCode::from(1))
        }
    }
}

async fn list(
    host: &HostArgs,
    pipeline: Option<String>,
    status: Option<String>,
    limit: usize,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let status = match status.as_deref().map(parse_status).transpose() {
        Ok(s) => s,
        Err(e) => return Ok(bad_input(e)),
    };
    let store = match open_store(host).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let runs = store
        .list_runs(&RunFilter {
            pipeline,
            status,
            limit,
            ..RunFilter::default()
        })
        .await?;
    print_list(&runs, output)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs as a table, or as JSON.
pub fn print_list(runs: &[rollcage_store::Run], output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        outln!("{}", serde_json::to_string(runs)?);
        return Ok(());
    }
    outln!(
        "{:<22} {:<12} {:<10} {:<18} {:<12} {:<10}",
        "ID",
        "PIPELINE",
        "RELEASE",
        "STATUS",
        "STAGE",
        "BY"
    );
    for r in runs {
        outln!(
            "{:<22} {:<12} {:<10} {:<18} {:<12} {:<10}",
            r.id,
            r.run.pipeline,
            r.run.release,
            r.status.as_str(),
            r.stage.as_deref().unwrap_or_default(),
            r.run.started_by
        );
    }
    Ok(())
}

fn parse_status(s: &str) -> Result<RunStatus, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!(
            "--status `{s}`: use queued, running, awaiting_approval, succeeded, rolled_back or failed"
        )
    })
}

async fn show(host: &HostArgs, id: &str, output: Output) -> anyhow::Result<ExitCode> {
    let store = match open_store(host).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let run = match store.run(id).await {
        Ok(r) => r,
        Err(StoreError::NoSuchRun(_)) => return Ok(bad_input(format!("no run `{id}`"))),
        Err(e) => return Err(e.into()),
    };
    let log = store.events(id, 0).await?;
    print_show(&run, &log, output)?;
    Ok(ExitCode::SUCCESS)
}

/// A run and its log, for people or as JSON lines (each entry, then the run).
pub fn print_show(
    run: &rollcage_store::Run,
    log: &[rollcage_store::Event],
    output: Output,
) -> anyhow::Result<()> {
    let id = &run.id;
    if output == Output::Text {
        let r = &run.run;
        outln!(
            "run {id}: {} {} by {} (config {})",
            r.pipeline,
            r.release,
            r.started_by,
            r.config_hash
        );
        for (k, v) in &r.params {
            outln!("  param {k} = {v}");
        }
        // The components the run's plugins were loaded from, as recorded
        // when it started.
        let plugins = log
            .iter()
            .find(|e| e.kind == "run-started")
            .and_then(|e| e.data.get("plugins"))
            .and_then(|p| p.as_object());
        for (name, digest) in plugins.into_iter().flatten() {
            outln!("  plugin {name} {}", digest.as_str().unwrap_or("?"));
        }
    }
    for e in log {
        match output {
            Output::Json => outln!("{}", serde_json::to_string(e)?),
            Output::Text => {
                if let Some(line) = progress::describe(e, id) {
                    outln!("{line}");
                }
            }
        }
    }
    match output {
        Output::Text => outln!("{}", progress::summary(run)),
        Output::Json => outln!("{}", serde_json::json!({ "run": run })),
    }
    Ok(())
}

/// The host of `args`' configuration; `Err` with the exit code when the
/// configuration is invalid (its errors printed). `drives_runs`: it takes
/// up the notifications earlier hosts left queued.
async fn start(
    args: &HostArgs,
    local_runtime: bool,
    drives_runs: bool,
) -> anyhow::Result<Result<Host, ExitCode>> {
    let config = match super::load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(Err(code)),
    };
    let options = HostOptions {
        cache_dir: args.cache_dir.clone(),
        without_local_runtime: !local_runtime,
        leave_queued_notifications: !drives_runs,
        ..HostOptions::default()
    };
    Ok(Ok(Host::start(config, options).await?))
}

async fn decide(host: &HostArgs, id: &str, decision: Decision) -> anyhow::Result<ExitCode> {
    let h = match start(host, false, false).await? {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    let what = match &decision {
        Decision::Approve { by } => format!("approval by {by}"),
        Decision::Abort { by } => format!("abort by {by}"),
    };
    let result = h.engine.decide(id, decision).await;
    h.shutdown().await;
    match result {
        Ok(()) => {
            outln!("run {id}: {what} recorded; the run takes it within a second");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ EngineError::Store(StoreError::Database(_))) => Err(e.into()),
        Err(e) => Ok(bad_input(e.to_string())),
    }
}

/// Drive run `id` here: at once if no live host holds it; when one does,
/// once its lease runs out (a host that died), unless it is renewed (a
/// live host drives it: `None`, and it is left to that host).
async fn take_over(engine: &Engine, id: &str) -> Result<Option<RunStatus>, EngineError> {
    let mut told = false;
    let mut held_since: Option<(String, std::time::Instant)> = None;
    let lease = engine.store().lease_duration();
    loop {
        match engine.execute(id).await {
            Ok(status) => return Ok(Some(status)),
            Err(EngineError::HeldElsewhere { host, .. }) => {
                let since = match &held_since {
                    Some((h, since)) if *h == host => *since,
                    _ => {
                        held_since = Some((host.clone(), std::time::Instant::now()));
                        std::time::Instant::now()
                    }
                };
                // Renewed for two leases and more: its host is alive.
                if since.elapsed() > lease * 2 {
                    outln!("{id}: driven by host {host}; left to it");
                    return Ok(None);
                }
                if !told {
                    told = true;
                    eprintln!(
                        "{id}: held by host {host}; taking it over when its lease runs out (within {} s) unless that host renews it",
                        lease.as_secs().max(1)
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn resume(host: &HostArgs, output: Output) -> anyhow::Result<ExitCode> {
    // Before anything is started: a stop asked for meanwhile is kept.
    let mut signals = Signals::install().context("cannot install the signal handlers")?;
    let h = match start(host, true, true).await? {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    let unfinished = h.engine.store().unfinished_runs().await?;
    if unfinished.is_empty() && output == Output::Text {
        outln!("no unfinished run");
    }
    // Runs in different environments go on side by side; the store
    // queues runs that share one.
    let mut tasks = tokio::task::JoinSet::new();
    for run in &unfinished {
        let (engine, id) = (h.engine.clone(), run.id.clone());
        tasks.spawn(async move { (id.clone(), take_over(&engine, &id).await) });
    }
    let mut worst = ExitCode::SUCCESS;
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(joined) => joined,
                None => break,
            },
            stop = signals.recv() => {
                tasks.abort_all();
                // Another host (or the next `runs resume`) may take them
                // over at once.
                for run in &unfinished {
                    h.engine.give_up(&run.id).await;
                }
                h.suspend().await;
                eprintln!("{}: the runs not finished stay unfinished; `rollcage runs resume` continues them", stop.describe());
                return Ok(stop.exit_code());
            }
        };
        let (id, result) = joined?;
        let Some(status) = result? else {
            continue;
        };
        let run = h.engine.store().run(&id).await?;
        match output {
            Output::Text => outln!("{id}: {}", progress::summary(&run)),
            Output::Json => outln!("{}", serde_json::json!({ "run": run })),
        }
        if status != RunStatus::Succeeded {
            worst = exit_code(status);
        }
    }
    let left = h.settle_notifications().await;
    if let Some(line) = super::run::left_queued(left, &h.queued_notifications()) {
        eprintln!("{line}");
    }
    h.suspend().await;
    Ok(worst)
}
