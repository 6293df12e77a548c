//! The host: a validated configuration brought to life. It opens the store,
//! starts the embedded local runtime when the configuration uses it, loads
//! every plugin (each instance behind one circuit breaker), and assembles
//! the engine's environment and pipeline plans. `run`, `runs`, `demo` and
//! `serve` all start from here, so they see the same world.
//!
//! Notifications go through one queue with a lane per notifier, kept in the
//! store: a host takes up at start what the last one left queued, and
//! before it stops waits a bounded time for what is pending
//! ([`Host::settle_notifications`]); the rest stays queued for the next.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rollcage_config::{Approval, Concurrency, Config, PluginRef, WindowPolicy};
use rollcage_core::Redactor;
use rollcage_core::{Job, Notifier, PluginId};
use rollcage_engine::analysis::AnalysisSpec;
use rollcage_engine::bake::BakeSpec;
use rollcage_engine::breaker::{self, Breaker, BreakerConfig};
use rollcage_engine::run::{Engine, EnvironmentPlan, PipelinePlan};
use rollcage_local::{LocalRuntime, LocalRuntimeOptions};
use rollcage_notify::{Dispatcher, Queue, QueueOptions};
use rollcage_runtime::{
    ComponentCache, EnvSecrets, MapSecrets, Runtime, RuntimeOptions, SecretSource,
};
use rollcage_store::{HostIdentity, Redacted, Store};

use crate::database::{Database, Location};

use crate::plugins::{LocalGrant, PluginSet, load_all};

/// How often readiness is polled after `apply-slot`.
const READINESS_POLL: Duration = Duration::from_millis(500);

/// Where the host keeps its state.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Compiled-component cache (default: `[server] cache_dir`, then the
    /// user cache folder).
    pub cache_dir: Option<PathBuf>,
    /// Use a store in memory instead of `[server] database` (dry runs).
    pub in_memory_store: bool,
    /// Do not start the local runtime even if the configuration uses it
    /// (dry runs, read-only commands).
    pub without_local_runtime: bool,
    /// Leave the notifications earlier hosts left queued to the next host
    /// that drives runs (a one-off decision, gone before it could deliver
    /// them).
    pub leave_queued_notifications: bool,
}

/// A running host.
pub struct Host {
    pub engine: Arc<Engine>,
    /// Closed when the host stops.
    database: Database,
    pub local: Option<LocalRuntime>,
    /// Every loaded plugin instance with its grants and breaker, for the
    /// API's `/v1/plugins` and `/metrics`.
    pub plugins: Vec<rollcage_api::PluginEntry>,
    /// The notifiers' queue the engine's plans send to.
    pub notifications: Queue,
    /// How long a stopping host waits for pending notifications: the
    /// longest time limit of a notifier, one try of each.
    notify_grace: Duration,
    /// Takes over the notifications of hosts that die while this one runs.
    takeover: Option<tokio::task::JoinHandle<()>>,
}

/// Keep this host's leases (its queued deliveries among them) renewed,
/// and every lease take up what hosts that died left queued: the store
/// hands each delivery to one host.
fn take_over_notifications(queue: &Queue, engine: &Engine) -> tokio::task::JoinHandle<()> {
    engine.keep_leases();
    let (queue, every) = (queue.clone(), engine.store().lease_duration());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = queue.resume().await {
                tracing::warn!("cannot take up notifications left queued: {e}");
            }
        }
    })
}

