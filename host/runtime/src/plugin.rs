//! A loaded plugin: its checked component, one `InstancePre` (of the
//! bindings of the contract version the component targets), and the five
//! `rollcage-core` traits implemented over a fresh `Store` per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rollcage_core::{
    Action, CheckTarget, DeployState, EnvironmentStatus, Event, ExposureStatus, Job, JobResult,
    Measurement, Plugin, PluginError, PluginId, PluginKind, Problem, RouteWeight, SlotSpec, Target,
};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::{exposure, health_check, notifier, provider, strategy, v0_1};
use crate::convert::*;
use crate::engine::{EPOCH_TICK, Runtime};
use crate::error::LoadError;
use crate::inspect::{ComponentInfo, check_preamble, component_info};
use crate::limiter::count_limit;
use crate::state::{CallState, PluginShared};
use crate::text::{clip_owned, clip_tail};
pub use rollcage_core::Limits;
use rollcage_core::grants::{Grants, TlsCa};

/// Everything needed to load one configured plugin instance.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Instance id (`[plugins.<id>]`).
    pub id: PluginId,
    /// Kind: the world the component must fit.
    pub kind: PluginKind,
    /// Where the component came from, for messages: a path or `builtin:<name>`.
    pub source_name: String,
    /// Capability grants.
    pub grants: Grants,
    /// Limits.
    pub limits: Limits,
    /// The plugin's `config` table as JSON.
    pub config_json: String,
}

/// The prepared instance, by kind and contract version.
enum WorldPre {
    Provider(provider::EnvironmentProviderPre<CallState>),
    Strategy(strategy::StrategyPre<CallState>),
    HealthCheck(health_check::HealthCheckPre<CallState>),
    Notifier(notifier::NotifierPre<CallState>),
    Exposure(exposure::ExposurePre<CallState>),
    ProviderV01(v0_1::provider::EnvironmentProviderPre<CallState>),
    StrategyV01(v0_1::strategy::StrategyPre<CallState>),
    HealthCheckV01(v0_1::health_check::HealthCheckPre<CallState>),
    NotifierV01(v0_1::notifier::NotifierPre<CallState>),
}

/// A plugin ready to be called.
pub struct LoadedPlugin {
    runtime: Runtime,
    shared: Arc<PluginShared>,
    spec: PluginSpec,
    pre: WorldPre,
    info: ComponentInfo,
    wit_version: &'static str,
}

