//! `[checks.<id>]`, `[environments.<name>]` and `[pipelines.<name>]`.
//!
//! ```toml
//! [checks.error-rate]
//! plugin = "prometheus"                     # a health-check plugin
//! config = { query = '...', pass_if = "< 0.05" }   # over the plugin's own config
//!
//! [environments.production]
//! provider = "local"
//! strategy = { plugin = "canary", steps = [10, 25, 50, 100] }   # the rest are its parameters
//! analysis = { checks = ["error-rate"], interval = "10s", count = 3, failure_limit = 0 }
//! approval = "manual"                       # or "none" (default)
//! require_different_approver = true
//! window = "Mon-Thu 02:00-05:00 UTC"
//! outside_window = "wait"                   # or "refuse"
//! notify = ["slack", "jira"]
//! replicas = 3
//! progress_deadline = "10m"
//! concurrency = "queue"                     # or "refuse": one run per environment at a time
//! jobs = { pre = [{ name = "migrate", command = ["./migrate"], timeout = "5m" }], post = [] }
//! bake = { duration = "10m", interval = "1m", checks = ["error-rate"] }   # watch after promotion
//! exposure = "flags"                        # an exposure plugin: moves feature flags for expose steps
//! settle = "15s"                            # an analysis after an exposure change waits this first
//!
//! [pipelines.api]
//! stages = ["staging", "production"]
//! service = { command = ["./api", "--port", "{port}"] }   # for the provider, as JSON
//! notify = ["console"]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use rollcage_core::{PluginId, PluginKind, Window};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use crate::error::{ConfigError, Fields, Location};
use crate::interpolate::interpolate;
use crate::refs::{PluginRef, Refs};
use crate::source::Source;

/// A validated `[checks.<id>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub id: PluginId,
    pub plugin: PluginRef,
    /// Merged over the plugin's own `config`.
    pub config: serde_json::Value,
}

/// Whether a person must approve a stage before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    None,
    Manual,
}

/// What to do with a run outside the deployment window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowPolicy {
    Wait,
    Refuse,
}

/// What to do when the environment is busy with another run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Queue,
    Refuse,
}

/// `analysis = { ... }` of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisConfig {
    pub checks: Vec<PluginId>,
    pub interval: Duration,
    pub count: u32,
    pub initial_delay: Duration,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
    pub consecutive_error_limit: u32,
}

/// `bake = { ... }` of an environment: the promoted release is watched for
/// `duration`, measured every `interval` by `checks` (the analysis's checks
/// when empty), with the analysis's limits unless `failure_limit` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeConfig {
    pub duration: Duration,
    pub interval: Duration,
    pub checks: Vec<PluginId>,
    pub failure_limit: Option<u32>,
}

/// A one-off job (migration, smoke test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    pub name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// How long an analysis after an exposure change waits unless `settle`
/// says: flag SDKs poll their service (Unleash's every 15 s by default).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(15);

/// A validated `[environments.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentConfig {
    pub name: String,
    pub provider: PluginRef,
    pub strategy: PluginRef,
    /// The strategy table without `plugin`, as JSON: its parameters.
    pub strategy_params: serde_json::Value,
    /// Where the strategy table is written.
    pub strategy_at: Location,
    /// Where each of its parameters is written, by name.
    pub strategy_params_at: BTreeMap<String, Location>,
    pub analysis: AnalysisConfig,
    pub approval: Approval,
    pub require_different_approver: bool,
    pub window: Option<Window>,
    pub outside_window: WindowPolicy,
    pub notify: Vec<PluginRef>,
    pub replicas: u32,
    pub progress_deadline: Duration,
    pub concurrency: Concurrency,
    pub pre_jobs: Vec<JobConfig>,
    pub post_jobs: Vec<JobConfig>,
    /// Watch the promoted release before the stage ends.
    pub bake: Option<BakeConfig>,
    /// The exposure plugin that moves feature flags for expose steps
    /// naming no control.
    pub exposure: Option<PluginRef>,
    /// How long an analysis right after an exposure change waits first
    /// (flag SDKs poll their service); 15 s unless set.
    pub settle: Duration,
}

