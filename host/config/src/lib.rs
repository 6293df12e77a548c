//! Rollcage's configuration (`rollcage.toml`): parsing and validation.
//!
//! Every section is deserialized on its own with `deny_unknown_fields`, so
//! one bad section does not hide the errors of the next; then references and
//! values are checked. All problems come back at once, each with
//! `file:line:col`, a message naming the field, and a hint where one helps.
//! This crate knows nothing of wasm: it describes plugins, it does not load
//! them.

mod alerts;
mod error;
pub mod interpolate;
mod plugins;
mod refs;
mod sections;
mod source;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use rollcage_core::{PluginId, PluginKind};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use alerts::{AlertMatcher, AlertsConfig, Place};
pub use error::{ConfigError, ConfigErrors, Fields, Location};
pub use plugins::{BreakerSettings, ComponentRef, LimitsConfig, PluginConfig};
pub use refs::{PluginRef, PluginUse};
pub use sections::{
    AnalysisConfig, Approval, CheckConfig, Concurrency, DEFAULT_SETTLE, EnvironmentConfig,
    JobConfig, PipelineConfig, WindowPolicy,
};
pub use source::Source;

/// A builtin plugin the configuration may name as `builtin:<name>`.
#[derive(Debug, Clone, Copy)]
pub struct KnownBuiltin {
    pub name: &'static str,
    pub kind: PluginKind,
}

/// What validation needs to know of the world outside the file.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Builtin plugins available.
    pub builtins: Vec<KnownBuiltin>,
    /// Variables for `${VAR}`; the process environment when `None`.
    pub vars: Option<BTreeMap<String, String>>,
}

/// `[server] log = { level = "info", format = "json" }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn` or `error` (default `info`).
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` (default) or `json`: one JSON object a line, with run id,
    /// stage and plugin id as fields.
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_level() -> String {
    "info".into()
}
fn default_format() -> String {
    "text".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: default_format(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `sqlite://path` or `postgres://...`.
    #[serde(default = "default_database")]
    pub database: String,
    /// Where compiled plugin components are cached.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// A TOML file of `NAME = "value"` secrets (mode 0600); the process
    /// environment when absent.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Notifications one notifier may have pending, over every run
    /// (default 1000); past it, a new one is refused, logged as an error
    /// and recorded as given up.
    #[serde(default = "default_notify_queue")]
    pub notify_queue: std::num::NonZeroUsize,
    /// How long a host holds a run it drives without renewing its lease
    /// (default "15s", from "1s" to "10m"): a host that dies has its runs
    /// taken over by another this long after. Renewed every third of it.
    #[serde(default = "default_lease", deserialize_with = "lease")]
    pub lease: std::time::Duration,
    /// Runs this host drives at once (default 50); more wait queued for a
    /// host with room.
    #[serde(default = "default_max_active_runs")]
    pub max_active_runs: NonZeroU32,
    /// Where the local runtime serves its router's metrics (`GET /metrics`,
    /// for Prometheus to scrape); a free loopback port when absent.
    #[serde(default)]
    pub local_metrics: Option<std::net::SocketAddr>,
    /// `[server.api]`: the HTTP API's limits (read on its own, so that its
    /// errors and the tokens' are reported with the rest of `[server]`'s).
    #[serde(skip)]
    pub api: ApiConfig,
    /// `[server.tokens.<name>]`: API bearer tokens, by name (the name is who
    /// acts in the audit trail). Only hashes are written here: `rollcage
    /// token new` makes one.
    #[serde(skip)]
    pub tokens: BTreeMap<String, TokenConfig>,
}