impl Runtime {
    /// Compile (or fetch from the cache) `wasm`, check that it fits the
    /// spec's world and that the host provides all it imports, and prepare
    /// it for calls.
    /// A component pinned by digest comes as [`crate::Wasm::verified`], so
    /// the cache does not hash its bytes again.
    pub fn load<'a>(
        &self,
        spec: PluginSpec,
        wasm: impl Into<crate::Wasm<'a>>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let wasm = wasm.into();
        let not_component = |reason: String| LoadError::NotAComponent {
            plugin: spec.id.clone(),
            source_name: spec.source_name.clone(),
            reason,
        };
        check_preamble(wasm.bytes()).map_err(not_component)?;
        if spec.kind == PluginKind::Strategy
            && (!spec.grants.allow_hosts.is_empty()
                || !spec.grants.allow_private.is_empty()
                || !spec.grants.secrets.is_empty()
                || spec.grants.tls_ca.is_some())
        {
            return Err(LoadError::GrantedStrategy {
                plugin: spec.id.clone(),
                source_name: spec.source_name.clone(),
            });
        }
        let engine = &self.inner.engine;
        let component = self
            .inner
            .cache
            .get(engine, wasm)
            .map_err(|e| LoadError::Compile {
                plugin: spec.id.clone(),
                source_name: spec.source_name.clone(),
                detail: format!("{e:#}"),
            })?;
        let info = component_info(engine, &component, wasm.bytes().len());
        let wanted = spec.kind.export_interface();
        let Some(version) = info
            .exports
            .iter()
            .find_map(|e| spec.kind.version_of_export(e))
        else {
            return Err(LoadError::WrongWorld {
                plugin: spec.id.clone(),
                source_name: spec.source_name.clone(),
                world: spec.kind.world().to_string(),
                missing: wanted.to_string(),
                exports: if info.exports.is_empty() {
                    "nothing".into()
                } else {
                    info.exports.join(", ")
                },
            });
        };
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| unknown_import(&spec, &info, e))?;
        let world_err = |e: wasmtime::Error| LoadError::WrongWorld {
            plugin: spec.id.clone(),
            source_name: spec.source_name.clone(),
            world: spec.kind.world().to_string(),
            missing: format!(
                "{}@{version} with the functions and types of rollcage:plugin@{version}",
                spec.kind.export_name()
            ),
            exports: e.to_string(),
        };
        let pre = match (spec.kind, version) {
            (PluginKind::EnvironmentProvider, "0.1.0") => WorldPre::ProviderV01(
                v0_1::provider::EnvironmentProviderPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::EnvironmentProvider, _) => WorldPre::Provider(
                provider::EnvironmentProviderPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::Strategy, "0.1.0") => WorldPre::StrategyV01(
                v0_1::strategy::StrategyPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::Strategy, _) => {
                WorldPre::Strategy(strategy::StrategyPre::new(instance_pre).map_err(world_err)?)
            }
            (PluginKind::HealthCheck, "0.1.0") => WorldPre::HealthCheckV01(
                v0_1::health_check::HealthCheckPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::HealthCheck, _) => WorldPre::HealthCheck(
                health_check::HealthCheckPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::Notifier, "0.1.0") => WorldPre::NotifierV01(
                v0_1::notifier::NotifierPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::Notifier, _) => {
                WorldPre::Notifier(notifier::NotifierPre::new(instance_pre).map_err(world_err)?)
            }
            (PluginKind::Exposure, _) => {
                WorldPre::Exposure(exposure::ExposurePre::new(instance_pre).map_err(world_err)?)
            }
        };
        let tls = match &spec.grants.tls_ca {
            None => self.inner.net.default_tls(),
            Some(ca) => self.trust_root(&spec, ca)?,
        };
        let shared = Arc::new(PluginShared {
            id: spec.id.clone(),
            config_json: spec.config_json.clone(),
            grants: spec.grants.clone(),
            secrets: self.inner.secrets.clone(),
            limits: spec.limits,
            net: self.inner.net.clone(),
            tls,
        });
        Ok(Arc::new(LoadedPlugin {
            runtime: self.clone(),
            shared,
            spec,
            pre,
            info,
            wit_version: version,
        }))
    }
}

impl Runtime {
    /// The TLS settings of a plugin granted `tls_ca`: its certificates read
    /// now (from the file or the host's secret source) and trusted beside
    /// the public roots.
    fn trust_root(
        &self,
        spec: &PluginSpec,
        ca: &TlsCa,
    ) -> Result<Arc<rustls::ClientConfig>, LoadError> {
        let bad = |reason: String| LoadError::TlsCa {
            plugin: spec.id.clone(),
            source_name: spec.source_name.clone(),
            ca: ca.to_string(),
            reason,
        };
        let pem = match ca {
            TlsCa::File(path) => std::fs::read(path).map_err(|e| bad(e.to_string()))?,
            TlsCa::Secret(name) => self
                .inner
                .secrets
                .get(name)
                .ok_or_else(|| bad("the secret source has no such secret".into()))?
                .into_bytes(),
        };
        self.inner.net.tls_with_ca(&pem).map_err(bad)
    }
}

fn unknown_import(spec: &PluginSpec, info: &ComponentInfo, e: wasmtime::Error) -> LoadError {
    let detail = format!("{e:?}");
    let import = info
        .imports
        .iter()
        .find(|i| detail.contains(i.as_str()))
        .cloned()
        .unwrap_or_else(|| "an import".into());
    LoadError::UnknownImport {
        plugin: spec.id.clone(),
        source_name: spec.source_name.clone(),
        import,
        detail: e.to_string(),
    }
}

impl LoadedPlugin {
    /// The plugin's kind.
    pub fn kind(&self) -> PluginKind {
        self.spec.kind
    }

