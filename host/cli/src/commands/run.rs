//! `rollcage run`: start a run in this process and follow it to its end, or
//! (`--dry-run`) print the plan and the rollback plan without touching
//! anything. Exit code 0 succeeded, 1 failed or rolled back, 2 bad input.

use std::process::ExitCode;

use anyhow::Context as _;
use rollcage_core::{Release, Version};
use rollcage_engine::run::{EngineError, RunRequest};
use rollcage_store::{HostIdentity, RunFilter, RunStatus};

use super::{bad_input, progress};
use crate::cli::{Output, RunArgs};
use crate::database::{Database, Location};
use crate::host::{Host, HostOptions};
use crate::signals::Signals;

/// Who is at the keyboard: `--as`, else `USER` or `LOGNAME`, else the
/// operating system's name of this process's user (`USER` is often unset
/// in containers, cron jobs and CI runners).
pub fn whoami(by: Option<String>) -> String {
    let set = |s: &String| !s.trim().is_empty();
    by.filter(set)
        .or_else(|| std::env::var("USER").ok().filter(set))
        .or_else(|| std::env::var("LOGNAME").ok().filter(set))
        .or_else(os_user_name)
        .unwrap_or_else(|| "unknown".into())
}

/// The user database's name for this process's user id (`getpwuid_r`).
fn os_user_name() -> Option<String> {
    // SAFETY: getuid takes nothing and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into
    // `buf`, which outlives every use of them below.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    name.to_str()
        .ok()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// A run's `--param` pairs and `--notes` text.
type Inputs = (Vec<(String, String)>, Option<String>);

/// The release checked, the parameters and the notes of a run request.
fn inputs(args: &RunArgs) -> Result<Inputs, String> {
    args.release
        .parse::<Version>()
        .map_err(|e| format!("--release: {e}"))?;
    let params = params(&args.params)?;
    let notes = match &args.notes {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--notes {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok((params, notes))
}

/// `k=v` pairs, or the first that is not one.
fn params(raw: &[String]) -> Result<Vec<(String, String)>, String> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(format!("--param `{p}`: expected KEY=VALUE")),
        })
        .collect()
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.host.server.is_some() {
        return on_server(args).await;
    }
    let config = match super::load_config(&args.host.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (params, notes) = match inputs(&args) {
        Ok(x) => x,
        Err(e) => return Ok(bad_input(e)),
    };
    // A person reads the progress: the console notifier would repeat it.
    if args.output == Output::Text && crate::logging::person_at_terminal() {
        crate::logging::quiet_plugins(crate::host::console_notifiers(&config));
    }
    let Some(pipeline) = config.pipelines.get(&args.pipeline) else {
        let names: Vec<&str> = config.pipelines.keys().map(String::as_str).collect();
        return Ok(bad_input(format!(
            "unknown pipeline `{}`; the pipelines are: {}",
            args.pipeline,
            names.join(", ")
        )));
    };
    for s in &args.stages {
        if !pipeline.stages.contains(s) {
            return Ok(bad_input(format!(
                "pipeline `{}` has no stage `{s}`; its stages are: {}",
                pipeline.name,
                pipeline.stages.join(", ")
            )));
        }
    }
    let stages: Vec<String> = if args.stages.is_empty() {
        pipeline.stages.clone()
    } else {
        pipeline
            .stages
            .iter()
            .filter(|s| args.stages.contains(s))
            .cloned()
            .collect()
    };
    let release = Release {
        version: args.release.clone(),
        notes: notes.clone(),
        params: params.clone(),
    };

    if args.dry_run {
        return dry_run(config, &args, &stages, release).await;
    }

    let request = RunRequest {
        pipeline: args.pipeline.clone(),
        release: args.release.clone(),
        notes,
        params,
        stages: (!args.stages.is_empty()).then(|| stages.clone()),
        started_by: whoami(args.by.clone()),
    };
    let options = HostOptions {
        cache_dir: args.host.cache_dir.clone(),
        ..HostOptions::default()
    };
    // Before anything is started: a stop asked for meanwhile is kept.
    let mut signals = Signals::install().context("cannot install the signal handlers")?;
    let host = match Host::start(config.clone(), options.clone()).await {
        Ok(host) => host,
        Err(e) if local_runtime_in_use(&e) => {
            return queued(config, options, request, &args, &e, &mut signals).await;
        }
        Err(e) => return Err(e),
    };
    let engine = host.engine.clone();
    let id = match engine.create(request).await {
        Ok(id) => id,
        Err(e @ (EngineError::Store(_) | EngineError::Finished(..))) => {
            host.suspend().await;
            return Err(e.into());
        }
        Err(e) => {
            host.suspend().await;
            return Ok(bad_input(e.to_string()));
        }
    };
    drive(host, id, &args, &mut signals).await
}

/// Whether the host could not start because another process runs the
/// local runtime of this configuration.
fn local_runtime_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rollcage_local::LocalError>(),
            Some(rollcage_local::LocalError::InUse { .. })
        )
    })
}

