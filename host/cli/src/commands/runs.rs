//! `rollcage runs list|show|approve|abort|resume`. Listing and showing read
//! the store only; approving and aborting go through the engine (which
//! checks that the run waits, and who may approve it) and the store, so the
//! process driving the run takes the decision wherever it runs.

use std::process::ExitCode;

use rollcage_engine::run::EngineError;
use rollcage_engine::stage::Decision;
use rollcage_store::{RunFilter, RunStatus, SqliteStore, Store, StoreError};

use super::run::{exit_code, whoami};
use super::{bad_input, progress};
use crate::cli::{HostArgs, Output, RunsCommand};
use crate::host::{Host, HostOptions, database_path};

pub async fn run(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List {
            pipeline,
            status,
            limit,
            output,
            host,
        } => list(&host, pipeline, status, limit, output).await,
        RunsCommand::Show { id, output, host } => show(&host, &id, output).await,
        RunsCommand::Approve { id, by, host } => {
            decide(&host, &id, Decision::Approve { by: whoami(by) }).await
        }
        RunsCommand::Abort { id, by, host } => {
            decide(&host, &id, Decision::Abort { by: whoami(by) }).await
        }
        RunsCommand::Resume { output, host } => resume(&host, output).await,
    }
}

/// The configured store, without loading any plugin.
fn open_store(host: &HostArgs) -> Result<SqliteStore, ExitCode> {
    let config = super::load_config(&host.config)?;
    let path = database_path(&config).map_err(|e| bad_input(format!("{e:#}")))?;
    SqliteStore::open(&path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
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
    let store = match open_store(host) {
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
    if output == Output::Json {
        println!("{}", serde_json::to_string(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<12} {:<10} {:<18} {:<12} {:<10}",
        "ID", "PIPELINE", "RELEASE", "STATUS", "STAGE", "BY"
    );
    for r in runs {
        println!(
            "{:<22} {:<12} {:<10} {:<18} {:<12} {:<10}",
            r.id,
            r.run.pipeline,
            r.run.release,
            r.status.as_str(),
            r.stage.unwrap_or_default(),
            r.run.started_by
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_status(s: &str) -> Result<RunStatus, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!(
            "--status `{s}`: use queued, running, awaiting_approval, succeeded, rolled_back or failed"
        )
    })
}

async fn show(host: &HostArgs, id: &str, output: Output) -> anyhow::Result<ExitCode> {
    let store = match open_store(host) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let run = match store.run(id).await {
        Ok(r) => r,
        Err(StoreError::NoSuchRun(_)) => return Ok(bad_input(format!("no run `{id}`"))),
        Err(e) => return Err(e.into()),
    };
    if output == Output::Text {
        let r = &run.run;
        println!(
            "run {id}: {} {} by {} (config {})",
            r.pipeline, r.release, r.started_by, r.config_hash
        );
        for (k, v) in &r.params {
            println!("  param {k} = {v}");
        }
    }
    let run = progress::follow(&store, id, output, false).await?;
    if output == Output::Text {
        println!("{}", progress::summary(&run));
    }
    Ok(ExitCode::SUCCESS)
}

/// The host of `args`' configuration; `Err` with the exit code when the
/// configuration is invalid (its errors printed).
async fn start(args: &HostArgs, local_runtime: bool) -> anyhow::Result<Result<Host, ExitCode>> {
    let config = match super::load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(Err(code)),
    };
    let options = HostOptions {
        cache_dir: args.cache_dir.clone(),
        without_local_runtime: !local_runtime,
        ..HostOptions::default()
    };
    Ok(Ok(Host::start(config, options).await?))
}

async fn decide(host: &HostArgs, id: &str, decision: Decision) -> anyhow::Result<ExitCode> {
    let h = match start(host, false).await? {
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
            println!("run {id}: {what} recorded; the run takes it within a second");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ EngineError::Store(StoreError::Database(_))) => Err(e.into()),
        Err(e) => Ok(bad_input(e.to_string())),
    }
}

async fn resume(host: &HostArgs, output: Output) -> anyhow::Result<ExitCode> {
    let h = match start(host, true).await? {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    let unfinished = h.engine.store().unfinished_runs().await?;
    if unfinished.is_empty() && output == Output::Text {
        println!("no unfinished run");
    }
    // Runs in different environments go on side by side; the engine
    // queues runs that share one.
    let mut tasks = tokio::task::JoinSet::new();
    for run in &unfinished {
        let (engine, id) = (h.engine.clone(), run.id.clone());
        tasks.spawn(async move { (id.clone(), engine.execute(&id).await) });
    }
    let mut worst = ExitCode::SUCCESS;
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined?;
        let status = result?;
        let run = h.engine.store().run(&id).await?;
        match output {
            Output::Text => println!("{id}: {}", progress::summary(&run)),
            Output::Json => println!("{}", serde_json::json!({ "run": run })),
        }
        if status != RunStatus::Succeeded {
            worst = exit_code(status);
        }
    }
    h.suspend().await;
    Ok(worst)
}