    /// The spec it was loaded from.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// What the component imports and exports.
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// The contract version the component targets (`0.2.0`, `0.1.0`).
    pub fn wit_version(&self) -> &'static str {
        self.wit_version
    }

    /// This plugin as an environment provider, if it is one.
    pub fn environment_provider(
        self: &Arc<Self>,
    ) -> Option<Arc<dyn rollcage_core::EnvironmentProvider>> {
        matches!(self.pre, WorldPre::Provider(_) | WorldPre::ProviderV01(_))
            .then(|| self.clone() as _)
    }

    /// This plugin as a strategy, if it is one.
    pub fn strategy(self: &Arc<Self>) -> Option<Arc<dyn rollcage_core::Strategy>> {
        matches!(self.pre, WorldPre::Strategy(_) | WorldPre::StrategyV01(_))
            .then(|| self.clone() as _)
    }

    /// This plugin as a health check, if it is one.
    pub fn health_check(self: &Arc<Self>) -> Option<Arc<dyn rollcage_core::HealthCheck>> {
        matches!(
            self.pre,
            WorldPre::HealthCheck(_) | WorldPre::HealthCheckV01(_)
        )
        .then(|| self.clone() as _)
    }

    /// This plugin as a notifier, if it is one.
    pub fn notifier(self: &Arc<Self>) -> Option<Arc<dyn rollcage_core::Notifier>> {
        matches!(self.pre, WorldPre::Notifier(_) | WorldPre::NotifierV01(_))
            .then(|| self.clone() as _)
    }

    /// This plugin as an exposure control, if it is one.
    pub fn exposure(self: &Arc<Self>) -> Option<Arc<dyn rollcage_core::ExposureControl>> {
        matches!(self.pre, WorldPre::Exposure(_)).then(|| self.clone() as _)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.spec.limits.timeout_ms)
    }

    /// A fresh store: no state survives from one call to the next.
    fn store(&self) -> Store<CallState> {
        let mut store = Store::new(
            &self.runtime.inner.engine,
            CallState::new(self.shared.clone()),
        );
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + self.timeout();
        store.set_epoch_deadline(1);
        // Every tick: stop at the deadline, else yield to the executor so
        // that a busy plugin never starves the host's other tasks.
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Benchmark hook, not part of the API: build a call's fresh store and
    /// instantiate the component exactly as every call does, then drop both
    /// without calling an export. `rollcage-bench` times this beside a whole
    /// call to tell instantiation time from call time; nothing else should
    /// use it (a call is the only thing an instance is for).
    #[doc(hidden)]
    pub async fn instantiate_only(&self) -> Result<(), PluginError> {
        let mut store = self.store();
        let instantiated = match &self.pre {
            WorldPre::Provider(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::Strategy(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::HealthCheck(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::Notifier(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::Exposure(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::ProviderV01(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::StrategyV01(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::HealthCheckV01(pre) => pre.instantiate_async(&mut store).await.map(drop),
            WorldPre::NotifierV01(pre) => pre.instantiate_async(&mut store).await.map(drop),
        };
        instantiated.map_err(|e| PluginError::Host {
            plugin: self.shared.id.clone(),
            message: format!("instantiation failed: {e}"),
        })
    }

    /// Benchmark hook, not part of the API: instantiate a strategy once and
    /// call `decide` `calls` times on that one instance, timing each call
    /// (argument conversion, the call, the answer's conversion). The runtime
    /// never reuses an instance; `rollcage-bench` uses this to tell what a
    /// call itself costs once an instance exists from what the fresh
    /// instance around every real call costs.
    #[doc(hidden)]
    pub async fn decide_on_one_instance(
        &self,
        state: &DeployState,
        calls: usize,
    ) -> Result<Vec<Duration>, PluginError> {
        let WorldPre::Strategy(pre) = &self.pre else {
            return Err(self.wrong_kind(PluginKind::Strategy));
        };
        let host = |e: wasmtime::Error| PluginError::Host {
            plugin: self.shared.id.clone(),
            message: e.to_string(),
        };
        let mut store = self.store();
        let instance = pre.instantiate_async(&mut store).await.map_err(host)?;
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let st = state_to_wit(state);
            let answer = instance
                .rollcage_plugin_strategy_api()
                .call_decide(&mut store, &st)
                .await
                .map_err(host)?
                .map(action_from_wit);
            times.push(started.elapsed());
            answer.map_err(|message| PluginError::Failed {
                plugin: self.shared.id.clone(),
                message,
            })?;
        }
        Ok(times)
    }

    fn wrong_kind(&self, wanted: PluginKind) -> PluginError {
        PluginError::Host {
            plugin: self.shared.id.clone(),
            message: format!("is a {}, not a {wanted}", self.spec.kind),
        }
    }

    /// Turn the outcome of one call into the plugin's answer or a precise
    /// error. Text the plugin wrote into an error is cut to
    /// `limits.text_bytes` here, before anything logs or stores it.
    fn finish<R>(
        &self,
        store: Store<CallState>,
        outcome: Result<wasmtime::Result<Result<R, String>>, tokio::time::error::Elapsed>,
    ) -> Result<R, PluginError> {
        let mut state = store.into_data();
        let last_stderr = state.flush_output();
        let plugin = self.shared.id.clone();
        let limits = &self.spec.limits;
        let text = |s: String| clip_owned(s, limits.text_bytes as usize);
        let denial = state.incidents.first_denial();
        let limit = state.incidents.first_limit();
        let read_environment = state.read_environment;
        let timeout = PluginError::Timeout {
            plugin: plugin.clone(),
            limit_ms: limits.timeout_ms,
        };
        let limit_error = |hit: crate::state::LimitHit, said: Option<String>| PluginError::Limit {
            plugin: plugin.clone(),
            limit: hit.limit.to_string(),
            value: hit.value,
            detail: text(match said {
                Some(message) => format!("{}; the plugin said: {message}", hit.detail),
                None => hit.detail,
            }),
        };
        match outcome {
            Err(_elapsed) => Err(timeout),
            Ok(Err(e)) => {
                if state.limiter.exceeded {
                    return Err(PluginError::MemoryLimit {
                        plugin,
                        limit_mb: limits.memory_mb,
                    });
                }
                if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    return Err(timeout);
                }
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    let mut message = format!("exited with code {}", exit.0);
                    if let Some(line) = last_stderr {
                        message.push_str(&format!(" ({line})"));
                    }
                    return Err(PluginError::Trap {
                        plugin,
                        message: text(message),
                    });
                }
                if let Some(hit) = limit_hit_by(&e, limits) {
                    return Err(limit_error(hit, None));
                }
                if let Some(hit) = limit {
                    return Err(limit_error(hit, None));
                }
                // A denial answers the guest with an error, never a trap; and
                // language runtimes probe the (empty) environment on their
                // own, as Rust's panic handler does for RUST_BACKTRACE. So a
                // trap is reported as a crash, whatever was denied before it.
                let mut message = match e.downcast_ref::<Trap>() {
                    Some(trap) => trap.to_string(),
                    None => format!("{e}"),
                };
                if let Some(line) = last_stderr {
                    message.push_str(&format!(" ({line})"));
                }
                Err(PluginError::Trap {
                    plugin,
                    message: text(message),
                })
            }
            Ok(Ok(Err(message))) => {
                let message = text(message);
                match (denial, limit) {
                    (Some(d), _) => Err(PluginError::Denied {
                        plugin,
                        capability: d.capability.into(),
                        detail: text(format!("{}; the plugin said: {message}", d.detail)),
                    }),
                    (None, Some(hit)) => Err(limit_error(hit, Some(message))),
                    // The hint only where the plugin's own words point at the
                    // environment: CPython reads it on every start, whatever
                    // went wrong.
                    (None, None)
                        if read_environment && message.to_lowercase().contains("environment") =>
                    {
                        Err(PluginError::Failed {
                            plugin,
                            message: format!(
                                "{message} (plugins see no environment variables; use config or secrets)"
                            ),
                        })
                    }
                    (None, None) => Err(PluginError::Failed { plugin, message }),
                }
            }
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}

/// A limit that a wasmtime error says was reached: the resource table
/// full, or one instance, memory or table too many.
fn limit_hit_by(e: &wasmtime::Error, limits: &Limits) -> Option<crate::state::LimitHit> {
    let full = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    });
    if full {
        return Some(crate::state::LimitHit {
            limit: "resources",
            value: limits.resources,
            detail: format!(
                "the plugin held {} host resources at once (streams, requests, responses, fields)",
                limits.resources
            ),
        });
    }
    let text = format!("{e:#}");
    let limit = count_limit(&text)?;
    let value = limits.get(limit).unwrap_or_default();
    Some(crate::state::LimitHit {
        limit,
        value,
        detail: format!("the component creates more than {value} {limit}"),
    })
}

/// One plugin call: a fresh store, instantiate, call, classify. A macro
/// rather than a function because each world's instance type differs.
macro_rules! call {
    ($self:ident, $variant:ident, $kind:expr, |$inst:ident, $store:ident| $body:expr) => {{
        let WorldPre::$variant(pre) = &$self.pre else {
            return Err($self.wrong_kind($kind));
        };
        call_on!($self, pre, |$inst, $store| $body)
    }};
}

/// [`call!`] on a prepared instance already matched out of `WorldPre`.
macro_rules! call_on {
    ($self:ident, $pre:expr, |$inst:ident, $store:ident| $body:expr) => {{
        let pre = $pre;
        let mut store = $self.store();
        let outcome = tokio::time::timeout($self.timeout() + EPOCH_TICK, async {
            let $store = &mut store;
            let $inst = pre.instantiate_async(&mut *$store).await?;
            $body.await
        })
        .await;
        $self.finish(store, outcome)
    }};
}

impl Plugin for LoadedPlugin {
    fn id(&self) -> &PluginId {
        &self.shared.id
    }
}

/// One call to a kind both contract versions have: `$c` names the
/// conversions of the instance's version, in `$body` (which converts the
/// arguments and makes the call) and in `$then` (which converts the answer
/// to core types).
macro_rules! versioned {
    ($self:ident, $kind:expr, $cur:ident, $old:ident,
     |$inst:ident, $store:ident, $c:ident| $body:expr, then $then:expr) => {
        match &$self.pre {
            WorldPre::$cur(pre) => {
                #[allow(unused_imports)]
                use crate::convert::current as $c;
                call_on!($self, pre, |$inst, $store| $body).map($then)
            }
            WorldPre::$old(pre) => {
                #[allow(unused_imports)]
                use crate::convert::v0_1 as $c;
                call_on!($self, pre, |$inst, $store| $body).map($then)
            }
            _ => Err($self.wrong_kind($kind)),
        }
    };
}

#[async_trait]
impl rollcage_core::EnvironmentProvider for LoadedPlugin {
    async fn validate(&self, service_spec: &str) -> Result<Vec<Problem>, PluginError> {
        // A 0.1 provider cannot check a spec: it finds nothing.
        if matches!(self.pre, WorldPre::ProviderV01(_)) {
            return Ok(Vec::new());
        }
        let result: Result<Result<(), Vec<crate::bindings::wit::Problem>>, PluginError> = call!(
            self,
            Provider,
            PluginKind::EnvironmentProvider,
            |i, s| async {
                let r = i
                    .rollcage_plugin_provider_api()
                    .call_validate(&mut *s, service_spec)
                    .await?;
                wasmtime::Result::Ok(Ok::<_, String>(r))
            }
        );
        Ok(match result? {
            Ok(()) => Vec::new(),
            Err(problems) => bound_problems(problems, &self.spec.limits),
        })
    }

    async fn prepare(&self, target: &Target) -> Result<(), PluginError> {
        versioned!(
            self,
            PluginKind::EnvironmentProvider,
            Provider,
            ProviderV01,
            |i, s, c| i
                .rollcage_plugin_provider_api()
                .call_prepare(s, &c::target_to_wit(target)),
            then | () | ()
        )
    }

    async fn apply_slot(&self, target: &Target, spec: &SlotSpec) -> Result<(), PluginError> {
        versioned!(
            self,
            PluginKind::EnvironmentProvider,
            Provider,
            ProviderV01,
            |i, s, c| i.rollcage_plugin_provider_api().call_apply_slot(
                s,
                &c::target_to_wit(target),
                &c::slot_spec_to_wit(spec)
            ),
            then | () | ()
        )
    }

    async fn route(&self, target: &Target, weights: &[RouteWeight]) -> Result<(), PluginError> {
        versioned!(
            self,
            PluginKind::EnvironmentProvider,
            Provider,
            ProviderV01,
            |i, s, c| i.rollcage_plugin_provider_api().call_route(
                s,
                &c::target_to_wit(target),
                &c::weights_to_wit(weights)
            ),
            then | () | ()
        )
    }

    async fn status(&self, target: &Target) -> Result<EnvironmentStatus, PluginError> {
        let status = versioned!(self, PluginKind::EnvironmentProvider, Provider, ProviderV01,
            |i, s, c| i.rollcage_plugin_provider_api().call_status(s, &c::target_to_wit(target)),
            then c::status_from_wit)?;
        Ok(bound_status(status))
    }

    async fn remove_slot(&self, target: &Target, slot: &str) -> Result<(), PluginError> {
        versioned!(
            self,
            PluginKind::EnvironmentProvider,
            Provider,
            ProviderV01,
            |i, s, c| i.rollcage_plugin_provider_api().call_remove_slot(
                s,
                &c::target_to_wit(target),
                slot
            ),
            then | () | ()
        )
    }

    async fn run_job(&self, target: &Target, job: &Job) -> Result<JobResult, PluginError> {
        let mut result = versioned!(self, PluginKind::EnvironmentProvider, Provider, ProviderV01,
            |i, s, c| i.rollcage_plugin_provider_api().call_run_job(
                s,
                &c::target_to_wit(target),
                &c::job_to_wit(job)
            ),
            then c::job_result_from_wit)?;
        // A job's last lines say why it failed: keep the end.
        result.output =
            clip_tail(&result.output, self.spec.limits.text_bytes as usize).into_owned();
        Ok(result)
    }
}

#[async_trait]
impl rollcage_core::Strategy for LoadedPlugin {
    async fn validate(&self, params: &str) -> Result<(), PluginError> {
        let result: Result<Result<(), Vec<String>>, PluginError> = versioned!(
            self,
            PluginKind::Strategy,
            Strategy,
            StrategyV01,
            |i, s, c| async {
                let r = i
                    .rollcage_plugin_strategy_api()
                    .call_validate(&mut *s, params)
                    .await?;
                wasmtime::Result::Ok(Ok::<_, String>(r))
            },
            then | r | r
        );
        match result? {
            Ok(()) => Ok(()),
            Err(problems) => Err(PluginError::InvalidParams {
                plugin: self.shared.id.clone(),
                problems: bound_list(problems, &self.spec.limits),
            }),
        }
    }

    async fn decide(&self, state: &DeployState) -> Result<Action, PluginError> {
        versioned!(self, PluginKind::Strategy, Strategy, StrategyV01,
            |i, s, c| i.rollcage_plugin_strategy_api().call_decide(s, &c::state_to_wit(state)),
            then c::action_from_wit)
    }

    async fn rollback(&self, state: &DeployState) -> Result<Vec<Action>, PluginError> {
        versioned!(
            self,
            PluginKind::Strategy,
            Strategy,
            StrategyV01,
            |i, s, c| i
                .rollcage_plugin_strategy_api()
                .call_rollback(s, &c::state_to_wit(state)),
            then | actions | actions.into_iter().map(c::action_from_wit).collect()
        )
    }
}

#[async_trait]
impl rollcage_core::HealthCheck for LoadedPlugin {
    async fn check(&self, target: &CheckTarget) -> Result<Measurement, PluginError> {
        let mut m = versioned!(self, PluginKind::HealthCheck, HealthCheck, HealthCheckV01,
            |i, s, c| i
                .rollcage_plugin_health_check_api()
                .call_check(s, &c::check_target_to_wit(target)),
            then c::measurement_from_wit)?;
        m.detail = clip_owned(m.detail, self.spec.limits.text_bytes as usize);
        Ok(m)
    }
    fn threshold(&self) -> Option<rollcage_core::Threshold> {
        rollcage_core::Threshold::from_config_json(&self.spec.config_json)
    }
}

#[async_trait]
impl rollcage_core::Notifier for LoadedPlugin {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        versioned!(
            self,
            PluginKind::Notifier,
            Notifier,
            NotifierV01,
            |i, s, c| i
                .rollcage_plugin_notifier_api()
                .call_notify(s, &c::event_to_wit(event)),
            then | () | ()
        )
    }
}

#[async_trait]
impl rollcage_core::ExposureControl for LoadedPlugin {
    async fn validate(&self, params: &str) -> Result<Vec<Problem>, PluginError> {
        let result: Result<Result<(), Vec<crate::bindings::wit::Problem>>, PluginError> =
            call!(self, Exposure, PluginKind::Exposure, |i, s| async {
                let r = i
                    .rollcage_plugin_exposure_api()
                    .call_validate(&mut *s, params)
                    .await?;
                wasmtime::Result::Ok(Ok::<_, String>(r))
            });
        Ok(match result? {
            Ok(()) => Vec::new(),
            Err(problems) => bound_problems(problems, &self.spec.limits),
        })
    }

    async fn set_exposure(
        &self,
        flag: &str,
        environment: &str,
        percent: u32,
    ) -> Result<(), PluginError> {
        call!(self, Exposure, PluginKind::Exposure, |i, s| i
            .rollcage_plugin_exposure_api()
            .call_set_exposure(s, flag, environment, percent))
    }

    async fn get_exposure(
        &self,
        flag: &str,
        environment: &str,
    ) -> Result<ExposureStatus, PluginError> {
        let status = call!(self, Exposure, PluginKind::Exposure, |i, s| i
            .rollcage_plugin_exposure_api()
            .call_get_exposure(s, flag, environment))?;
        let mut status = exposure_status_from_wit(status);
        status.revision = crate::text::clip(&status.revision, STATUS_TEXT_BYTES).into_owned();
        Ok(status)
    }
}

/// Problems a plugin's `validate` reported, within `limits.text_bytes` in
/// all (fields and messages), like [`bound_list`].
fn bound_problems(items: Vec<crate::bindings::wit::Problem>, limits: &Limits) -> Vec<Problem> {
    let mut left = limits.text_bytes as usize;
    let total = items.len();
    let mut kept = Vec::new();
    for item in items.into_iter().map(problem_from_wit) {
        if left == 0 {
            break;
        }
        let field = clip_owned(item.field, STATUS_TEXT_BYTES.min(left));
        left = left.saturating_sub(field.len());
        let message = clip_owned(item.message, left);
        left = left.saturating_sub(message.len());
        kept.push(Problem { field, message });
    }
    if kept.len() < total {
        kept.push(Problem {
            field: String::new(),
            message: format!("… and {} more", total - kept.len()),
        });
    }
    kept
}

/// Names, versions and addresses in a provider's status are identifiers:
/// none is longer than this in any platform the host drives.
const STATUS_TEXT_BYTES: usize = 256;

/// A provider's status with every string cut to [`STATUS_TEXT_BYTES`].
fn bound_status(mut status: EnvironmentStatus) -> EnvironmentStatus {
    let cut = |s: &mut String| {
        if s.len() > STATUS_TEXT_BYTES {
            *s = crate::text::clip(s, STATUS_TEXT_BYTES).into_owned();
        }
    };
    for slot in &mut status.slots {
        cut(&mut slot.name);
        cut(&mut slot.release);
        slot.endpoints.iter_mut().for_each(cut);
    }
    for w in &mut status.weights {
        cut(&mut w.slot);
    }
    status
}

/// A list of problems a plugin reported, within `limits.text_bytes` in all.
fn bound_list(items: Vec<String>, limits: &Limits) -> Vec<String> {
    let mut left = limits.text_bytes as usize;
    let total = items.len();
    let mut kept = Vec::new();
    for item in items {
        if left == 0 {
            break;
        }
        let item = clip_owned(item, left);
        left = left.saturating_sub(item.len());
        kept.push(item);
    }
    if kept.len() < total {
        kept.push(format!("… and {} more", total - kept.len()));
    }
    kept
}
