//! `[plugins.<id>]`: one plugin instance each: a component, its grants, its
//! limits and its own `config` table.
//!
//! ```toml
//! [plugins.slack]
//! component = "builtin:console"          # or a path to a .wasm component,
//!                                        # "oci://registry/repo:tag" (or @sha256:...),
//!                                        # or "https://..." with sha256 = "<64 hex>"
//! kind = "notifier"                      # optional: builtins know theirs, files are inspected
//! allow_hosts = ["hooks.slack.com"]      # host, host:port, host:*, *.domain, *
//! secrets = ["SLACK_WEBHOOK_URL"]
//! tls_ca = "ca.pem"                      # a private CA for HTTPS, or { secret = "NAME" }
//! registry_tls_ca = "ca.pem"             # an oci:// or https:// component: the CA of the
//!                                        # server it is fetched from (default: tls_ca); not a
//!                                        # grant, so a strategy may have it
//! limits = { memory_mb = 32, timeout_ms = 5000 }
//! config = { channel = "#deploys" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use rollcage_core::{
    Digest, HostPattern, IpNet, Limits, OciReference, PluginId, PluginKind, TlsCa,
};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use crate::Context;
use crate::error::{ConfigError, Fields};
use crate::source::Source;

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentRef {
    /// Embedded in the binary: `builtin:<name>`.
    Builtin(String),
    /// A `.wasm` file, resolved against the configuration file's folder.
    File(PathBuf),
    /// An OCI artifact in a registry, run by the digest `rollcage.lock`
    /// pins it to.
    Oci {
        reference: OciReference,
        /// Plain HTTP to the registry: allowed only for a loopback host.
        insecure: bool,
        /// The host's secret holding `user:password` or a token for the
        /// registry; never granted to the plugin.
        auth_secret: Option<String>,
    },
    /// An `https://` URL whose bytes must have `sha256`.
    Url { url: String, sha256: Digest },
}

impl ComponentRef {
    /// Whether the bytes come from the network (and so through the lock
    /// file and the download cache).
    pub fn is_remote(&self) -> bool {
        matches!(self, ComponentRef::Oci { .. } | ComponentRef::Url { .. })
    }
}

impl std::fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComponentRef::Builtin(name) => write!(f, "builtin:{name}"),
            ComponentRef::File(path) => write!(f, "{}", path.display()),
            ComponentRef::Oci { reference, .. } => write!(f, "{reference}"),
            ComponentRef::Url { url, .. } => write!(f, "{url}"),
        }
    }
}

/// `limits = { ... }` as written; absent values take the defaults of
/// [`rollcage_core::limits::LIMITS`], which also gives each key's range
/// and meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub instances: Option<u64>,
    pub memories: Option<u64>,
    pub tables: Option<u64>,
    pub resources: Option<u64>,
    pub http_requests: Option<u64>,
    pub http_in_flight: Option<u64>,
    pub request_body_kb: Option<u64>,
    pub response_body_kb: Option<u64>,
    pub log_lines: Option<u64>,
    pub log_line_bytes: Option<u64>,
    pub log_bytes: Option<u64>,
    pub text_bytes: Option<u64>,
}

impl LimitsConfig {
    /// The keys given, by name.
    fn given(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("memory_mb", self.memory_mb),
            ("timeout_ms", self.timeout_ms),
            ("instances", self.instances),
            ("memories", self.memories),
            ("tables", self.tables),
            ("resources", self.resources),
            ("http_requests", self.http_requests),
            ("http_in_flight", self.http_in_flight),
            ("request_body_kb", self.request_body_kb),
            ("response_body_kb", self.response_body_kb),
            ("log_lines", self.log_lines),
            ("log_line_bytes", self.log_line_bytes),
            ("log_bytes", self.log_bytes),
            ("text_bytes", self.text_bytes),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    /// The limits with the given keys over the defaults; one message per
    /// value out of its range.
    pub fn resolve(&self) -> Result<Limits, Vec<String>> {
        let mut limits = Limits::default();
        let problems: Vec<String> = self
            .given()
            .filter_map(|(k, v)| limits.set(k, v).err())
            .collect();
        if problems.is_empty() {
            Ok(limits)
        } else {
            Err(problems)
        }
    }
}

/// `breaker = { failures = 5, cool_down = "30s" }`: after `failures` failed
/// calls in a row, calls to the instance fail fast for `cool_down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures: u32,
    pub cool_down: std::time::Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            cool_down: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failures: Option<u32>,
    cool_down: Option<String>,
}

