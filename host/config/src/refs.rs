//! Plugin references from other sections (`provider = "local"`,
//! `strategy = { plugin = "canary" }`, `plugin = "prometheus"`,
//! `notify = ["slack"]`): a `[plugins.<id>]` instance, or else a builtin by
//! name, which is then used with no grants. Either way its kind must fit.

use std::collections::BTreeMap;
use std::ops::Range;

use rollcage_core::{PluginId, PluginKind};

use crate::Context;
use crate::error::ConfigError;
use crate::plugins::PluginConfig;
use crate::source::Source;

/// What a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    /// A `[plugins.<id>]` instance.
    Instance(PluginId),
    /// A builtin used directly, without grants.
    Builtin(String),
}

impl PluginRef {
    /// The name as written.
    pub fn name(&self) -> &str {
        match self {
            PluginRef::Instance(id) => id.as_str(),
            PluginRef::Builtin(name) => name,
        }
    }
}

/// Everything references resolve against.
pub(crate) struct Refs<'a> {
    pub plugins: &'a BTreeMap<PluginId, PluginConfig>,
    pub cx: &'a Context,
    pub vars: &'a dyn Fn(&str) -> Option<String>,
}

impl Refs<'_> {
    /// Resolve `name` (at `span`) to a plugin of `kind`, or push an error.
    pub(crate) fn resolve(
        &self,
        src: &Source<'_>,
        span: Range<usize>,
        name: &str,
        kind: PluginKind,
        what: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<PluginRef> {
        resolve(src, span, name, kind, what, self, errors)
    }

    /// Resolve every name of a list (`notify = [...]`); the ones that resolve.
    pub(crate) fn resolve_all(
        &self,
        src: &Source<'_>,
        names: &[toml::Spanned<String>],
        kind: PluginKind,
        what: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<PluginRef> {
        names
            .iter()
            .filter_map(|n| self.resolve(src, n.span(), n.get_ref(), kind, what, errors))
            .collect()
    }
}

fn resolve(
    src: &Source<'_>,
    span: Range<usize>,
    name: &str,
    kind: PluginKind,
    what: &str,
    refs: &Refs<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<PluginRef> {
    let (plugins, cx) = (refs.plugins, refs.cx);
    let instance = name
        .parse::<PluginId>()
        .ok()
        .and_then(|id| plugins.get(&id).map(|p| (id, p)));
    if let Some((id, p)) = instance {
        return match p.kind {
            Some(k) if k != kind => {
                errors.push(src.error(
                    span,
                    format!("{what}: plugin `{name}` is a {k}, not a {kind}"),
                    None,
                ));
                None
            }
            // A file of undeclared kind is checked when it is loaded.
            _ => Some(PluginRef::Instance(id)),
        };
    }
    match cx.builtins.iter().find(|b| b.name == name) {
        Some(b) if b.kind == kind => Some(PluginRef::Builtin(name.to_string())),
        Some(b) => {
            errors.push(src.error(
                span,
                format!("{what}: builtin `{name}` is a {}, not a {kind}", b.kind),
                None,
            ));
            None
        }
        None => {
            let mut known: Vec<String> = plugins
                .iter()
                .filter(|(_, p)| p.kind.is_none_or(|k| k == kind))
                .map(|(id, _)| id.to_string())
                .collect();
            known.extend(
                cx.builtins
                    .iter()
                    .filter(|b| b.kind == kind)
                    .map(|b| b.name.to_string()),
            );
            errors.push(src.error(
                span,
                format!("{what}: no {kind} plugin named `{name}`"),
                Some(format!(
                    "declare it in [plugins.{name}], or use one of: {}",
                    known.join(", ")
                )),
            ));
            None
        }
    }
}
