//! `rollcage plugins test FILE.wasm|builtin:NAME`: load one component with
//! the grants given on the command line and call it once with a sample
//! input (a built-in sample per kind, or `--input FILE.json`), printing the
//! result, the plugin's log lines and how long loading and the call took.
//! The loop a plugin author lives in, without writing a configuration.
//!
//! Every kind can be driven end to end from the command line: a strategy's
//! parameters (`--params`, validated before anything is decided) and its
//! whole plan with the rollback plan over a simulated environment
//! (`--plan`, as `run --dry-run` computes it); a health check's endpoints
//! (`--endpoint`); a notifier's event (`--event`). A flag the kind ignores
//! is warned about, never silently dropped. Inputs and results are JSON in
//! the WIT's own spelling ([`super::wit_json`]); `--print-input` prints the
//! input a call would get, as a starting point for `--input`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use rollcage_core::*;
use rollcage_runtime::{
    ComponentCache, Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions,
};
use serde_json::{Value, json};

use super::bad_input;
use super::wit_json::{self, to_value};
use crate::cli::PluginTestArgs;
use crate::plugins::kind_of;

/// One call's input.
#[derive(Debug, Clone)]
pub enum Input {
    Event(Event),
    Check(CheckTarget),
    State(DeployState),
    Target(Target),
    Exposure(ExposureCall),
}

/// An exposure plugin's call: the flag's exposure in an environment is
/// read (`get-exposure`), after setting it to `percent` when one is given
/// (`set-exposure`), as an `{ expose = N }` step does.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposureCall {
    pub flag: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

impl Input {
    /// `value`, in WIT spelling, read as the input of a `kind` plugin.
    fn parse(kind: PluginKind, value: Value) -> Result<Input, serde_json::Error> {
        Ok(match kind {
            PluginKind::Exposure => Input::Exposure(serde_json::from_value(value)?),
            PluginKind::Notifier => {
                Input::Event(serde_json::from_value::<wit_json::Event>(value)?.into())
            }
            PluginKind::HealthCheck => {
                Input::Check(serde_json::from_value::<wit_json::CheckTarget>(value)?.into())
            }
            PluginKind::Strategy => {
                Input::State(serde_json::from_value::<wit_json::DeployState>(value)?.into())
            }
            PluginKind::EnvironmentProvider => {
                Input::Target(serde_json::from_value::<wit_json::Target>(value)?.into())
            }
        })
    }

    /// As JSON in WIT spelling.
    fn to_wit(&self) -> Value {
        match self.clone() {
            Input::Event(e) => to_value(wit_json::Event::from(e)),
            Input::Check(t) => to_value(wit_json::CheckTarget::from(t)),
            Input::State(s) => to_value(wit_json::DeployState::from(s)),
            Input::Target(t) => to_value(wit_json::Target::from(t)),
            Input::Exposure(c) => to_value(c),
        }
    }
}

/// What the command line says of the input, over the sample or `--input`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A health check's endpoints (`--endpoint`).
    pub endpoints: Vec<String>,
    /// A notifier's event kind (`--event`).
    pub event: Option<EventKind>,
    /// A strategy's parameters as JSON text (`--params`).
    pub params: Option<String>,
}

impl Overrides {
    fn apply(&self, input: &mut Input) {
        match input {
            Input::Check(t) if !self.endpoints.is_empty() => t.endpoints = self.endpoints.clone(),
            Input::Event(e) => {
                if let Some(kind) = self.event {
                    e.kind = kind;
                }
            }
            Input::State(s) => {
                if let Some(p) = &self.params {
                    s.params = p.clone();
                }
            }
            _ => {}
        }
    }
}