/// One validated plugin instance.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub id: PluginId,
    pub component: ComponentRef,
    /// The declared kind, or the builtin's; `None` for a file that did not
    /// say (the runtime finds it from the component's exports).
    pub kind: Option<PluginKind>,
    pub allow_hosts: Vec<HostPattern>,
    pub allow_private: Vec<IpNet>,
    pub secrets: Vec<String>,
    /// A private certificate authority its HTTPS trusts beside the public
    /// roots; a file is checked to hold PEM certificates.
    pub tls_ca: Option<TlsCa>,
    /// The private CA of the registry or file server a remote component is
    /// fetched from, when it is not `tls_ca`: the host's, never granted to
    /// the plugin (so a strategy, granted nothing, may have one).
    pub registry_tls_ca: Option<TlsCa>,
    pub limits: Limits,
    pub breaker: BreakerSettings,
    /// The plugin's own `config` table, as JSON.
    pub config: serde_json::Value,
    /// Where `config` and each of its fields are written, for the
    /// problems the plugin's own `validate` finds; `None` for an instance
    /// the host made (a builtin named directly, with no table).
    pub config_at: Option<Fields>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    component: Spanned<String>,
    /// The SHA-256 an `https://` component's bytes must have.
    #[serde(default)]
    sha256: Option<Spanned<String>>,
    /// Plain HTTP to a loopback OCI registry.
    #[serde(default)]
    insecure: Option<Spanned<bool>>,
    /// The host secret with the OCI registry's credentials.
    #[serde(default)]
    registry_auth_secret: Option<Spanned<String>>,
    /// The private CA of the server a remote component is fetched from.
    #[serde(default)]
    registry_tls_ca: Option<Spanned<RawRegistryTlsCa>>,
    #[serde(default)]
    kind: Option<Spanned<String>>,
    #[serde(default)]
    allow_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    allow_private: Vec<Spanned<String>>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    #[serde(default)]
    tls_ca: Option<Spanned<RawTlsCa>>,
    #[serde(default)]
    limits: Option<Spanned<LimitsConfig>>,
    #[serde(default)]
    breaker: Option<Spanned<RawBreaker>>,
    #[serde(default)]
    config: Option<toml::Table>,
}

/// `tls_ca = "ca.pem"` or `tls_ca = { secret = "NAME" }`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "tls_ca: expected a path to a PEM file (\"ca.pem\") or { secret = \"NAME\" }"
)]
enum RawTlsCa {
    Path(String),
    Secret(RawTlsSecret),
}

/// `registry_tls_ca`, in the same two forms (its own type only so that a
/// mistake names the key it was made in).
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "registry_tls_ca: expected a path to a PEM file (\"ca.pem\") or { secret = \"NAME\" }"
)]
enum RawRegistryTlsCa {
    Path(String),
    Secret(RawTlsSecret),
}