/// `[server.api]`: limits of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body, in bytes (default 65536).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Requests per second each token may make on average (default 50).
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    /// Requests a token may make at once above the average (default 100).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// How long a request may take before it is answered 503 (default
    /// "30s"). Live event streams are exempt.
    #[serde(default = "default_request_timeout", deserialize_with = "duration")]
    pub request_timeout: std::time::Duration,
    /// How long a client may take to send a request's headers before its
    /// connection is closed (default "10s").
    #[serde(default = "default_header_read_timeout", deserialize_with = "duration")]
    pub header_read_timeout: std::time::Duration,
    /// Connections one client address may hold open at once (default 32).
    #[serde(default = "default_connections_per_address")]
    pub connections_per_address: NonZeroU32,
    /// Failed authentications one client address may make per minute, and
    /// at once, before it is answered 429 (default 10).
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: NonZeroU32,
    /// Unfinished runs (queued, running or waiting) accepted at once over
    /// every host sharing the database and every pipeline (default 200).
    #[serde(default = "default_max_runs")]
    pub max_runs: NonZeroU32,
    /// Unfinished runs accepted at once per pipeline (default 20).
    #[serde(default = "default_max_runs_per_pipeline")]
    pub max_runs_per_pipeline: NonZeroU32,
    /// Live event streams one token may hold open at once (default 8).
    #[serde(default = "default_streams_per_token")]
    pub streams_per_token: NonZeroU32,
    /// A dashboard session ends after this long without a request
    /// (default "30m").
    #[serde(
        default = "default_session_idle",
        deserialize_with = "session_duration"
    )]
    pub session_idle: std::time::Duration,
    /// A dashboard session ends this long after sign-in, however busy
    /// (default "12h").
    #[serde(
        default = "default_session_lifetime",
        deserialize_with = "session_duration"
    )]
    pub session_lifetime: std::time::Duration,
}

fn default_session_idle() -> std::time::Duration {
    std::time::Duration::from_secs(30 * 60)
}
fn default_session_lifetime() -> std::time::Duration {
    std::time::Duration::from_secs(12 * 60 * 60)
}

fn session_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::time::Duration, D::Error> {
    let t = duration(d)?;
    let range = std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(7 * 24 * 3600);
    if !range.contains(&t) {
        return Err(serde::de::Error::custom(format!(
            "a session's time must be from \"1s\" to \"168h\" (got {} ms)",
            t.as_millis()
        )));
    }
    Ok(t)
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}
fn default_header_read_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_connections_per_address() -> NonZeroU32 {
    nonzero(32)
}
fn default_auth_failures() -> NonZeroU32 {
    nonzero(10)
}
fn default_max_runs() -> NonZeroU32 {
    nonzero(200)
}
fn default_max_runs_per_pipeline() -> NonZeroU32 {
    nonzero(20)
}
fn default_streams_per_token() -> NonZeroU32 {
    nonzero(8)
}

fn default_lease() -> std::time::Duration {
    std::time::Duration::from_secs(15)
}
fn default_max_active_runs() -> NonZeroU32 {
    nonzero(50)
}

fn lease<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let lease = duration(d)?;
    let range = std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600);
    if !range.contains(&lease) {
        return Err(serde::de::Error::custom(format!(
            "lease must be from \"1s\" to \"10m\" (got {} ms)",
            lease.as_millis()
        )));
    }
    Ok(lease)
}

fn default_notify_queue() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(1000).expect("not zero")
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_rate() -> u32 {
    50
}
fn default_burst() -> u32 {
    100
}
fn default_request_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    rollcage_core::duration::parse(&text).map_err(serde::de::Error::custom)
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit_bytes: default_body_limit(),
            requests_per_second: default_rate(),
            burst: default_burst(),
            request_timeout: default_request_timeout(),
            header_read_timeout: default_header_read_timeout(),
            connections_per_address: default_connections_per_address(),
            auth_failures_per_minute: default_auth_failures(),
            max_runs: default_max_runs(),
            max_runs_per_pipeline: default_max_runs_per_pipeline(),
            streams_per_token: default_streams_per_token(),
            session_idle: default_session_idle(),
            session_lifetime: default_session_lifetime(),
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Read runs, environments, plugins, the audit trail.
    Viewer,
    /// Read, and start, retry and roll back runs in its environments.
    Deployer,
    /// Read, and approve and abort runs in its environments.
    Approver,
    /// Only `POST /v1/hooks/alertmanager` (Prometheus Alertmanager), for
    /// alerts on its environments.
    Alerts,
    /// Everything, everywhere.
    Admin,
}

/// `[server.tokens.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `sha256:<64 hex digits>` of the token.
    pub hash: String,
    pub role: TokenRole,
    /// Environments a deployer or approver acts in (all when empty).
    #[serde(default)]
    pub environments: Vec<String>,
}

