//! From configuration to loaded plugins: every `[plugins.<id>]` instance,
//! every `[checks.<id>]` (its plugin's component and grants, with the check's
//! config over the plugin's), and every builtin an environment or pipeline
//! names directly. `${secret:NAME}` references are filled from the secret
//! source here, at load, and go nowhere but into the plugin.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rollcage_config::interpolate::fill_secrets;
use rollcage_config::{
    ComponentRef, Config, ConfigError, Context, KnownBuiltin, PluginConfig, PluginRef,
};
use rollcage_core::{Digest, Grants, PluginId, PluginKind};
use rollcage_runtime::{LoadedPlugin, PluginSpec, Runtime, Wasm};

/// What the configuration may name as `builtin:<name>`.
pub fn config_context() -> Context {
    Context {
        builtins: rollcage_builtins::BUILTINS
            .iter()
            .map(|b| KnownBuiltin {
                name: b.name,
                kind: b.kind(),
            })
            .collect(),
        vars: Some(config_vars()),
    }
}

/// What `${VAR}` may name: the environment, plus `ROLLCAGE_EXE`, the path
/// of this very binary (the demo service is one of its subcommands).
fn config_vars() -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = std::env::vars().collect();
    if let Ok(exe) = std::env::current_exe() {
        vars.entry("ROLLCAGE_EXE".into())
            .or_insert_with(|| exe.to_string_lossy().into_owned());
    }
    vars
}

/// Every plugin a configuration uses, loaded, by the name configuration
/// refers to it with; and every failure, each naming its plugin.
pub struct PluginSet {
    pub loaded: BTreeMap<String, Arc<LoadedPlugin>>,
    pub errors: Vec<String>,
    /// Uses of a component file of undeclared kind whose component turned
    /// out to be another kind: configuration errors, at the reference.
    pub misused: Vec<ConfigError>,
    /// The SHA-256 of every loaded component (builtins and files too), by
    /// the same names as `loaded`: what a run records it used.
    pub digests: crate::sources::Digests,
}

impl PluginSet {
    /// Every problem, as lines: load failures, then misused plugins.
    pub fn problems(&self) -> Vec<String> {
        let misused = self.misused.iter().map(|e| e.to_string());
        self.errors.iter().cloned().chain(misused).collect()
    }

    /// The plugin a reference points at.
    pub fn get(&self, r: &PluginRef) -> Option<&Arc<LoadedPlugin>> {
        self.loaded.get(r.name())
    }
}

/// What the host grants the builtins that drive its local runtime (`local`,
/// `router-metrics`): its admin API's address and token. An operator never
/// writes them, and they change at every start.
pub struct LocalGrant {
    pub admin_url: String,
    /// `127.0.0.1:PORT`, as an `allow_hosts` entry.
    pub admin_host: String,
    pub token: String,
}

impl LocalGrant {
    /// `p` with the grant added, if `p` is a local-runtime builtin.
    fn apply(
        &self,
        p: &PluginConfig,
        config: &serde_json::Value,
    ) -> (PluginConfig, serde_json::Value) {
        let mut p = p.clone();
        let mut config = config.clone();
        if matches!(&p.component, ComponentRef::Builtin(n) if n == "local" || n == "router-metrics")
        {
            if let Ok(host) = self.admin_host.parse() {
                p.allow_hosts.push(host);
            }
            if let Some(map) = config.as_object_mut() {
                map.entry("admin_url")
                    .or_insert_with(|| self.admin_url.clone().into());
                map.entry("token")
                    .or_insert_with(|| self.token.clone().into());
            }
        }
        (p, config)
    }
}

/// Load everything `config` uses; `local` is the local runtime's grant when
/// the host runs one.
pub fn load_all(runtime: &Runtime, config: &Config, local: Option<&LocalGrant>) -> PluginSet {
    let mut set = PluginSet {
        loaded: BTreeMap::new(),
        errors: Vec::new(),
        misused: Vec::new(),
        digests: Default::default(),
    };
    let locked = crate::sources::Locked::read(config, runtime);
    let add = |set: &mut PluginSet,
               name: String,
               result: anyhow::Result<(Arc<LoadedPlugin>, Digest)>| match result {
        Ok((p, digest)) => {
            set.loaded.insert(name.clone(), p);
            set.digests.insert(name, digest);
        }
        Err(e) => set.errors.push(format!("{e:#}")),
    };
    let load = |p: &PluginConfig, id: &PluginId, config: &serde_json::Value| match local {
        Some(grant) => {
            let (p, config) = grant.apply(p, config);
            load(runtime, &locked, &p, id, &config)
        }
        None => load(runtime, &locked, p, id, config),
    };
    for p in config.plugins.values() {
        add(&mut set, p.id.to_string(), load(p, &p.id, &p.config));
    }
    for check in config.checks.values() {
        let result = match &check.plugin {
            PluginRef::Instance(id) => load(&config.plugins[id], &check.id, &check.config),
            PluginRef::Builtin(name) => load(&builtin_instance(name), &check.id, &check.config),
        };
        add(&mut set, check.id.to_string(), result);
    }
    let direct = config
        .environments
        .values()
        .flat_map(|e| [&e.provider, &e.strategy].into_iter().chain(&e.notify))
        .chain(config.pipelines.values().flat_map(|p| &p.notify));
    for r in direct {
        if let PluginRef::Builtin(name) = r
            && !set.loaded.contains_key(name)
        {
            let p = builtin_instance(name);
            add(&mut set, name.clone(), load(&p, &p.id, &p.config));
        }
    }
    // A component file of undeclared kind is known only now: each place
    // that names it must need what it is.
    for u in &config.plugin_uses {
        if let Some(p) = set.loaded.get(u.plugin.as_str())
            && let Some(e) = u.mismatch(p.kind(), &p.spec().source_name)
        {
            set.misused.push(e);
        }
    }
    set
}