/// A sample event of `kind`, as a run of pipeline `web` taking 1.4.0 to
/// production over 1.3.2 would send it.
fn sample_event(kind: EventKind) -> Event {
    let (message, fields): (&str, &[(&str, &str)]) = match kind {
        EventKind::RunStarted => ("run r0123456789ab takes 1.4.0 through web", &[]),
        EventKind::StageStarted => ("1.4.0 is going to production", &[]),
        EventKind::AwaitingApproval => ("1.4.0 waits for a person to approve production", &[]),
        EventKind::Step => (
            "production: route 1.4.0=10% 1.3.2=90%",
            &[("traffic", "1.4.0=10% 1.3.2=90%")],
        ),
        EventKind::AnalysisFailed => (
            "analysis of 1.4.0 in production failed: error-rate 0.09 > 0.05",
            &[("check", "error-rate"), ("value", "0.09")],
        ),
        EventKind::RolledBack => (
            "1.4.0 was rolled back in production; 1.3.2 takes all traffic",
            &[("traffic", "1.3.2=100%"), ("reason", "analysis failed")],
        ),
        EventKind::Succeeded => ("1.4.0 is live in production", &[("traffic", "1.4.0=100%")]),
        EventKind::Failed => (
            "the run failed in production: the provider could not start 1.4.0",
            &[],
        ),
    };
    Event {
        kind,
        run_id: "r0123456789ab".into(),
        pipeline: "web".into(),
        environment: (kind != EventKind::RunStarted).then(|| "production".to_string()),
        release: sample_release(),
        message: message.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        url: None,
        timestamp_ms: 1_795_000_000_000,
    }
}

fn sample_release() -> Release {
    Release {
        version: "1.4.0".into(),
        notes: Some("Faster checkout".into()),
        params: vec![("jira_issue".into(), "OPS-12".into())],
    }
}

/// The input used when none is given, per kind: what a real run would pass.
pub fn sample(kind: PluginKind, overrides: &Overrides) -> Input {
    let mut input = match kind {
        // Read only: a percent to set is given with --input.
        PluginKind::Exposure => Input::Exposure(ExposureCall {
            flag: "checkout-v2".into(),
            environment: "production".into(),
            percent: None,
        }),
        PluginKind::Notifier => Input::Event(sample_event(
            overrides.event.unwrap_or(EventKind::Succeeded),
        )),
        PluginKind::HealthCheck => Input::Check(CheckTarget {
            environment: "staging".into(),
            slot: "1.4.0".into(),
            release: "1.4.0".into(),
            endpoints: vec![],
            exposure: None,
        }),
        PluginKind::Strategy => Input::State(DeployState {
            environment: "production".into(),
            release: sample_release(),
            stable: Some(Release::new("1.3.2")),
            replicas: 3,
            params: "{}".into(),
            history: vec![],
            status: EnvironmentStatus {
                slots: vec![SlotStatus {
                    name: "1.3.2".into(),
                    release: "1.3.2".into(),
                    desired: 3,
                    ready: 3,
                    endpoints: vec![
                        "127.0.0.1:8081".into(),
                        "127.0.0.1:8082".into(),
                        "127.0.0.1:8083".into(),
                    ],
                }],
                weights: vec![RouteWeight {
                    slot: "1.3.2".into(),
                    weight: 100,
                }],
            },
        }),
        PluginKind::EnvironmentProvider => Input::Target(Target {
            environment: "staging".into(),
            service: "staging-web".into(),
            service_spec: "{}".into(),
        }),
    };
    overrides.apply(&mut input);
    input
}

/// `--params`: each a JSON object, or KEY=VALUE (a value that parses as
/// JSON is taken as such); merged in order into one object, as text.
fn parse_params(given: &[String]) -> Result<Option<String>, String> {
    if given.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for p in given {
        if p.trim_start().starts_with('{') {
            match serde_json::from_str::<Value>(p) {
                Ok(Value::Object(m)) => map.extend(m),
                Ok(_) => unreachable!("text starting with `{{` is an object"),
                Err(e) => return Err(format!("--params `{p}`: {e}")),
            }
        } else {
            let Some((k, v)) = p.split_once('=') else {
                return Err(format!(
                    "--params `{p}`: expected KEY=VALUE or a JSON object"
                ));
            };
            let value = serde_json::from_str(v).unwrap_or(Value::String(v.to_string()));
            map.insert(k.to_string(), value);
        }
    }
    Ok(Some(Value::Object(map).to_string()))
}