/// A validated `[pipelines.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub name: String,
    pub stages: Vec<String>,
    /// The service definition handed to providers, as JSON.
    pub service: serde_json::Value,
    /// Where the service table and each of its fields are written: a
    /// provider's `validate` names fields, and its problems are reported
    /// there.
    pub service_at: Fields,
    pub notify: Vec<PluginRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    plugin: Spanned<String>,
    #[serde(default)]
    config: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnalysis {
    #[serde(default)]
    checks: Vec<Spanned<String>>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    initial_delay: Option<Spanned<String>>,
    #[serde(default)]
    failure_limit: Option<u32>,
    #[serde(default)]
    inconclusive_limit: Option<u32>,
    #[serde(default)]
    consecutive_error_limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBake {
    duration: Spanned<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    checks: Vec<Spanned<String>>,
    #[serde(default)]
    failure_limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    #[serde(default)]
    pre: Vec<RawJob>,
    #[serde(default)]
    post: Vec<RawJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    provider: Spanned<String>,
    strategy: Spanned<toml::Table>,
    #[serde(default)]
    analysis: Option<RawAnalysis>,
    #[serde(default)]
    approval: Option<Spanned<String>>,
    #[serde(default)]
    require_different_approver: bool,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    outside_window: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    replicas: Option<Spanned<u32>>,
    #[serde(default)]
    progress_deadline: Option<Spanned<String>>,
    #[serde(default)]
    concurrency: Option<Spanned<String>>,
    #[serde(default)]
    jobs: Option<RawJobs>,
    #[serde(default)]
    bake: Option<Spanned<RawBake>>,
    #[serde(default)]
    exposure: Option<Spanned<String>>,
    #[serde(default)]
    settle: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    stages: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    service: Option<toml::Table>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
}

/// Iterate the `[<section>.<name>]` entries of a section value, checking names.
fn entries<'v, 'i>(
    src: &Source<'_>,
    section: &str,
    value: &'v Spanned<DeValue<'i>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, std::ops::Range<usize>, &'v Spanned<DeValue<'i>>)> {
    let Some(table) = value.get_ref().as_table() else {
        errors.push(src.error(
            value.span(),
            format!("`{section}` must be a table of `[{section}.<name>]` sections"),
            None,
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, entry) in table {
        let name: &str = key.get_ref();
        if name.parse::<PluginId>().is_err() {
            errors.push(src.error(
                key.span(),
                format!("invalid name `{name}` in [{section}]: use lower-case letters, digits and `-`, starting with a letter"),
                None,
            ));
            continue;
        }
        out.push((name.to_string(), key.span(), entry));
    }
    out
}

/// One of a few words (`approval = "manual"`); `default` when absent or
/// invalid, with an error naming the key and the options when invalid.
fn choice<T: Copy>(
    src: &Source<'_>,
    what: &str,
    key: &str,
    value: &Option<Spanned<String>>,
    options: &[(&str, T)],
    default: T,
    errors: &mut Vec<ConfigError>,
) -> T {
    let Some(v) = value else { return default };
    match options.iter().find(|(word, _)| word == v.get_ref()) {
        Some((_, t)) => *t,
        None => {
            let words: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            errors.push(src.error(
                v.span(),
                format!(
                    "{what}: {key} = \"{}\": expected {}",
                    v.get_ref(),
                    words.join(" or ")
                ),
                None,
            ));
            default
        }
    }
}

fn duration(
    src: &Source<'_>,
    what: &str,
    v: &Option<Spanned<String>>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match v {
        None => default,
        Some(s) => rollcage_core::duration::parse(s.get_ref()).unwrap_or_else(|e| {
            errors.push(src.error(s.span(), format!("{what}: {e}"), None));
            default
        }),
    }
}

pub(crate) fn parse_checks(
    src: &Source<'_>,
    value: &Spanned<DeValue<'_>>,
    refs: &Refs<'_>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<PluginId, CheckConfig> {
    let mut checks = BTreeMap::new();
    for (name, span, entry) in entries(src, "checks", value, errors) {
        let Some(raw) =
            crate::deserialize_entry::<RawCheck>(src, &format!("check `{name}`"), entry, errors)
        else {
            continue;
        };
        let what = format!("check `{name}`");
        let Some(plugin) = refs.resolve(
            src,
            raw.plugin.span(),
            raw.plugin.get_ref(),
            PluginKind::HealthCheck,
            &what,
            errors,
        ) else {
            continue;
        };
        let base = match &plugin {
            PluginRef::Instance(id) => refs.plugins[id].config.clone(),
            PluginRef::Builtin(_) => serde_json::json!({}),
        };
        let granted: Vec<String> = match &plugin {
            PluginRef::Instance(id) => refs.plugins[id].secrets.clone(),
            PluginRef::Builtin(_) => Vec::new(),
        };
        let mut config = base;
        if let Some(table) = raw.config {
            let mut own = serde_json::to_value(table).unwrap_or_default();
            let mut problems = Vec::new();
            interpolate(&mut own, "config", refs.vars, Some(&granted), &mut problems);
            for p in problems {
                errors.push(src.error(span.clone(), format!("{what}: {p}"), None));
            }
            if let (Some(base), serde_json::Value::Object(own)) = (config.as_object_mut(), own) {
                base.extend(own);
            }
        }
        let id: PluginId = name.parse().expect("checked by entries");
        checks.insert(id.clone(), CheckConfig { id, plugin, config });
    }
    checks
}

/// Where each of `keys` is written as a key (`name =`) in the text of the
/// table at `span`; a key not found there (a quoted one) is left out.
fn param_locations<'k>(
    src: &Source<'_>,
    span: std::ops::Range<usize>,
    keys: impl Iterator<Item = &'k String>,
) -> BTreeMap<String, Location> {
    let Some(text) = src.text.get(span.clone()) else {
        return BTreeMap::new();
    };
    let at_key = |i: usize, key: &str| {
        let before = text[..i].chars().next_back();
        let after = text[i + key.len()..].trim_start_matches([' ', '\t']);
        before.is_none_or(|c| matches!(c, '{' | ',' | ' ' | '\t' | '\n' | '\r'))
            && after.starts_with('=')
    };
    keys.filter_map(|key| {
        let offset = text
            .match_indices(key.as_str())
            .map(|(i, _)| i)
            .find(|&i| at_key(i, key))?;
        Some((key.clone(), src.location(span.start + offset)))
    })
    .collect()
}

impl PipelineConfig {
    /// A problem `provider` found in the service table, at the field it
    /// names, or the nearest enclosing one written in the file (the table
    /// itself for a field the host adds, such as `name`).
    pub fn service_error(&self, provider: &str, field: &str, message: &str) -> crate::ConfigError {
        let at = self.service_at.of(field);
        let subject = if field.is_empty() {
            String::new()
        } else {
            format!("{field}: ")
        };
        at.error(
            format!(
                "pipeline `{}`: service: provider `{provider}` rejected it: {subject}{message}",
                self.name
            ),
            None,
        )
    }
}

impl EnvironmentConfig {
    /// A problem the strategy's plugin found in its parameters, at the
    /// parameter it names first (`steps[2]: ...`, `steps: ...`), or else at
    /// the strategy table.
    pub fn strategy_error(&self, problem: &str) -> crate::ConfigError {
        let name: String = problem
            .trim_start_matches('`')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .collect();
        let at = self
            .strategy_params_at
            .get(&name)
            .unwrap_or(&self.strategy_at);
        at.error(
            format!(
                "environment `{}`: plugin `{}` rejected its parameters: {problem}",
                self.name,
                self.strategy.name()
            ),
            None,
        )
    }
}

pub(crate) fn parse_environments(
    src: &Source<'_>,
    value: &Spanned<DeValue<'_>>,
    refs: &Refs<'_>,
    checks: &BTreeMap<PluginId, CheckConfig>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, EnvironmentConfig> {
    let mut envs = BTreeMap::new();
    for (name, _span, entry) in entries(src, "environments", value, errors) {
        let Some(raw) = crate::deserialize_entry::<RawEnvironment>(
            src,
            &format!("environment `{name}`"),
            entry,
            errors,
        ) else {
            continue;
        };
        let before = errors.len();
        let what = format!("environment `{name}`");
        let err = |errors: &mut Vec<ConfigError>,
                   span: std::ops::Range<usize>,
                   msg: String,
                   hint: Option<String>| {
            errors.push(src.error(span, format!("{what}: {msg}"), hint));
        };
        let provider = refs.resolve(
            src,
            raw.provider.span(),
            raw.provider.get_ref(),
            PluginKind::EnvironmentProvider,
            &format!("{what}: provider"),
            errors,
        );
        let mut params = raw.strategy.get_ref().clone();
        let strategy = match params.remove("plugin") {
            Some(toml::Value::String(p)) => refs.resolve(
                src,
                raw.strategy.span(),
                &p,
                PluginKind::Strategy,
                &format!("{what}: strategy"),
                errors,
            ),
            _ => {
                err(
                    errors,
                    raw.strategy.span(),
                    "strategy needs `plugin = \"<name>\"`".into(),
                    Some(
                        "for example strategy = { plugin = \"canary\", steps = [10, 50, 100] }"
                            .into(),
                    ),
                );
                None
            }
        };
        let strategy_at = src.location(raw.strategy.span().start);
        let strategy_params_at = param_locations(src, raw.strategy.span(), params.keys());
        let mut strategy_params = serde_json::to_value(params).unwrap_or_default();
        let mut problems = Vec::new();
        interpolate(
            &mut strategy_params,
            "strategy",
            refs.vars,
            None,
            &mut problems,
        );
        for p in problems {
            err(errors, raw.strategy.span(), p, None);
        }

        let a = raw.analysis.unwrap_or(RawAnalysis {
            checks: vec![],
            interval: None,
            count: None,
            initial_delay: None,
            failure_limit: None,
            inconclusive_limit: None,
            consecutive_error_limit: None,
        });
        let known_checks = |key: &str, names: &[Spanned<String>], errors: &mut Vec<ConfigError>| {
            let mut ids = Vec::new();
            for c in names {
                match c
                    .get_ref()
                    .parse::<PluginId>()
                    .ok()
                    .filter(|id| checks.contains_key(id))
                {
                    Some(id) => ids.push(id),
                    None => {
                        let known: Vec<String> = checks.keys().map(|k| k.to_string()).collect();
                        err(
                            errors,
                            c.span(),
                            format!("{key} names unknown check `{}`", c.get_ref()),
                            Some(if known.is_empty() {
                                "declare it in [checks.<id>]".into()
                            } else {
                                format!("the checks are: {}", known.join(", "))
                            }),
                        );
                    }
                }
            }
            ids
        };
        let analysis_checks = known_checks("analysis", &a.checks, errors);
        let analysis = AnalysisConfig {
            checks: analysis_checks,
            interval: duration(
                src,
                &format!("{what}: analysis.interval"),
                &a.interval,
                Duration::from_secs(10),
                errors,
            ),
            count: a.count.unwrap_or(1).max(1),
            initial_delay: duration(
                src,
                &format!("{what}: analysis.initial_delay"),
                &a.initial_delay,
                Duration::ZERO,
                errors,
            ),
            failure_limit: a.failure_limit.unwrap_or(0),
            inconclusive_limit: a.inconclusive_limit.unwrap_or(0),
            consecutive_error_limit: a.consecutive_error_limit.unwrap_or(4),
        };

        let bake = raw.bake.as_ref().map(|b| {
            let span = b.span();
            let b = b.get_ref();
            let bake = BakeConfig {
                duration: duration(
                    src,
                    &format!("{what}: bake.duration"),
                    &Some(b.duration.clone()),
                    Duration::ZERO,
                    errors,
                ),
                interval: duration(
                    src,
                    &format!("{what}: bake.interval"),
                    &b.interval,
                    analysis.interval,
                    errors,
                ),
                checks: known_checks("bake", &b.checks, errors),
                failure_limit: b.failure_limit,
            };
            if bake.duration.is_zero() {
                err(
                    errors,
                    b.duration.span(),
                    "bake.duration must be longer than 0 s".into(),
                    Some("leave `bake` out to end the stage at promotion".into()),
                );
            } else if bake.interval.is_zero() || bake.interval > bake.duration {
                err(
                    errors,
                    b.interval.as_ref().map_or(span.clone(), |i| i.span()),
                    format!(
                        "bake.interval ({} s) must be over 0 s and at most bake.duration ({} s)",
                        bake.interval.as_secs_f64(),
                        bake.duration.as_secs_f64()
                    ),
                    None,
                );
            }
            if b.checks.is_empty() && analysis.checks.is_empty() {
                err(
                    errors,
                    span,
                    "bake has no checks to watch with".into(),
                    Some("give it `checks = [\"<check>\"]` or give the environment's analysis checks".into()),
                );
            }
            bake
        });

        let approval = choice(
            src,
            &what,
            "approval",
            &raw.approval,
            &[("manual", Approval::Manual), ("none", Approval::None)],
            Approval::None,
            errors,
        );
        let window = raw
            .window
            .as_ref()
            .and_then(|w| match w.get_ref().parse::<Window>() {
                Ok(w) => Some(w),
                Err(e) => {
                    err(errors, w.span(), e, None);
                    None
                }
            });
        let outside_window = choice(
            src,
            &what,
            "outside_window",
            &raw.outside_window,
            &[
                ("wait", WindowPolicy::Wait),
                ("refuse", WindowPolicy::Refuse),
            ],
            WindowPolicy::Wait,
            errors,
        );
        let concurrency = choice(
            src,
            &what,
            "concurrency",
            &raw.concurrency,
            &[
                ("queue", Concurrency::Queue),
                ("refuse", Concurrency::Refuse),
            ],
            Concurrency::Queue,
            errors,
        );
        let notify = refs.resolve_all(
            src,
            &raw.notify,
            PluginKind::Notifier,
            &format!("{what}: notify"),
            errors,
        );
        let exposure = raw.exposure.as_ref().and_then(|e| {
            refs.resolve(
                src,
                e.span(),
                e.get_ref(),
                PluginKind::Exposure,
                &format!("{what}: exposure"),
                errors,
            )
        });
        let settle = duration(
            src,
            &format!("{what}: settle"),
            &raw.settle,
            DEFAULT_SETTLE,
            errors,
        );
        let replicas = match &raw.replicas {
            Some(r) if *r.get_ref() == 0 || *r.get_ref() > 1000 => {
                err(
                    errors,
                    r.span(),
                    format!("replicas = {} is outside 1-1000", r.get_ref()),
                    None,
                );
                1
            }
            Some(r) => *r.get_ref(),
            None => 2,
        };
        let progress_deadline = duration(
            src,
            &format!("{what}: progress_deadline"),
            &raw.progress_deadline,
            Duration::from_secs(600),
            errors,
        );
        let jobs = raw.jobs.unwrap_or_default();
        let job = |j: RawJob, errors: &mut Vec<ConfigError>| JobConfig {
            timeout: duration(
                src,
                &format!("{what}: job `{}` timeout", j.name),
                &j.timeout,
                Duration::from_secs(600),
                errors,
            ),
            name: j.name,
            command: j.command,
            env: j.env,
        };
        let pre_jobs: Vec<JobConfig> = jobs.pre.into_iter().map(|j| job(j, errors)).collect();
        let post_jobs: Vec<JobConfig> = jobs.post.into_iter().map(|j| job(j, errors)).collect();
        for j in pre_jobs.iter().chain(&post_jobs) {
            if j.command.is_empty() {
                err(
                    errors,
                    raw.provider.span(),
                    format!("job `{}` has an empty command", j.name),
                    None,
                );
            }
        }
        if errors.len() != before {
            continue;
        }
        let (Some(provider), Some(strategy)) = (provider, strategy) else {
            continue;
        };
        envs.insert(
            name.clone(),
            EnvironmentConfig {
                name,
                provider,
                strategy,
                strategy_params,
                strategy_at,
                strategy_params_at,
                analysis,
                approval,
                require_different_approver: raw.require_different_approver,
                window,
                outside_window,
                notify,
                replicas,
                progress_deadline,
                concurrency,
                pre_jobs,
                post_jobs,
                bake,
                exposure,
                settle,
            },
        );
    }
    envs
}

pub(crate) fn parse_pipelines(
    src: &Source<'_>,
    value: &Spanned<DeValue<'_>>,
    refs: &Refs<'_>,
    environment_names: &[String],
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, PipelineConfig> {
    let mut pipelines = BTreeMap::new();
    for (name, span, entry) in entries(src, "pipelines", value, errors) {
        let Some(raw) = crate::deserialize_entry::<RawPipeline>(
            src,
            &format!("pipeline `{name}`"),
            entry,
            errors,
        ) else {
            continue;
        };
        let what = format!("pipeline `{name}`");
        let before = errors.len();
        let mut stages = Vec::new();
        if raw.stages.get_ref().is_empty() {
            errors.push(
                src.error(
                    raw.stages.span(),
                    format!("{what}: stages is empty"),
                    Some(
                        "list the environments in order, for example [\"staging\", \"production\"]"
                            .into(),
                    ),
                ),
            );
        }
        for s in raw.stages.get_ref() {
            let stage = s.get_ref();
            if stages.contains(stage) {
                errors.push(src.error(
                    s.span(),
                    format!("{what}: stage `{stage}` is listed twice"),
                    None,
                ));
            } else if !environment_names.contains(stage) {
                errors.push(src.error(
                    s.span(),
                    format!("{what}: unknown environment `{stage}`"),
                    Some(format!(
                        "the environments are: {}",
                        environment_names.join(", ")
                    )),
                ));
            }
            stages.push(stage.clone());
        }
        let notify = refs.resolve_all(
            src,
            &raw.notify,
            PluginKind::Notifier,
            &format!("{what}: notify"),
            errors,
        );
        let service_at = match entry.get_ref().get("service") {
            Some(v) => Fields::of_value(src, v),
            None => Fields::at(src.location(span.start)),
        };
        let mut service = serde_json::to_value(raw.service.unwrap_or_default()).unwrap_or_default();
        if let Some(map) = service.as_object_mut() {
            map.entry("name")
                .or_insert_with(|| serde_json::Value::String(name.clone()));
        }
        let mut problems = Vec::new();
        interpolate(&mut service, "service", refs.vars, None, &mut problems);
        for p in problems {
            errors.push(src.error(span.clone(), format!("{what}: {p}"), None));
        }
        if errors.len() == before {
            pipelines.insert(
                name.clone(),
                PipelineConfig {
                    name,
                    stages,
                    service,
                    service_at,
                    notify,
                },
            );
        }
    }
    pipelines
}
