//! Plugin references from other sections (`provider = "local"`,
//! `strategy = { plugin = "canary" }`, `plugin = "prometheus"`,
//! `notify = ["slack"]`): a `[plugins.<id>]` instance, or else a builtin by
//! name, which is then used with no grants. Either way its kind must fit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;

use rollcage_core::{PluginId, PluginKind};

use crate::Context;
use crate::error::{ConfigError, Location};
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

/// A reference to a `[plugins.<id>]` instance whose component file declares
/// no `kind`: this crate cannot open the file, so whoever loads it checks
/// the kind it finds against the kind this use needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUse {
    /// The instance referred to.
    pub plugin: PluginId,
    /// The kind the place of the reference needs.
    pub kind: PluginKind,
    /// The place, as messages name it: ``environment `production`: strategy``.
    pub what: String,
    /// Where the reference is written.
    pub at: Location,
}

impl PluginUse {
    /// The error when the component loaded from `source` turned out to be
    /// a `found`; `None` when it fits.
    pub fn mismatch(&self, found: PluginKind, source: &str) -> Option<ConfigError> {
        (found != self.kind).then(|| {
            self.at.error(
                format!(
                    "{}: plugin `{}` ({source}) is {}, not {}",
                    self.what,
                    self.plugin,
                    a(found),
                    a(self.kind)
                ),
                Some(format!(
                    "its component exports the {found} world; {} plugin goes {}",
                    a(found),
                    where_it_goes(found)
                )),
            )
        })
    }
}

/// Where a plugin of `kind` is named in a configuration.
fn where_it_goes(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::EnvironmentProvider => "in an environment's `provider`",
        PluginKind::Strategy => "in an environment's `strategy = { plugin = ... }`",
        PluginKind::HealthCheck => "in a `[checks.<id>]` section's `plugin`",
        PluginKind::Notifier => "in a `notify = [...]` list",
        PluginKind::Exposure => "in an environment's `exposure`",
    }
}

/// Everything references resolve against.
pub(crate) struct Refs<'a> {
    pub plugins: &'a BTreeMap<PluginId, PluginConfig>,
    pub cx: &'a Context,
    pub vars: &'a dyn Fn(&str) -> Option<String>,
    /// References to instances of undeclared kind, met while resolving.
    pub uses: RefCell<Vec<PluginUse>>,
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

/// The kind with its article: `a strategy`, `an exposure`.
pub(crate) fn a(kind: PluginKind) -> String {
    match kind {
        PluginKind::Exposure => format!("an {kind}"),
        _ => format!("a {kind}"),
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
                    format!("{what}: plugin `{name}` is {}, not {}", a(k), a(kind)),
                    None,
                ));
                None
            }
            Some(_) => Some(PluginRef::Instance(id)),
            // A file of undeclared kind is checked when it is loaded.
            None => {
                refs.uses.borrow_mut().push(PluginUse {
                    plugin: id.clone(),
                    kind,
                    what: what.to_string(),
                    at: src.location(span.start),
                });
                Some(PluginRef::Instance(id))
            }
        };
    }
    match cx.builtins.iter().find(|b| b.name == name) {
        Some(b) if b.kind == kind => Some(PluginRef::Builtin(name.to_string())),
        Some(b) => {
            errors.push(src.error(
                span,
                format!("{what}: builtin `{name}` is {}, not {}", a(b.kind), a(kind)),
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
                Some(if known.is_empty() {
                    format!("declare it in [plugins.{name}]")
                } else {
                    format!(
                        "declare it in [plugins.{name}], or use one of: {}",
                        known.join(", ")
                    )
                }),
            ));
            None
        }
    }
}