/// A flag given that a `kind` plugin does not use, and why.
fn ignored_flags(kind: PluginKind, args: &PluginTestArgs) -> Vec<String> {
    let mut out = Vec::new();
    let mut not_for = |given: bool, flag: &str, only: PluginKind| {
        if given && kind != only {
            out.push(format!(
                "{flag} is for a {only}; a {kind} plugin ignores it"
            ));
        }
    };
    not_for(!args.params.is_empty(), "--params", PluginKind::Strategy);
    not_for(args.plan, "--plan", PluginKind::Strategy);
    not_for(
        !args.endpoints.is_empty(),
        "--endpoint",
        PluginKind::HealthCheck,
    );
    not_for(args.event.is_some(), "--event", PluginKind::Notifier);
    if kind == PluginKind::Strategy {
        for (given, flag) in [
            (!args.allow_hosts.is_empty(), "--allow-host"),
            (!args.allow_private.is_empty(), "--allow-private"),
            (!args.secrets.is_empty(), "--secret"),
        ] {
            if given {
                out.push(format!(
                    "{flag} is ignored: a strategy is granted nothing (it is a pure function of the deploy state)"
                ));
            }
        }
        if !args.config.is_empty() {
            out.push(
                "--config sets the plugin's own `config` table; a strategy's parameters (the keys of an environment's `strategy = { ... }`) are given with --params"
                    .into(),
            );
        }
    }
    out
}