/// A builtin named directly (`strategy = { plugin = "canary" }`): no grants.
fn builtin_instance(name: &str) -> PluginConfig {
    PluginConfig {
        id: name.parse().expect("builtin names are valid ids"),
        component: ComponentRef::Builtin(name.to_string()),
        kind: rollcage_builtins::get(name).map(|b| b.kind()),
        allow_hosts: vec![],
        allow_private: vec![],
        secrets: vec![],
        tls_ca: None,
        registry_tls_ca: None,
        limits: Default::default(),
        breaker: Default::default(),
        config: serde_json::json!({}),
        config_at: None,
    }
}

/// Load `p`'s component as instance `id` with `config`; and the digest of
/// the component (for a remote one, the locked digest: its cached bytes
/// were checked when they were stored and are not hashed again).
fn load(
    runtime: &Runtime,
    locked: &crate::sources::Locked,
    p: &PluginConfig,
    id: &PluginId,
    config: &serde_json::Value,
) -> anyhow::Result<(Arc<LoadedPlugin>, Digest)> {
    let (bytes, digest): (Cow<'static, [u8]>, Digest) = match &p.component {
        ComponentRef::Builtin(name) => rollcage_builtins::get(name)
            .map(|b| (Cow::Borrowed(b.wasm), rollcage_registry::digest_of(b.wasm)))
            .ok_or_else(|| anyhow::anyhow!("plugin `{id}`: no builtin named `{name}`"))?,
        ComponentRef::File(path) => std::fs::read(path)
            .map(|b| {
                let d = rollcage_registry::digest_of(&b);
                (Cow::Owned(b), d)
            })
            .map_err(|e| anyhow::anyhow!("plugin `{id}`: cannot read {}: {e}", path.display()))?,
        remote @ (ComponentRef::Oci { .. } | ComponentRef::Url { .. }) => {
            let (bytes, digest) = locked.bytes(id, remote)?;
            (Cow::Owned(bytes), digest)
        }
    };
    load_bytes(runtime, p, id, config, Wasm::verified(&bytes, &digest))
        .map(|loaded| (loaded, digest))
}

fn load_bytes(
    runtime: &Runtime,
    p: &PluginConfig,
    id: &PluginId,
    config: &serde_json::Value,
    wasm: Wasm<'_>,
) -> anyhow::Result<Arc<LoadedPlugin>> {
    let kind = match p.kind {
        Some(kind) => kind,
        None => kind_of(runtime, id.as_str(), &p.component.to_string(), wasm)?,
    };
    let secrets = runtime.secrets();
    let config = fill_secrets(config, &|name| secrets.get(name))
        .map_err(|e| anyhow::anyhow!("plugin `{id}`: {e}"))?;
    let spec = PluginSpec {
        id: id.clone(),
        kind,
        source_name: p.component.to_string(),
        grants: Grants {
            allow_hosts: p.allow_hosts.clone(),
            allow_private: p.allow_private.clone(),
            secrets: p.secrets.clone(),
            tls_ca: p.tls_ca.clone(),
        },
        limits: p.limits,
        config_json: config.to_string(),
    };
    Ok(runtime.load(spec, wasm)?)
}

/// The one kind a component's exports fit, or an error saying why not.
pub fn kind_of<'a>(
    runtime: &Runtime,
    id: &str,
    source: &str,
    wasm: impl Into<Wasm<'a>>,
) -> anyhow::Result<PluginKind> {
    let info = rollcage_runtime::inspect_component(runtime, wasm)
        .map_err(|e| anyhow::anyhow!("plugin `{id}` ({source}): {e}"))?;
    match info.kinds().as_slice() {
        [kind] => Ok(*kind),
        [] => anyhow::bail!(
            "plugin `{id}` ({source}) fits no plugin world: it exports {}",
            if info.exports.is_empty() {
                "nothing".to_string()
            } else {
                info.exports.join(", ")
            }
        ),
        several => anyhow::bail!(
            "plugin `{id}` ({source}) exports several plugin interfaces ({}); set `kind` in its configuration",
            several
                .iter()
                .map(|k| k.world())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