impl From<&RawRegistryTlsCa> for RawTlsCa {
    fn from(raw: &RawRegistryTlsCa) -> Self {
        match raw {
            RawRegistryTlsCa::Path(p) => RawTlsCa::Path(p.clone()),
            RawRegistryTlsCa::Secret(RawTlsSecret { secret }) => RawTlsCa::Secret(RawTlsSecret {
                secret: secret.clone(),
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsSecret {
    secret: String,
}

/// The one PEM label a trust root file may hold.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// Why a `tls_ca` file cannot be a trust root, if it cannot: a missing or
/// unreadable file, or one without a PEM certificate (a private key given
/// by mistake is named as such, never quoted).
fn tls_ca_file_problem(path: &std::path::Path) -> Option<String> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Some(format!("tls_ca file `{shown}`: {e}")),
    };
    if text.contains(PEM_CERTIFICATE) {
        return None;
    }
    if text.contains("PRIVATE KEY-----") {
        return Some(format!(
            "tls_ca file `{shown}` holds a private key, not a certificate: give the CA's certificate"
        ));
    }
    Some(format!(
        "tls_ca file `{shown}` holds no PEM certificate ({PEM_CERTIFICATE})"
    ))
}

pub(crate) fn parse(
    src: &Source<'_>,
    value: &Spanned<DeValue<'_>>,
    cx: &Context,
    vars: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<PluginId, PluginConfig> {
    let mut plugins = BTreeMap::new();
    let Some(table) = value.get_ref().as_table() else {
        errors.push(src.error(
            value.span(),
            "`plugins` must be a table of `[plugins.<id>]` sections".into(),
            None,
        ));
        return plugins;
    };
    for (key, entry) in table {
        let id_text: &str = key.get_ref();
        let id = match id_text.parse::<PluginId>() {
            Ok(id) => id,
            Err(e) => {
                errors.push(src.error(key.span(), e.to_string(), None));
                continue;
            }
        };
        let Some(raw) =
            crate::deserialize_entry::<RawPlugin>(src, &format!("plugin `{id}`"), entry, errors)
        else {
            continue;
        };
        let config_at = match entry.get_ref().get("config") {
            Some(v) => Fields::of_value(src, v),
            None => Fields::at(src.location(key.span().start)),
        };
        if let Some(mut p) = validate(src, &id, key.span(), raw, cx, vars, errors) {
            p.config_at = Some(config_at);
            plugins.insert(id, p);
        }
    }
    plugins
}

fn validate(
    src: &Source<'_>,
    id: &PluginId,
    id_span: std::ops::Range<usize>,
    raw: RawPlugin,
    cx: &Context,
    vars: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<PluginConfig> {
    let before = errors.len();
    let mut err = |span: std::ops::Range<usize>, msg: String, hint: Option<String>| {
        errors.push(src.error(span, format!("plugin `{id}`: {msg}"), hint));
    };

    let declared_kind = raw
        .kind
        .as_ref()
        .and_then(|k| match k.get_ref().parse::<PluginKind>() {
            Ok(kind) => Some(kind),
            Err(e) => {
                err(k.span(), e, None);
                None
            }
        });

    let component_text = raw.component.get_ref();
    let mut kind = declared_kind;
    let component = if let Some(name) = component_text.strip_prefix("builtin:") {
        match cx.builtins.iter().find(|b| b.name == name) {
            Some(b) => {
                if let Some(declared) = declared_kind
                    && declared != b.kind
                {
                    err(
                        raw.kind.as_ref().unwrap().span(),
                        format!("`builtin:{name}` is a {}, not a {declared}", b.kind),
                        None,
                    );
                }
                kind = Some(b.kind);
                ComponentRef::Builtin(name.to_string())
            }
            None => {
                let names: Vec<String> = cx
                    .builtins
                    .iter()
                    .map(|b| format!("builtin:{}", b.name))
                    .collect();
                err(
                    raw.component.span(),
                    format!("unknown component `{component_text}`"),
                    Some(format!("the builtin plugins are: {}", names.join(", "))),
                );
                ComponentRef::Builtin(name.to_string())
            }
        }
    } else if let Some(remote) = remote_source(&raw, &mut err) {
        remote
    } else {
        let base = src
            .path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let path = base.join(component_text);
        if !path.is_file() {
            err(
                raw.component.span(),
                format!("component file `{}` not found", path.display()),
                Some("give a path relative to this file, or `builtin:<name>`".into()),
            );
        }
        ComponentRef::File(path)
    };

    let mut allow_hosts = Vec::new();
    for entry in &raw.allow_hosts {
        match entry.get_ref().parse::<HostPattern>() {
            Ok(p) => allow_hosts.push(p),
            Err(e) => err(
                entry.span(),
                e.to_string(),
                Some("examples: \"hooks.slack.com\", \"127.0.0.1:9090\", \"*.atlassian.net\", \"localhost:*\"".into()),
            ),
        }
    }

    let mut allow_private = Vec::new();
    for entry in &raw.allow_private {
        match entry.get_ref().parse::<IpNet>() {
            Ok(n) => allow_private.push(n),
            Err(e) => err(
                entry.span(),
                e,
                Some("examples: \"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\"".into()),
            ),
        }
    }

    let mut secrets = Vec::new();
    for name in &raw.secrets {
        let n = name.get_ref();
        if valid_secret_name(n) {
            secrets.push(n.clone());
        } else {
            err(
                name.span(),
                format!("invalid secret name `{n}`: use letters, digits and `_`"),
                None,
            );
        }
    }

    let tls_ca = raw
        .tls_ca
        .as_ref()
        .and_then(|ca| parse_tls_ca(src, ca, "tls_ca", &mut err));
    let registry_tls_ca = raw.registry_tls_ca.as_ref().and_then(|ca| {
        let as_tls = Spanned::new(ca.span(), RawTlsCa::from(ca.get_ref()));
        parse_tls_ca(src, &as_tls, "registry_tls_ca", &mut err)
    });
    if let Some(ca) = &raw.registry_tls_ca
        && !component.is_remote()
    {
        err(
            ca.span(),
            "`registry_tls_ca` is for an oci:// or https:// component".into(),
            Some("a component in the binary or a file is not fetched".into()),
        );
    }

    let limits = match &raw.limits {
        None => Limits::default(),
        Some(l) => l.get_ref().resolve().unwrap_or_else(|problems| {
            for p in problems {
                err(l.span(), p, None);
            }
            Limits::default()
        }),
    };

    // Strategies are pure: granted nothing, whatever their component.
    if kind == Some(PluginKind::Strategy) {
        let granted = [
            (raw.allow_hosts.first().map(|e| e.span()), "allow_hosts"),
            (raw.allow_private.first().map(|e| e.span()), "allow_private"),
            (raw.secrets.first().map(|e| e.span()), "secrets"),
            (raw.tls_ca.as_ref().map(|e| e.span()), "tls_ca"),
        ];
        for (span, key) in granted {
            if let Some(span) = span {
                err(
                    span,
                    format!("a strategy is granted nothing, but has `{key}`"),
                    Some(
                        "strategies are pure functions of the run's state: remove the grant".into(),
                    ),
                );
            }
        }
    }

    let mut breaker = BreakerSettings::default();
    if let Some(b) = &raw.breaker {
        let raw_b = b.get_ref();
        match raw_b.failures {
            Some(n) if !(1..=1000).contains(&n) => err(
                b.span(),
                format!("breaker.failures = {n} is outside 1-1000"),
                None,
            ),
            Some(n) => breaker.failures = n,
            None => {}
        }
        if let Some(text) = &raw_b.cool_down {
            match rollcage_core::duration::parse(text) {
                Ok(d) => breaker.cool_down = d,
                Err(e) => err(b.span(), format!("breaker.cool_down: {e}"), None),
            }
        }
    }

    let mut config = match raw.config {
        Some(table) => serde_json::to_value(table).unwrap_or(serde_json::Value::Null),
        None => serde_json::json!({}),
    };
    let mut problems = Vec::new();
    crate::interpolate::interpolate(&mut config, "config", vars, Some(&secrets), &mut problems);
    for p in problems {
        err(id_span.clone(), p, None);
    }

    (errors.len() == before).then(|| PluginConfig {
        id: id.clone(),
        component,
        kind,
        allow_hosts,
        allow_private,
        secrets,
        tls_ca,
        registry_tls_ca,
        limits,
        breaker,
        config,
        // Set by the caller, which has the table's spans.
        config_at: None,
    })
}

/// An `oci://` or `https://` component with its `sha256`, `insecure` and
/// `registry_auth_secret`; `None` for any other component. Keys that belong
/// to another kind of source are errors, so a digest written beside an
/// `oci://` reference is not silently ignored.
fn remote_source(
    raw: &RawPlugin,
    err: &mut impl FnMut(std::ops::Range<usize>, String, Option<String>),
) -> Option<ComponentRef> {
    let text = raw.component.get_ref();
    let span = raw.component.span();
    let is_oci = text.starts_with("oci://");
    let is_url = text.starts_with("https://");
    if text.starts_with("http://") {
        err(
            span.clone(),
            format!("component `{text}`: plain http is not allowed for a download"),
            Some("use https:// with sha256 = \"<64 hex>\"".into()),
        );
        return Some(ComponentRef::File(PathBuf::new()));
    }
    if let Some(sha) = &raw.sha256
        && !is_url
    {
        err(
            sha.span(),
            "`sha256` is for an https:// component".into(),
            Some(
                "pin an OCI reference with @sha256:<64 hex>, or by `rollcage plugins lock`".into(),
            ),
        );
    }
    for (key, span) in [
        ("insecure", raw.insecure.as_ref().map(|i| i.span())),
        (
            "registry_auth_secret",
            raw.registry_auth_secret.as_ref().map(|s| s.span()),
        ),
    ] {
        if let Some(span) = span
            && !is_oci
        {
            err(span, format!("`{key}` is for an oci:// component"), None);
        }
    }
    if is_url {
        let url = text.clone();
        let host = url["https://".len()..]
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("");
        if host.is_empty() || url.chars().any(char::is_whitespace) {
            err(
                span.clone(),
                format!("component `{url}` is not a URL"),
                None,
            );
        }
        let sha256 = match &raw.sha256 {
            None => {
                err(
                    span,
                    format!(
                        "component `{url}` needs `sha256` beside it: a download runs only if its bytes are the ones expected"
                    ),
                    Some("add sha256 = \"<64 hex>\" (`sha256sum FILE.wasm` prints it)".into()),
                );
                None
            }
            Some(sha) => match Digest::parse_loose(sha.get_ref()) {
                Ok(d) => Some(d),
                Err(e) => {
                    err(sha.span(), format!("sha256 of `{url}`: {e}"), None);
                    None
                }
            },
        };
        return Some(ComponentRef::Url {
            url,
            sha256: sha256.unwrap_or_else(|| Digest::from_bytes(&[0; 32])),
        });
    }
    if !is_oci {
        return None;
    }
    let reference = match text.parse::<OciReference>() {
        Ok(r) => r,
        Err(e) => {
            err(span, e.to_string(), None);
            return Some(ComponentRef::File(PathBuf::new()));
        }
    };
    let insecure = raw.insecure.as_ref().is_some_and(|i| *i.get_ref());
    if insecure && !reference.is_loopback() {
        err(
            raw.insecure.as_ref().unwrap().span(),
            format!(
                "`insecure = true` (plain HTTP) is allowed only for a loopback registry, not `{}`",
                reference.registry
            ),
            Some(
                "serve the registry over HTTPS; give its private CA with `registry_tls_ca` if it has one"
                    .into(),
            ),
        );
    }
    let auth_secret = raw.registry_auth_secret.as_ref().and_then(|s| {
        let name = s.get_ref();
        if valid_secret_name(name) {
            Some(name.clone())
        } else {
            err(
                s.span(),
                format!("registry_auth_secret: invalid secret name `{name}`: use letters, digits and `_`"),
                None,
            );
            None
        }
    });
    Some(ComponentRef::Oci {
        reference,
        insecure,
        auth_secret,
    })
}

/// A `tls_ca`-shaped key (`key`): a PEM file relative to the configuration,
/// checked to hold certificates, or `{ secret = "NAME" }`.
fn parse_tls_ca(
    src: &Source<'_>,
    ca: &Spanned<RawTlsCa>,
    key: &str,
    err: &mut impl FnMut(std::ops::Range<usize>, String, Option<String>),
) -> Option<TlsCa> {
    match ca.get_ref() {
        RawTlsCa::Path(file) => {
            let base = src
                .path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            let path = base.join(file);
            match tls_ca_file_problem(&path) {
                None => Some(TlsCa::File(path)),
                Some(problem) => {
                    err(
                        ca.span(),
                        problem.replacen("tls_ca", key, 1),
                        Some(
                            "give a PEM file relative to this file, or { secret = \"NAME\" }"
                                .into(),
                        ),
                    );
                    None
                }
            }
        }
        RawTlsCa::Secret(RawTlsSecret { secret }) => {
            if valid_secret_name(secret) {
                Some(TlsCa::Secret(secret.clone()))
            } else {
                err(
                    ca.span(),
                    format!("{key}: invalid secret name `{secret}`: use letters, digits and `_`"),
                    None,
                );
                None
            }
        }
    }
}

/// A secret name: letters, digits and `_`, not starting with a digit.
fn valid_secret_name(n: &str) -> bool {
    n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
