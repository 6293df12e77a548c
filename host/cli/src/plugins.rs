//! From configuration to loaded plugins: resolves each `[plugins.<id>]`
//! component (builtin or file), finds its kind, and loads it into the
//! runtime with its grants, limits and config.

use std::sync::Arc;

use rollcage_config::{ComponentRef, Config, Context, KnownBuiltin, PluginConfig};
use rollcage_core::{Grants, PluginKind};
use rollcage_runtime::{Limits, LoadedPlugin, PluginSpec, Runtime};

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
    }
}

/// Load every plugin of `config`; one result per plugin, in id order.
pub fn load_all(
    runtime: &Runtime,
    config: &Config,
) -> Vec<(String, anyhow::Result<Arc<LoadedPlugin>>)> {
    config
        .plugins
        .values()
        .map(|p| (p.id.to_string(), load(runtime, p)))
        .collect()
}

fn load(runtime: &Runtime, p: &PluginConfig) -> anyhow::Result<Arc<LoadedPlugin>> {
    let bytes: std::borrow::Cow<'static, [u8]> = match &p.component {
        ComponentRef::Builtin(name) => rollcage_builtins::get(name)
            .map(|b| std::borrow::Cow::Borrowed(b.wasm))
            .ok_or_else(|| anyhow::anyhow!("plugin `{}`: no builtin named `{name}`", p.id))?,
        ComponentRef::File(path) => {
            std::fs::read(path)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| {
                    anyhow::anyhow!("plugin `{}`: cannot read {}: {e}", p.id, path.display())
                })?
        }
    };
    let kind = match p.kind {
        Some(kind) => kind,
        None => kind_of(runtime, &p.id.to_string(), &p.component.to_string(), &bytes)?,
    };
    let defaults = Limits::default();
    let spec = PluginSpec {
        id: p.id.clone(),
        kind,
        source_name: p.component.to_string(),
        grants: Grants {
            allow_hosts: p.allow_hosts.clone(),
            secrets: p.secrets.clone(),
        },
        limits: Limits {
            memory_mb: p.limits.memory_mb.unwrap_or(defaults.memory_mb),
            timeout_ms: p.limits.timeout_ms.unwrap_or(defaults.timeout_ms),
        },
        config_json: p.config.to_string(),
    };
    Ok(runtime.load(spec, &bytes)?)
}

/// The one kind a component's exports fit, or an error saying why not.
pub fn kind_of(
    runtime: &Runtime,
    id: &str,
    source: &str,
    bytes: &[u8],
) -> anyhow::Result<PluginKind> {
    let info = rollcage_runtime::inspect_component(runtime, bytes)
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