fn default_listen() -> String {
    "127.0.0.1:7070".into()
}
fn default_database() -> String {
    "sqlite://rollcage.db".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            database: default_database(),
            cache_dir: None,
            log: LogConfig::default(),
            secrets_file: None,
            notify_queue: default_notify_queue(),
            lease: default_lease(),
            max_active_runs: default_max_active_runs(),
            local_metrics: None,
            api: ApiConfig::default(),
            tokens: BTreeMap::new(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// A short hash of the file and its includes, for the audit trail.
    pub hash: String,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[plugins.<id>]`, by id.
    pub plugins: BTreeMap<PluginId, PluginConfig>,
    /// `[checks.<id>]`, by id.
    pub checks: BTreeMap<PluginId, CheckConfig>,
    /// `[environments.<name>]`, from this file and its includes.
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// `[pipelines.<name>]`.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// `[alerts]`: what Alertmanager's alerts act on.
    pub alerts: AlertsConfig,
    /// Every reference to a component file of undeclared kind, to be
    /// checked against the kind found when it is loaded.
    pub plugin_uses: Vec<PluginUse>,
}

const SECTIONS: &[&str] = &[
    "include",
    "server",
    "plugins",
    "checks",
    "environments",
    "pipelines",
    "alerts",
];
const INCLUDED_SECTIONS: &[&str] = &["checks", "environments"];

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path, cx: &Context) -> Result<Config, ConfigErrors> {
        match Config::load_partial(path, cx) {
            (Some(config), errors) if errors.0.is_empty() => Ok(config),
            (_, errors) => Err(errors),
        }
    }

    /// Validate `text`, read from `path` (used in messages, and to resolve
    /// relative component paths and includes).
    pub fn parse(path: &Path, text: &str, cx: &Context) -> Result<Config, ConfigErrors> {
        match Config::parse_partial(path, text, cx) {
            (Some(config), errors) if errors.0.is_empty() => Ok(config),
            (_, errors) => Err(errors),
        }
    }

    /// [`Config::load`], keeping what is valid beside the errors: for
    /// `config check`, which has the plugins check what could be read
    /// (a strategy's parameters) and reports it all at once.
    pub fn load_partial(path: &Path, cx: &Context) -> (Option<Config>, ConfigErrors) {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_partial(path, &text, cx),
            Err(e) => (
                None,
                ConfigErrors(vec![ConfigError::whole_file(
                    path,
                    format!("cannot read: {e}"),
                )]),
            ),
        }
    }

    /// [`Config::parse`], keeping what is valid beside the errors: every
    /// plugin, check, environment and pipeline that is valid itself (`None`
    /// when the file is not TOML at all).
    pub fn parse_partial(path: &Path, text: &str, cx: &Context) -> (Option<Config>, ConfigErrors) {
        let src = Source::new(path, text);
        let mut errors = Vec::new();
        let root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => return (None, ConfigErrors(vec![src.toml_error(&e)])),
        };
        let vars = interpolate::lookup_in(cx.vars.as_ref());
        let mut server = ServerConfig::default();
        let mut server_api = None;
        let mut server_tokens = BTreeMap::new();
        let mut plugins = BTreeMap::new();
        let mut includes: Vec<(PathBuf, String)> = Vec::new();
        for (key, value) in root.get_ref() {
            let name: &str = key.get_ref();
            match name {
                "server" => {
                    let (rest, api, tokens) = split_server(value);
                    match deserialize::<ServerConfig>(&rest) {
                        Ok(s) => {
                            check_log(&src, value, &s.log, &mut errors);
                            server = s;
                        }
                        Err(e) => {
                            let mut err = src.toml_error(&e);
                            err.message = format!("[server]: {}", err.message);
                            errors.push(err);
                        }
                    }
                    if let Some(v) = api {
                        server_api = deserialize_entry(&src, "[server.api]", v, &mut errors);
                    }
                    for (name, v) in tokens {
                        let what = format!("[server.tokens.{name}]");
                        if let Some(t) = deserialize_entry(&src, &what, v, &mut errors) {
                            server_tokens.insert(name, t);
                        }
                    }
                }
                "plugins" => plugins = plugins::parse(&src, value, cx, &vars, &mut errors),
                "include" => includes = read_includes(&src, value, &mut errors),
                "checks" | "environments" | "pipelines" | "alerts" => {}
                other => errors.push(src.error(
                    key.span(),
                    format!("unknown section `{other}`"),
                    Some(format!("expected one of: {}", SECTIONS.join(", "))),
                )),
            }
        }
        // Included files hold checks and environments only.
        let mut included = Vec::new();
        for (inc_path, inc_text) in &includes {
            let inc_src = Source::new(inc_path, inc_text);
            match DeTable::parse(inc_text) {
                Ok(t) => included.push((inc_src, t)),
                Err(e) => errors.push(inc_src.toml_error(&e)),
            }
        }
        let mut files: Vec<(&Source<'_>, &Spanned<DeTable<'_>>)> = vec![(&src, &root)];
        files.extend(included.iter().map(|(s, t)| (s, t)));
        for (file, table) in files.iter().skip(1) {
            for (key, _) in table.get_ref() {
                let k: &str = key.get_ref();
                if !INCLUDED_SECTIONS.contains(&k) {
                    errors.push(file.error(
                        key.span(),
                        format!("section `{k}` cannot be in an included file"),
                        Some(format!(
                            "included files hold: {}",
                            INCLUDED_SECTIONS.join(", ")
                        )),
                    ));
                }
            }
        }
        let section = |name: &str| -> Vec<(&Source<'_>, &Spanned<DeValue<'_>>)> {
            files
                .iter()
                .filter_map(|(file, table)| table.get_ref().get(name).map(|v| (*file, v)))
                .collect()
        };
        let refs = refs::Refs {
            plugins: &plugins,
            cx,
            vars: &vars,
            uses: Default::default(),
        };
        let mut checks = BTreeMap::new();
        for (file, value) in section("checks") {
            for (id, check) in sections::parse_checks(file, value, &refs, &mut errors) {
                if checks.contains_key(&id) {
                    errors.push(ConfigError::whole_file(
                        &file.path,
                        format!("check `{id}` is defined twice"),
                    ));
                }
                checks.insert(id, check);
            }
        }
        let mut environment_names = Vec::new();
        for (_, value) in section("environments") {
            if let Some(t) = value.get_ref().as_table() {
                environment_names.extend(t.iter().map(|(k, _)| k.get_ref().to_string()));
            }
        }
        let mut environments = BTreeMap::new();
        for (file, value) in section("environments") {
            for (name, env) in
                sections::parse_environments(file, value, &refs, &checks, &mut errors)
            {
                if environments.contains_key(&name) {
                    errors.push(ConfigError::whole_file(
                        &file.path,
                        format!("environment `{name}` is defined twice"),
                    ));
                }
                environments.insert(name, env);
            }
        }
        let mut pipelines = BTreeMap::new();
        if let Some(value) = root.get_ref().get("pipelines") {
            pipelines =
                sections::parse_pipelines(&src, value, &refs, &environment_names, &mut errors);
        }
        let alerts = match root.get_ref().get("alerts") {
            Some(value) => alerts::parse(&src, value, &environment_names, &mut errors),
            None => AlertsConfig::default(),
        };
        server.api = server_api.unwrap_or_default();
        server.tokens = server_tokens;
        if let Some(value) = root.get_ref().get("server") {
            check_tokens(&src, value, &server, &environment_names, &mut errors);
        }
        // The audit trail names the configuration a run used: the main
        // file and its includes, in order.
        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        for (p, t) in &includes {
            hasher.update(p.to_string_lossy().as_bytes());
            hasher.update(t.as_bytes());
        }
        let hash = hex::encode(&hasher.finalize()[..8]);
        let plugin_uses = refs.uses.take();
        let config = Config {
            path: path.to_path_buf(),
            hash,
            server,
            plugins,
            checks,
            environments,
            pipelines,
            alerts,
            plugin_uses,
        };
        sort_errors(path, &mut errors);
        (Some(config), ConfigErrors(errors))
    }
}

/// The main file's errors first, then each include's; in file order
/// within each.
pub fn sort_errors(path: &Path, errors: &mut [ConfigError]) {
    let order = |p: &Path| if p == path { 0 } else { 1 };
    errors.sort_by(|a, b| {
        (order(&a.path), &a.path, a.line, a.column).cmp(&(
            order(&b.path),
            &b.path,
            b.line,
            b.column,
        ))
    });
}

fn check_log(
    src: &Source<'_>,
    value: &Spanned<DeValue<'_>>,
    log: &LogConfig,
    errors: &mut Vec<ConfigError>,
) {
    let span = value
        .get_ref()
        .get("log")
        .map(|v| v.span())
        .unwrap_or(value.span());
    if !["trace", "debug", "info", "warn", "error"].contains(&log.level.as_str()) {
        errors.push(src.error(
            span.clone(),
            format!(
                "[server]: log.level = \"{}\": expected trace, debug, info, warn or error",
                log.level
            ),
            None,
        ));
    }
    if !["text", "json"].contains(&log.format.as_str()) {
        errors.push(src.error(
            span,
            format!(
                "[server]: log.format = \"{}\": expected \"text\" or \"json\"",
                log.format
            ),
            None,
        ));
    }
}

/// `[server]` without its `api` and `tokens` tables, and those tables.
#[allow(clippy::type_complexity)]
fn split_server<'a, 'i>(
    value: &'a Spanned<DeValue<'i>>,
) -> (
    Spanned<DeValue<'i>>,
    Option<&'a Spanned<DeValue<'i>>>,
    Vec<(String, &'a Spanned<DeValue<'i>>)>,
) {
    let Some(table) = value.get_ref().as_table() else {
        return (value.clone(), None, Vec::new());
    };
    let rest: DeTable<'i> = table
        .iter()
        .filter(|(k, _)| !matches!(k.get_ref().as_ref(), "api" | "tokens"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tokens = match table.get("tokens") {
        Some(t) => match t.get_ref().as_table() {
            Some(t) => t
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), v))
                .collect(),
            // Not a table: let the main deserializer say so.
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    (
        Spanned::new(value.span(), DeValue::Table(rest)),
        table.get("api"),
        tokens,
    )
}

/// Token hashes are well formed and name known environments.
fn check_tokens(
    src: &Source<'_>,
    server_value: &Spanned<DeValue<'_>>,
    server: &ServerConfig,
    environments: &[String],
    errors: &mut Vec<ConfigError>,
) {
    // The span of `tokens.<name>.<field>`, or of the closest table above.
    let span_of = |name: &str, field: &str| {
        let tokens = server_value.get_ref().get("tokens");
        let token = tokens.and_then(|t| t.get_ref().get(name));
        token
            .and_then(|t| t.get_ref().get(field))
            .or(token)
            .or(tokens)
            .unwrap_or(server_value)
            .span()
    };
    for (name, token) in &server.tokens {
        let hex = token.hash.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(src.error(
                span_of(name, "hash"),
                format!("[server.tokens.{name}]: hash must be `sha256:` and 64 hex digits, the hash of the token, never the token itself"),
                Some("`rollcage token new` prints a token and the line to put here".into()),
            ));
        }
        // A viewer reads everything and an admin acts everywhere: an
        // environment list would look like a limit and limit nothing.
        let unlimited = match token.role {
            TokenRole::Viewer => Some("viewer"),
            TokenRole::Admin => Some("admin"),
            TokenRole::Deployer | TokenRole::Approver | TokenRole::Alerts => None,
        };
        if let Some(role) = unlimited
            && !token.environments.is_empty()
        {
            errors.push(src.error(
                span_of(name, "environments"),
                format!("[server.tokens.{name}]: role {role} is not limited by environment; `environments` limits only deployers and approvers"),
                Some("remove `environments`, or give the token the role that acts there".into()),
            ));
        }
        for env in &token.environments {
            if !environments.contains(env) {
                errors.push(src.error(
                    span_of(name, "environments"),
                    format!("[server.tokens.{name}]: unknown environment `{env}`"),
                    Some(format!("environments: {}", environments.join(", "))),
                ));
            }
        }
    }
}

fn read_includes(
    src: &Source<'_>,
    value: &Spanned<DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<(PathBuf, String)> {
    let Some(items) = value.get_ref().as_array() else {
        errors.push(src.error(
            value.span(),
            "include must be a list of file paths".into(),
            Some("include = [\"environments/staging.toml\"]".into()),
        ));
        return Vec::new();
    };
    let base = src.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out = Vec::new();
    for item in items.iter() {
        let Some(rel) = item.get_ref().as_str() else {
            errors.push(src.error(item.span(), "include entries are file paths".into(), None));
            continue;
        };
        let path = base.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => out.push((path, text)),
            Err(e) => errors.push(src.error(
                item.span(),
                format!("cannot read included file `{}`: {e}", path.display()),
                None,
            )),
        }
    }
    out
}

/// Deserialize one `[<section>.<name>]` entry; on error, record it with
/// `what` (`plugin `slack``) before the message.
pub(crate) fn deserialize_entry<'i, T: serde::de::Deserialize<'i>>(
    src: &Source<'_>,
    what: &str,
    entry: &Spanned<DeValue<'i>>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match deserialize(entry) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut err = src.toml_error(&e);
            err.message = format!("{what}: {}", err.message);
            errors.push(err);
            None
        }
    }
}

/// Deserialize one section, keeping the document's spans in errors.
pub(crate) fn deserialize<'i, T: serde::de::Deserialize<'i>>(
    value: &Spanned<DeValue<'i>>,
) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value.clone()))
}

#[cfg(test)]
mod tests;
