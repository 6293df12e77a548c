//! `rollcage plugins test FILE.wasm`: load one component with the grants
//! given on the command line and call it once with a sample input (a
//! built-in sample per kind, or `--input FILE.json`), printing the result,
//! the plugin's log lines and how long loading and the call took. The loop
//! a plugin author lives in, without writing a configuration.

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
use crate::cli::PluginTestArgs;
use crate::plugins::kind_of;

/// The input used when none is given, per kind: what a real run would pass.
pub fn sample(kind: PluginKind, endpoint: Option<&str>) -> Value {
    let release = json!({"version": "1.4.0", "notes": "Faster checkout", "params": [["jira_issue", "OPS-12"]]});
    match kind {
        PluginKind::Notifier => json!({
            "kind": "succeeded",
            "run_id": "r0123456789ab",
            "pipeline": "web",
            "environment": "production",
            "release": release,
            "message": "1.4.0 is live in production",
            "fields": [["traffic", "1.4.0=100%"]],
            "url": null,
            "timestamp_ms": 1_795_000_000_000u64,
        }),
        PluginKind::HealthCheck => json!({
            "environment": "staging",
            "slot": "1.4.0",
            "release": "1.4.0",
            "endpoints": endpoint.map(|e| vec![e.to_string()]).unwrap_or_default(),
        }),
        PluginKind::Strategy => json!({
            "environment": "production",
            "release": release,
            "stable": {"version": "1.3.2", "notes": null, "params": []},
            "replicas": 3,
            "params": "{}",
            "history": [],
            "status": {
                "slots": [{"name": "1.3.2", "release": "1.3.2", "desired": 3, "ready": 3, "endpoints": ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]}],
                "weights": [{"slot": "1.3.2", "weight": 100}],
            },
        }),
        PluginKind::EnvironmentProvider => json!({
            "environment": "staging",
            "service": "staging-web",
            "service_spec": "{}",
        }),
    }
}

pub async fn test(args: PluginTestArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_plugin_test();
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            return Ok(bad_input(format!(
                "cannot read {}: {e}",
                args.file.display()
            )));
        }
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
    let source = args.file.display().to_string();
    let started = Instant::now();
    let found = match kind_of(&runtime, "test", &source, &bytes) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let kind = args.kind.map(PluginKind::from).unwrap_or(found);
    if kind != found {
        return Ok(bad_input(format!(
            "{source} is a {found} plugin, not a {kind}"
        )));
    }
    let spec = PluginSpec {
        id: "test".parse().expect("a valid id"),
        kind,
        source_name: source.clone(),
        grants: Grants {
            allow_hosts,
            allow_private,
            secrets: secrets.keys().cloned().collect(),
            tls_ca: None,
        },
        limits,
        config_json: config.to_string(),
    };
    let plugin = match runtime.load(spec, &bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let loaded = started.elapsed();
    let input = match &args.input {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => return Ok(bad_input(format!("--input {}: {e}", path.display()))),
        },
        None => sample(kind, None),
    };
    println!("plugin:  {source} ({kind}, {} KiB)", bytes.len() / 1024);
    println!(
        "loaded:  {:.1} ms (compile, or the compiled-component cache)",
        ms(loaded)
    );
    println!("input:   {input}");
    let bad = |e: serde_json::Error| format!("the input is not a {kind} input: {e}");
    let call_started = Instant::now();
    let result: Result<Result<Value, PluginError>, String> = match kind {
        PluginKind::Notifier => match serde_json::from_value::<Event>(input) {
            Ok(e) => Ok(plugin
                .notifier()
                .expect("a notifier")
                .notify(&e)
                .await
                .map(|()| json!(null))),
            Err(e) => Err(bad(e)),
        },
        PluginKind::HealthCheck => match serde_json::from_value::<CheckTarget>(input) {
            Ok(t) => Ok(plugin
                .health_check()
                .expect("a health check")
                .check(&t)
                .await
                .map(|m| json!(m))),
            Err(e) => Err(bad(e)),
        },
        PluginKind::Strategy => match serde_json::from_value::<DeployState>(input) {
            Ok(s) => {
                let strategy = plugin.strategy().expect("a strategy");
                match strategy.validate(&s.params).await {
                    Err(e) => Ok(Err(e)),
                    Ok(()) => {
                        let decide = strategy.decide(&s).await;
                        let rollback = strategy.rollback(&s).await;
                        Ok(decide
                            .and_then(|d| rollback.map(|r| json!({"decide": d, "rollback": r}))))
                    }
                }
            }
            Err(e) => Err(bad(e)),
        },
        PluginKind::EnvironmentProvider => match serde_json::from_value::<Target>(input) {
            Ok(t) => Ok(plugin
                .environment_provider()
                .expect("a provider")
                .status(&t)
                .await
                .map(|s| json!(s))),
            Err(e) => Err(bad(e)),
        },
    };
    let took = call_started.elapsed();
    match result {
        Err(e) => Ok(bad_input(e)),
        Ok(Ok(v)) => {
            println!("result:  {v}");
            println!("call:    {:.2} ms", ms(took));
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => {
            println!("error:   {e}");
            println!("call:    {:.2} ms", ms(took));
            Ok(ExitCode::from(1))
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