impl Host {
    /// Bring `config` to life. Every plugin that fails to load is reported
    /// at once, each naming its plugin.
    pub async fn start(config: Config, opts: HostOptions) -> anyhow::Result<Host> {
        let secrets = secret_source(&config)?;
        let cache_dir = opts
            .cache_dir
            .clone()
            .or(config.server.cache_dir.clone())
            .or_else(ComponentCache::default_dir);
        if let Some(dir) = &cache_dir {
            private_dir(dir)?;
        }
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir,
            secrets: secrets.clone(),
            ..RuntimeOptions::default()
        })?;
        // The store before the local runtime: nothing to stop if it fails.
        let identity = HostIdentity::this_process(config.server.lease);
        let database = if opts.in_memory_store {
            Database::in_memory(identity)?
        } else {
            Database::open(&config, identity).await?
        };
        let store = database.store();
        let local = if uses_local_runtime(&config) && !opts.without_local_runtime {
            let dir = local_state_dir(&config);
            Some(
                LocalRuntime::start(LocalRuntimeOptions {
                    metrics_addr: config.server.local_metrics,
                    ..LocalRuntimeOptions::new(&dir)
                })
                .await
                .with_context(|| format!("cannot start the local runtime in {}", dir.display()))?,
            )
        } else {
            None
        };
        // Every secret the plugins are granted, and the local runtime's
        // admin token: kept out of the log, the store and notifications.
        let extra: Vec<(String, String)> = local
            .iter()
            .map(|l| ("ROLLCAGE_LOCAL_TOKEN".to_string(), l.token().to_string()))
            .collect();
        let redactor = install_redactor(&config, &*secrets, extra);
        let store: Arc<dyn Store> = Arc::new(Redacted::new(store, redactor.clone()));
        let grant = local.as_ref().map(|l| LocalGrant {
            admin_url: l.admin_url(),
            admin_host: l.admin_addr().to_string(),
            token: l.token().to_string(),
        });
        // Locked components the download cache lacks are fetched first;
        // cached ones are used without the network.
        let fetch_problems = crate::sources::fetch_missing(&config, &runtime).await;
        let set = load_all(&runtime, &config, grant.as_ref());
        let breakers = breakers(&config, &set);
        let mut problems = fetch_problems;
        if problems.is_empty() {
            problems = set.problems();
        }
        let assembled = if problems.is_empty() {
            assemble(&config, &set, &breakers, store)
        } else {
            Err(anyhow::anyhow!("{}", problems.join("\n")))
        };
        let assembled = match assembled {
            Ok((engine, queue)) if !opts.leave_queued_notifications => {
                // Before any run of this host queues more behind them.
                queue
                    .resume()
                    .await
                    .map(|_| (engine, queue))
                    .context("cannot take up the queued notifications")
            }
            other => other,
        };
        match assembled {
            Ok((engine, notifications)) => Ok(Host {
                takeover: (!opts.leave_queued_notifications)
                    .then(|| take_over_notifications(&notifications, &engine)),
                engine: Arc::new(
                    engine.with_redactor(redactor).with_plugin_digests(
                        set.digests
                            .iter()
                            .map(|(name, d)| (name.clone(), d.to_string()))
                            .collect(),
                    ),
                ),
                database,
                local,
                plugins: entries(&set, &breakers),
                notifications,
                notify_grace: notify_grace(&set),
            }),
            Err(e) => {
                // Stop what was started, keeping the services' record.
                if let Some(l) = local {
                    l.suspend().await;
                }
                Err(e)
            }
        }
    }

    /// Wait for the pending notifications, for the longest time limit of
    /// a notifier at most; how many are left, queued in the store for the
    /// next host.
    pub async fn settle_notifications(&self) -> usize {
        let left = self.notifications.settle(self.notify_grace).await;
        if left > 0 {
            let by: Vec<String> = self
                .notifications
                .pending_by_notifier()
                .iter()
                .map(|(id, n)| format!("{id}: {n}"))
                .collect();
            tracing::warn!(left, notifiers = %by.join(", "), "notifications left queued for the next host");
        }
        left
    }

    /// How many notifications are pending, over every notifier.
    pub fn pending_notifications(&self) -> usize {
        self.notifications
            .pending_by_notifier()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// What is left queued, per notifier (`slack: 2, jira: 1`).
    pub fn queued_notifications(&self) -> String {
        self.notifications
            .pending_by_notifier()
            .iter()
            .map(|(id, n)| format!("{id}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Stop the local runtime's instances and servers, and forget them.
    pub async fn shutdown(self) {
        if let Some(t) = &self.takeover {
            t.abort();
        }
        if let Some(l) = self.local {
            l.shutdown().await;
        }
        release_all(&self.engine).await;
        self.database.close().await;
    }

    /// Stop the local runtime's instances and servers but keep its record,
    /// so that the next command on this configuration finds the services
    /// it deployed (restarted at their recorded releases).
    pub async fn suspend(self) {
        if let Some(t) = &self.takeover {
            t.abort();
        }
        if let Some(l) = self.local {
            l.suspend().await;
        }
        release_all(&self.engine).await;
        self.database.close().await;
    }
}

/// Give up what this host holds (runs left unfinished, notifications left
/// queued) at a clean stop, so that the next host takes them at once.
async fn release_all(engine: &Engine) {
    if let Err(e) = engine.store().release_all().await {
        tracing::warn!(
            "cannot hand over this host's runs and notifications (they are taken over when its leases run out): {e}"
        );
    }
}

/// Create `dir` (and missing parents) for the owner only (0700), narrowing
/// it if it exists: the host's folders hold compiled plugins and logs.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// The secret source `[server] secrets_file` names, or the environment.
pub fn secret_source(config: &Config) -> anyhow::Result<Arc<dyn SecretSource>> {
    Ok(match &config.server.secrets_file {
        Some(file) => {
            let path = relative_to_config(config, file);
            Arc::new(MapSecrets::from_file(&path).map_err(anyhow::Error::msg)?)
        }
        None => Arc::new(EnvSecrets),
    })
}

/// A redactor of the value of every secret a plugin of `config` is granted
/// (as `secrets` has them) and of `extra` (`(name, value)`), installed in
/// the log writer and returned for the store and the engine. A value too
/// short to redact is warned about by name.
pub fn install_redactor(
    config: &Config,
    secrets: &dyn SecretSource,
    extra: Vec<(String, String)>,
) -> Arc<Redactor> {
    let mut names: Vec<&str> = config
        .plugins
        .values()
        .flat_map(|p| p.secrets.iter().map(String::as_str))
        .collect();
    names.sort();
    names.dedup();
    let values = names
        .into_iter()
        .filter_map(|n| secrets.get(n).map(|v| (n.to_string(), v)))
        .chain(extra);
    let (redactor, too_short) = Redactor::new(values);
    for name in too_short {
        tracing::warn!(
            secret = %name,
            "secret `{name}` is shorter than {} characters: it cannot be redacted from logs and run records",
            Redactor::MIN_LEN
        );
    }
    let redactor = Arc::new(redactor);
    crate::logging::set_redactor(redactor.clone());
    redactor
}

/// A handle on `[server] database` as this process, with secret values
/// kept out of what it writes: for a command that records a run before it
/// can start a host.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let database = Database::open(config, HostIdentity::this_process(config.server.lease)).await?;
    let secrets = secret_source(config)?;
    let redactor = install_redactor(config, &*secrets, vec![]);
    Ok(Arc::new(Redacted::new(database.store(), redactor)))
}

/// The plugin ids under which the console notifier of `config` logs: each
/// instance of `builtin:console`, and `console` used directly.
pub fn console_notifiers(config: &Config) -> Vec<String> {
    let mut ids: Vec<String> = config
        .plugins
        .iter()
        .filter(|(_, p)| {
            matches!(&p.component, rollcage_config::ComponentRef::Builtin(n) if n == "console")
        })
        .map(|(id, _)| id.to_string())
        .collect();
    if !config.plugins.keys().any(|id| id.as_str() == "console") {
        ids.push("console".into());
    }
    ids
}

/// Whether any plugin the configuration uses is a local-runtime builtin.
pub fn uses_local_runtime(config: &Config) -> bool {
    let is_local = |name: &str| matches!(name, "local" | "router-metrics");
    config
        .plugins
        .values()
        .any(|p| matches!(&p.component, rollcage_config::ComponentRef::Builtin(n) if is_local(n)))
        || config
            .checks
            .values()
            .any(|c| matches!(&c.plugin, PluginRef::Builtin(n) if is_local(n)))
        || config
            .environments
            .values()
            .any(|e| matches!(&e.provider, PluginRef::Builtin(n) if is_local(n)))
}

pub fn relative_to_config(config: &Config, path: &Path) -> PathBuf {
    match config.path.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// The local runtime's folder: beside the database file, or the
/// configuration.
fn local_state_dir(config: &Config) -> PathBuf {
    let folder = Location::of(config)
        .map(|l| l.folder(config))
        .unwrap_or_else(|_| PathBuf::from("."));
    folder.join(".rollcage-local")
}

/// One breaker per loaded plugin, with its instance's settings.
fn breakers(config: &Config, set: &PluginSet) -> BTreeMap<String, Arc<Breaker>> {
    set.loaded
        .iter()
        .map(|(name, plugin)| {
            // A check's breaker takes its plugin instance's settings.
            let settings = name
                .parse::<PluginId>()
                .ok()
                .and_then(|id| {
                    config.plugins.get(&id).map(|p| p.breaker).or_else(|| {
                        config.checks.get(&id).and_then(|c| match &c.plugin {
                            PluginRef::Instance(i) => config.plugins.get(i).map(|p| p.breaker),
                            PluginRef::Builtin(_) => None,
                        })
                    })
                })
                .unwrap_or_default();
            let config = BreakerConfig {
                failures: settings.failures,
                cool_down: settings.cool_down,
            };
            (name.clone(), Breaker::new(plugin.spec().id.clone(), config))
        })
        .collect()
}

/// The longest time limit of a loaded notifier (one try), 1 s at least.
fn notify_grace(set: &PluginSet) -> Duration {
    let longest = set
        .loaded
        .values()
        .filter(|p| p.notifier().is_some())
        .map(|p| p.spec().limits.timeout_ms)
        .max()
        .unwrap_or(0);
    Duration::from_millis(longest).max(Duration::from_secs(1))
}

/// What the API shows of each loaded plugin.
fn entries(
    set: &PluginSet,
    breakers: &BTreeMap<String, Arc<Breaker>>,
) -> Vec<rollcage_api::PluginEntry> {
    set.loaded
        .iter()
        .map(|(name, p)| {
            let spec = p.spec();
            rollcage_api::PluginEntry {
                id: name.clone(),
                kind: spec.kind.to_string(),
                component: spec.source_name.clone(),
                allow_hosts: spec
                    .grants
                    .allow_hosts
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
                secrets: spec.grants.secrets.clone(),
                memory_mb: spec.limits.memory_mb,
                timeout_ms: spec.limits.timeout_ms,
                breaker: breakers[name].clone(),
            }
        })
        .collect()
}

/// The engine's plans, from the configuration and the loaded plugins, and
/// the notification queue they send to.
fn assemble(
    config: &Config,
    set: &PluginSet,
    breakers: &BTreeMap<String, Arc<Breaker>>,
    store: Arc<dyn Store>,
) -> anyhow::Result<(Engine, Queue)> {
    let missing = |r: &PluginRef, kind: &str| {
        anyhow::anyhow!("plugin `{}` is not loaded as a {kind}", r.name())
    };
    // Every notifier named anywhere, once, behind its breaker: one lane
    // each, whichever pipelines and environments send to it.
    let mut guarded: BTreeMap<&str, Arc<dyn Notifier>> = BTreeMap::new();
    let named = config
        .environments
        .values()
        .flat_map(|e| &e.notify)
        .chain(config.pipelines.values().flat_map(|p| &p.notify));
    for r in named {
        if !guarded.contains_key(r.name()) {
            let n = set
                .get(r)
                .and_then(|p| p.notifier())
                .ok_or_else(|| missing(r, "notifier"))?;
            guarded.insert(r.name(), breaker::guard_notifier(n, &breakers[r.name()]));
        }
    }
    let queue = Queue::new(
        store.clone(),
        guarded.values().cloned().collect(),
        QueueOptions {
            capacity: config.server.notify_queue.get(),
            ..QueueOptions::default()
        },
    );
    let notifiers = |refs: &[PluginRef]| -> anyhow::Result<Dispatcher> {
        let ids: Vec<PluginId> = refs
            .iter()
            .map(|r| guarded[r.name()].id().clone())
            .collect();
        Ok(queue.dispatcher(&ids)?)
    };
    let mut checks = BTreeMap::new();
    for id in config.checks.keys() {
        let plugin = set
            .loaded
            .get(id.as_str())
            .and_then(|p| p.health_check())
            .ok_or_else(|| anyhow::anyhow!("check `{id}` is not loaded as a health check"))?;
        checks.insert(
            id.to_string(),
            breaker::guard_check(plugin, &breakers[id.as_str()]),
        );
    }
    // Every exposure plugin, by id: an expose step names one, or none for
    // its environment's `exposure`. Behind its breaker like the others: a
    // flag service that is down fails fast.
    let exposures: BTreeMap<String, Arc<dyn rollcage_core::ExposureControl>> = set
        .loaded
        .iter()
        .filter_map(|(id, p)| {
            let control = p.exposure()?;
            Some((id.clone(), breaker::guard_exposure(control, &breakers[id])))
        })
        .collect();
    let mut environments = Vec::new();
    for env in config.environments.values() {
        if let Some(r) = &env.exposure
            && !exposures.contains_key(r.name())
        {
            return Err(missing(r, "exposure"));
        }
        let provider = set
            .get(&env.provider)
            .and_then(|p| p.environment_provider())
            .ok_or_else(|| missing(&env.provider, "environment provider"))?;
        let strategy = set
            .get(&env.strategy)
            .and_then(|p| p.strategy())
            .ok_or_else(|| missing(&env.strategy, "strategy"))?;
        let a = &env.analysis;
        let jobs = |list: &[rollcage_config::JobConfig]| -> Vec<Job> {
            list.iter()
                .map(|j| Job {
                    name: j.name.clone(),
                    command: j.command.clone(),
                    env: j.env.clone().into_iter().collect(),
                    timeout_ms: j.timeout.as_millis() as u64,
                })
                .collect()
        };
        environments.push(EnvironmentPlan {
            name: env.name.clone(),
            provider: breaker::guard_provider(provider, &breakers[env.provider.name()]),
            strategy: breaker::guard_strategy(strategy, &breakers[env.strategy.name()]),
            strategy_params: env.strategy_params.to_string(),
            checks: checks.clone(),
            default_checks: a.checks.iter().map(|c| c.to_string()).collect(),
            analysis: AnalysisSpec {
                interval: a.interval,
                count: a.count,
                initial_delay: a.initial_delay,
                failure_limit: a.failure_limit,
                inconclusive_limit: a.inconclusive_limit,
                consecutive_error_limit: a.consecutive_error_limit,
                ..AnalysisSpec::default()
            },
            replicas: env.replicas,
            progress_deadline: env.progress_deadline,
            readiness_poll: READINESS_POLL,
            approval: env.approval == Approval::Manual,
            require_different_approver: env.require_different_approver,
            window: env.window.clone(),
            refuse_outside_window: env.outside_window == WindowPolicy::Refuse,
            refuse_when_busy: env.concurrency == Concurrency::Refuse,
            pre_jobs: jobs(&env.pre_jobs),
            post_jobs: jobs(&env.post_jobs),
            bake: env.bake.as_ref().map(|b| BakeSpec {
                duration: b.duration,
                interval: b.interval,
                checks: b.checks.iter().map(|c| c.to_string()).collect(),
                failure_limit: b.failure_limit.unwrap_or(a.failure_limit),
                inconclusive_limit: a.inconclusive_limit,
                consecutive_error_limit: a.consecutive_error_limit,
            }),
            notify: notifiers(&env.notify)?,
            exposures: exposures.clone(),
            exposure: env.exposure.as_ref().map(|r| r.name().to_string()),
            settle: env.settle,
        });
    }
    let mut pipelines = Vec::new();
    for p in config.pipelines.values() {
        pipelines.push(PipelinePlan {
            name: p.name.clone(),
            stages: p.stages.clone(),
            service: p.service["name"].as_str().unwrap_or(&p.name).to_string(),
            service_spec: p.service.to_string(),
            notify: notifiers(&p.notify)?,
        });
    }
    let engine = Engine::new(store, environments, pipelines, config.hash.clone());
    Ok((engine, queue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_notifier_ids_are_its_instances_and_the_builtin() {
        let text = "[plugins.desk]\ncomponent = \"builtin:console\"\n\n[plugins.loud]\ncomponent = \"builtin:webhook\"\nconfig = { url = \"http://127.0.0.1:1/\" }\n";
        let config =
            Config::parse(Path::new("r.toml"), text, &crate::plugins::config_context()).unwrap();
        assert_eq!(console_notifiers(&config), ["desk", "console"]);
    }
}