/// Another process runs the local runtime (a run in another terminal, or
/// a server): record the run now, queued, and drive it once the runtime is
/// free; if a server takes it first, follow it there.
async fn queued(
    config: rollcage_config::Config,
    options: HostOptions,
    request: RunRequest,
    args: &RunArgs,
    why: &anyhow::Error,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let store = crate::host::open_store(&config).await?;
    let stages = config.pipelines[&request.pipeline].stages.clone();
    let id = match rollcage_engine::run::record(&*store, &stages, &config.hash, request).await {
        Ok(id) => id,
        Err(e @ EngineError::Store(_)) => return Err(e.into()),
        Err(e) => return Ok(bad_input(e.to_string())),
    };
    let held: Vec<String> = store
        .environment_locks()
        .await?
        .into_iter()
        .filter(|(env, _)| stages.contains(env))
        .map(|(env, run)| format!("`{env}` is held by run {run}"))
        .collect();
    eprintln!(
        "run {id} is queued: {}{}; it starts when that process is done",
        why.root_cause(),
        if held.is_empty() {
            String::new()
        } else {
            format!(" ({})", held.join(", "))
        }
    );
    loop {
        let run = store.run(&id).await?;
        if run.status.is_finished() || store.holder(&id).await?.is_some() {
            // Another host drives it (or has finished it): follow it there.
            let followed = tokio::select! {
                r = progress::follow(&*store, &id, args.output, true) => r,
                stop = signals.recv() => {
                    eprintln!("{}: stopped following run {id}; its host goes on with it", stop.describe());
                    return Ok(stop.exit_code());
                }
            };
            let (run, last) = followed?;
            if args.output == Output::Text {
                progress::late_notifications(&*store, &id, last).await?;
                outln!("{}", progress::summary(&run));
            }
            return Ok(exit_code(run.status));
        }
        match Host::start(config.clone(), options.clone()).await {
            Ok(host) => return drive(host, id, args, signals).await,
            Err(e) if local_runtime_in_use(&e) => {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    stop = signals.recv() => {
                        eprintln!("{}: run {id} stays queued; `rollcage runs resume` starts it", stop.describe());
                        return Ok(stop.exit_code());
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Drive run `id` on `host` and follow it to its end, or until a stop
/// signal: then the run is given up unfinished and the host's services
/// stopped.
async fn drive(
    host: Host,
    id: String,
    args: &RunArgs,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let engine = host.engine.clone();
    let task = {
        let (engine, id) = (engine.clone(), id.clone());
        tokio::spawn(async move { engine.execute(&id).await })
    };
    let followed = tokio::select! {
        r = progress::follow(&**engine.store(), &id, args.output, true) => r,
        stop = signals.recv() => {
            task.abort();
            // Another host (or `runs resume`) may take it over at once.
            engine.give_up(&id).await;
            // It may have ended just before, unseen by the progress yet.
            let ended = engine.store().run(&id).await.ok().filter(|r| r.status.is_finished());
            host.suspend().await;
            match ended {
                Some(run) => eprintln!("{}: {}", stop.describe(), progress::summary(&run)),
                None => eprintln!("{}: run {id} is unfinished; `rollcage runs resume` continues it", stop.describe()),
            }
            return Ok(stop.exit_code());
        }
    };
    let result = task.await;
    // A one-off process: give the notifications a bounded time, and say
    // what it leaves behind. A stop signal ends the wait at once: they
    // stay queued in the store for the next host.
    let (left, stopped) = tokio::select! {
        left = host.settle_notifications() => (left, None),
        stop = signals.recv() => (host.pending_notifications(), Some(stop)),
    };
    let queued = host.queued_notifications();
    host.suspend().await;
    let (run, last) = followed?;
    let status = match result.context("the run's task failed")? {
        // A server on the same database took the run first: it drove it,
        // and this command followed it.
        Err(EngineError::HeldElsewhere { host, .. }) => {
            eprintln!("run {id} was driven by host {host}");
            run.status
        }
        other => other?,
    };
    if args.output == Output::Text {
        progress::late_notifications(&**engine.store(), &id, last).await?;
        outln!("{}", progress::summary(&run));
    }
    if let Some(line) = left_queued(left, &queued) {
        eprintln!("{line}");
    }
    if let Some(stop) = stopped {
        eprintln!("{}: stopped waiting for the notifications", stop.describe());
        return Ok(stop.exit_code());
    }
    Ok(exit_code(status))
}

/// What a one-off command says of the notifications it leaves queued.
pub fn left_queued(left: usize, by_notifier: &str) -> Option<String> {
    (left > 0).then(|| {
        format!(
            "{left} notification(s) not delivered yet ({by_notifier}): they stay queued in the \
             database, and the next rollcage command that starts a host on it delivers them"
        )
    })
}

/// `run --server`: checked here like in-process runs, then started and
/// followed on the server (which checks pipeline and stages).
async fn on_server(args: RunArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(None, false);
    if args.dry_run {
        return Ok(bad_input(
            "--dry-run reads the configuration here; drop --server".into(),
        ));
    }
    if args.by.is_some() {
        return Ok(bad_input(
            "--as does not apply with --server: the token says who starts the run".into(),
        ));
    }
    let (params, notes) = match inputs(&args) {
        Ok(x) => x,
        Err(e) => return Ok(bad_input(e)),
    };
    let start = super::remote::Start {
        pipeline: args.pipeline.clone(),
        release: args.release.clone(),
        notes,
        params,
        stages: args.stages.clone(),
    };
    super::remote::run(&args.host, start, args.output).await
}

/// 0 for a run that succeeded, 1 for any other end.
pub fn exit_code(status: RunStatus) -> ExitCode {
    if status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The plan of every stage, asked of the real strategies against simulated
/// environments. The stable release is the one the last successful run of
/// the pipeline deployed, read from the database if there is one.
async fn dry_run(
    config: rollcage_config::Config,
    args: &RunArgs,
    stages: &[String],
    release: Release,
) -> anyhow::Result<ExitCode> {
    let stable = last_release(&config, &args.pipeline).await;
    let envs: Vec<_> = stages
        .iter()
        .map(|s| config.environments[s].clone())
        .collect();
    let host = Host::start(
        config,
        HostOptions {
            cache_dir: args.host.cache_dir.clone(),
            in_memory_store: true,
            without_local_runtime: true,
            leave_queued_notifications: true,
        },
    )
    .await?;
    let mut out = Vec::new();
    for env in &envs {
        let plan = host.engine.environment(&env.name).expect("assembled");
        let preview = rollcage_engine::preview::preview(
            &*plan.strategy,
            &env.name,
            release.clone(),
            stable.clone().map(Release::new),
            env.replicas,
            &plan.strategy_params,
        )
        .await
        .map_err(|e| anyhow::anyhow!("environment `{}`: {e}", env.name));
        let preview = match preview {
            Ok(p) => p,
            Err(e) => {
                host.shutdown().await;
                return Ok(bad_input(format!("{e:#}")));
            }
        };
        // Expose steps need a control of the exposure kind.
        let kind_of = |id: &str| {
            host.plugins
                .iter()
                .find(|p| p.id == id)
                .and_then(|p| p.kind.parse::<rollcage_core::PluginKind>().ok())
        };
        let problems = rollcage_engine::preview::exposure_problems(
            &env.name,
            &preview.plan,
            plan.exposure.as_deref(),
            &kind_of,
        );
        if !problems.is_empty() {
            host.shutdown().await;
            return Ok(bad_input(problems.join("\n")));
        }
        let restores: Vec<&str> = preview.flags.iter().map(|(_, f)| f.as_str()).collect();
        match args.output {
            Output::Json => out.push(serde_json::json!({
                "stage": env.name,
                "stable": stable,
                "approval": plan.approval,
                "window": plan.window.as_ref().map(|w| w.to_string()),
                "plan": preview.plan,
                "rollback_after_step": preview.rollback_after,
                "rollback": preview.rollback,
                "rollback_restores_flags": restores,
                "paused_ms": preview.paused_ms,
            })),
            Output::Text => {
                outln!(
                    "[{}] {}{}{}",
                    env.name,
                    match &stable {
                        Some(s) => format!("{s} -> {}", release.version),
                        None => format!("first deployment of {}", release.version),
                    },
                    if plan.approval {
                        "; a person approves first"
                    } else {
                        ""
                    },
                    plan.window
                        .as_ref()
                        .map(|w| format!("; window {w}"))
                        .unwrap_or_default()
                );
                for (i, a) in preview.plan.iter().enumerate() {
                    outln!("  {:>2}. {a}", i + 1);
                }
                outln!(
                    "  if the check after step {} failed, the rollback would be:",
                    preview.rollback_after
                );
                if !restores.is_empty() {
                    // The engine restores flags itself, before the plan.
                    outln!(
                        "      restore flag {} to its exposure before the run",
                        restores.join(", ")
                    );
                }
                for a in &preview.rollback {
                    outln!("      {a}");
                }
                outln!(
                    "  {} step(s), {} of timed pauses{}",
                    preview.plan.len(),
                    rollcage_core::duration::format(preview.paused_ms),
                    if preview.approvals > 0 {
                        format!(", {} approval pause(s)", preview.approvals)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    host.shutdown().await;
    if args.output == Output::Json {
        outln!("{}", serde_json::json!({ "dry_run": out }));
    } else {
        outln!("dry run: nothing was touched");
    }
    Ok(ExitCode::SUCCESS)
}

/// The release the last successful run of `pipeline` deployed, if the
/// database exists and has one.
async fn last_release(config: &rollcage_config::Config, pipeline: &str) -> Option<String> {
    // A dry run creates no database.
    if let Ok(Location::Sqlite(path)) = Location::of(config)
        && !path.exists()
    {
        return None;
    }
    let store = Database::open(config, HostIdentity::this_process(config.server.lease))
        .await
        .ok()?
        .store();
    let runs = store
        .list_runs(&RunFilter {
            pipeline: Some(pipeline.to_string()),
            status: Some(RunStatus::Succeeded),
            limit: 1,
            ..RunFilter::default()
        })
        .await
        .ok()?;
    runs.into_iter().next().map(|r| r.run.release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_at_the_keyboard() {
        assert_eq!(whoami(Some("bob".into())), "bob");
        // Whatever the environment says, a blank `--as` is no one.
        assert_ne!(whoami(Some("  ".into())), "  ");
    }

    #[test]
    fn only_undelivered_notifications_are_mentioned() {
        assert_eq!(left_queued(0, ""), None);
        let line = left_queued(3, "slack: 2, jira: 1").unwrap();
        assert!(
            line.starts_with("3 notification(s) not delivered yet (slack: 2, jira: 1)"),
            "{line}"
        );
    }

    #[test]
    fn params_are_key_value_pairs() {
        assert_eq!(
            params(&["jira_issue=OPS-12".into(), "note=a=b".into()]).unwrap(),
            vec![
                ("jira_issue".to_string(), "OPS-12".to_string()),
                ("note".to_string(), "a=b".to_string())
            ]
        );
        assert_eq!(
            params(&["oops".into()]).unwrap_err(),
            "--param `oops`: expected KEY=VALUE"
        );
    }
}