pub async fn test(args: PluginTestArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_plugin_test();
    let overrides = Overrides {
        endpoints: args.endpoints.clone(),
        event: match args.event.as_deref().map(wit_json::event_kind) {
            None => None,
            Some(Ok(kind)) => Some(kind),
            Some(Err(e)) => return Ok(bad_input(format!("--event: {e}"))),
        },
        params: match parse_params(&args.params) {
            Ok(p) => p,
            Err(e) => return Ok(bad_input(e)),
        },
    };
    let bytes: Option<Cow<'static, [u8]>> = match &args.file {
        None => None,
        Some(file) => match file.to_str().and_then(|f| f.strip_prefix("builtin:")) {
            Some(name) => match rollcage_builtins::get(name) {
                Some(b) => Some(Cow::Borrowed(b.wasm)),
                None => {
                    let names: Vec<&str> =
                        rollcage_builtins::BUILTINS.iter().map(|b| b.name).collect();
                    return Ok(bad_input(format!(
                        "no builtin named `{name}`: expected one of {}",
                        names.join(", ")
                    )));
                }
            },
            None => match std::fs::read(file) {
                Ok(b) => Some(Cow::Owned(b)),
                Err(e) => {
                    return Ok(bad_input(format!("cannot read {}: {e}", file.display())));
                }
            },
        },
    };
    let mut config = serde_json::Map::new();
    for kv in &args.config {
        let Some((k, v)) = kv.split_once('=') else {
            return Ok(bad_input(format!("--config `{kv}`: expected KEY=VALUE")));
        };
        // A value that parses as JSON (a number, a list) is taken as such.
        let value = serde_json::from_str(v).unwrap_or(Value::String(v.to_string()));
        config.insert(k.to_string(), value);
    }
    let mut secrets = BTreeMap::new();
    for kv in &args.secrets {
        let Some((k, v)) = kv.split_once('=') else {
            return Ok(bad_input(format!("--secret `{kv}`: expected NAME=VALUE")));
        };
        secrets.insert(k.to_string(), v.to_string());
    }
    // `${secret:NAME}` in the config is filled from --secret, as the host
    // fills it from its secret source.
    let config = match rollcage_config::interpolate::fill_secrets(&Value::Object(config), &|name| {
        secrets.get(name).cloned()
    }) {
        Ok(c) => c,
        Err(e) => {
            return Ok(bad_input(format!(
                "--config: {e} (give it with --secret NAME=VALUE)"
            )));
        }
    };
    let mut allow_hosts = Vec::new();
    for h in &args.allow_hosts {
        match h.parse() {
            Ok(p) => allow_hosts.push(p),
            Err(e) => return Ok(bad_input(format!("--allow-host `{h}`: {e}"))),
        }
    }
    let mut allow_private = Vec::new();
    for n in &args.allow_private {
        match n.parse() {
            Ok(net) => allow_private.push(net),
            Err(e) => return Ok(bad_input(format!("--allow-private: {e}"))),
        }
    }
    let mut limits = Limits::default();
    for (key, value) in [
        ("memory_mb", args.memory_mb),
        ("timeout_ms", args.timeout_ms),
    ] {
        if let Err(e) = limits.set(key, value) {
            return Ok(bad_input(format!("--{}: {e}", key.replace('_', "-"))));
        }
    }
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: args.cache_dir.clone().or_else(ComponentCache::default_dir),
        secrets: Arc::new(MapSecrets(secrets.clone())),
        ..RuntimeOptions::default()
    })?;
    let source = args
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    let started = Instant::now();
    let found = match &bytes {
        None => None,
        Some(bytes) => match kind_of(&runtime, "test", &source, &**bytes) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(1));
            }
        },
    };
    let kind = match (args.kind.map(PluginKind::from), found) {
        (Some(kind), Some(found)) if kind != found => {
            return Ok(bad_input(format!(
                "{source} is a {found} plugin, not a {kind}"
            )));
        }
        (Some(kind), _) | (None, Some(kind)) => kind,
        (None, None) => {
            return Ok(bad_input(
                "give the plugin (FILE.wasm or builtin:NAME), or --kind for --print-input".into(),
            ));
        }
    };
    for w in ignored_flags(kind, &args) {
        eprintln!("warning: {w}");
    }
    let mut input = match &args.input {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(v) => match Input::parse(kind, v) {
                Ok(input) => input,
                Err(e) => {
                    return Ok(bad_input(format!(
                        "--input {}: the input is not a {kind} input: {e}\n  hint: `rollcage plugins test --print-input --kind {kind}` prints one",
                        path.display()
                    )));
                }
            },
            Err(e) => return Ok(bad_input(format!("--input {}: {e}", path.display()))),
        },
        None => sample(kind, &overrides),
    };
    overrides.apply(&mut input);
    if let Input::Check(t) = &input
        && t.endpoints.is_empty()
    {
        eprintln!(
            "warning: the check target has no endpoints: a check of the slot's instances can only be inconclusive; give --endpoint HOST:PORT of a service you run (and --allow-host for it)"
        );
    }
    if args.print_input {
        println!(
            "{}",
            serde_json::to_string_pretty(&input.to_wit()).expect("JSON")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let bytes = bytes.expect("a plugin is given unless --print-input");
    // A strategy is granted nothing, whatever the command line says (the
    // configuration refuses grants to one likewise).
    let grants = if kind == PluginKind::Strategy {
        Grants::default()
    } else {
        Grants {
            allow_hosts,
            allow_private,
            secrets: secrets.keys().cloned().collect(),
            tls_ca: None,
        }
    };
    let spec = PluginSpec {
        id: "test".parse().expect("a valid id"),
        kind,
        source_name: source.clone(),
        grants,
        limits,
        config_json: config.to_string(),
    };
    let plugin = match runtime.load(spec, &*bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let loaded = started.elapsed();
    println!("plugin:  {source} ({kind}, {} KiB)", bytes.len() / 1024);
    println!(
        "loaded:  {:.1} ms (compile, or the compiled-component cache)",
        ms(loaded)
    );
    println!("input:   {}", input.to_wit());
    let call_started = Instant::now();
    let result: Result<Value, PluginError> = match input {
        Input::Event(e) => plugin
            .notifier()
            .expect("a notifier")
            .notify(&e)
            .await
            .map(|()| json!(null)),
        Input::Check(t) => plugin
            .health_check()
            .expect("a health check")
            .check(&t)
            .await
            .map(|m| to_value(wit_json::Measurement::from(m))),
        Input::State(s) => {
            let strategy = plugin.strategy().expect("a strategy");
            // The parameters first, as `config check` and a run do: a
            // strategy decides only with parameters it accepted.
            if let Err(e) = strategy.validate(&s.params).await {
                println!("error:   {e}");
                if let PluginError::InvalidParams { .. } = e {
                    println!("params:  {} (give them with --params KEY=VALUE)", s.params);
                }
                return Ok(ExitCode::from(1));
            }
            if args.plan {
                let done = plan(&*strategy, &s).await;
                println!("call:    {:.2} ms", ms(call_started.elapsed()));
                return Ok(done);
            }
            let decide = strategy.decide(&s).await;
            let rollback = strategy.rollback(&s).await;
            decide.and_then(|d| {
                rollback.map(|r| {
                    json!({
                        "decide": to_value(wit_json::Action::from(d)),
                        "rollback": r.into_iter().map(|a| to_value(wit_json::Action::from(a))).collect::<Vec<_>>(),
                    })
                })
            })
        }
        Input::Target(t) => plugin
            .environment_provider()
            .expect("a provider")
            .status(&t)
            .await
            .map(|s| to_value(wit_json::EnvironmentStatus::from(s))),
        Input::Exposure(c) => {
            let control = plugin.exposure().expect("an exposure plugin");
            // The config first, as `config check` does.
            match control.validate(&config.to_string()).await {
                Ok(problems) if problems.is_empty() => {}
                Ok(problems) => {
                    for p in problems {
                        println!("error:   config: {p}");
                    }
                    return Ok(ExitCode::from(1));
                }
                Err(e) => {
                    println!("error:   {e}");
                    return Ok(ExitCode::from(1));
                }
            }
            let set = match c.percent {
                Some(percent) => control.set_exposure(&c.flag, &c.environment, percent).await,
                None => Ok(()),
            };
            match set {
                Ok(()) => control.get_exposure(&c.flag, &c.environment).await.map(
                    |s| json!({"percent": s.percent, "enabled": s.enabled, "revision": s.revision}),
                ),
                Err(e) => Err(e),
            }
        }
    };
    let took = call_started.elapsed();
    match result {
        Ok(v) => {
            println!("result:  {v}");
            println!("call:    {:.2} ms", ms(took));
            if kind == PluginKind::Strategy {
                println!("hint:    --plan drives `decide` to `done` and shows the rollback plan");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("error:   {e}");
            println!("call:    {:.2} ms", ms(took));
            Ok(ExitCode::from(1))
        }
    }
}

/// `--plan`: the strategy's whole plan from the state's stable release to
/// its release over a simulated environment where every step succeeds and
/// every analysis passes, and the rollback plan if the first analysis
/// failed, printed as `run --dry-run` prints them.
async fn plan(strategy: &dyn Strategy, s: &DeployState) -> ExitCode {
    let preview = rollcage_engine::preview::preview(
        strategy,
        &s.environment,
        s.release.clone(),
        s.stable.clone(),
        s.replicas,
        &s.params,
    )
    .await;
    let preview = match preview {
        Ok(p) => p,
        Err(e) => {
            println!("error:   {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "plan:    {}, {} replica(s), parameters {}",
        match &s.stable {
            Some(stable) => format!("{} -> {}", stable.version, s.release.version),
            None => format!("first deployment of {}", s.release.version),
        },
        s.replicas,
        s.params
    );
    for (i, a) in preview.plan.iter().enumerate() {
        println!("  {:>2}. {a}", i + 1);
    }
    println!("  {:>2}. {}", preview.plan.len() + 1, Action::Done);
    println!(
        "rollback, if the check after step {} failed:",
        preview.rollback_after
    );
    for a in &preview.rollback {
        println!("      {a}");
    }
    println!(
        "steps:   {}, {} of timed pauses{}",
        preview.plan.len(),
        rollcage_core::duration::format(preview.paused_ms),
        if preview.approvals > 0 {
            format!(", {} approval pause(s)", preview.approvals)
        } else {
            String::new()
        }
    );
    ExitCode::SUCCESS
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
