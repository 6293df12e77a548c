//! The plugin sandbox, end to end: real wasm components (the first-party
//! plugins and the fixtures) loaded by the real runtime and called through
//! the `rollcage-core` traits. Every misbehaviour is contained with an error
//! that names the plugin and what it did, and the host goes on.

use std::collections::BTreeMap;
use std::sync::Arc;

use rollcage_core::*;
use rollcage_runtime::{
    Grants, Limits, LoadError, LoadedPlugin, MapSecrets, PluginSpec, Runtime, RuntimeOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> Runtime {
    let secrets = MapSecrets(BTreeMap::from([(
        "TOKEN".to_string(),
        "s3cret".to_string(),
    )]));
    Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: true,
        secrets: Arc::new(secrets),
    })
    .unwrap()
}

fn spec(id: &str, kind: PluginKind, config: &str) -> PluginSpec {
    PluginSpec {
        id: id.parse().unwrap(),
        kind,
        source_name: format!("test:{id}"),
        grants: Grants::default(),
        limits: Limits::default(),
        config_json: config.to_string(),
    }
}

fn builtin(name: &str) -> &'static [u8] {
    rollcage_builtins::get(name).unwrap().wasm
}

fn misbehave(rt: &Runtime, id: &str, mode: &str, arg: &str, grants: Grants) -> Arc<LoadedPlugin> {
    let mut s = spec(
        id,
        PluginKind::HealthCheck,
        &format!(r#"{{"mode":"{mode}","arg":"{arg}"}}"#),
    );
    s.grants = grants;
    s.limits = Limits {
        memory_mb: 16,
        timeout_ms: 500,
    };
    rt.load(s, &rollcage_tests::fixture_bytes("misbehave"))
        .unwrap()
}

async fn check(plugin: &Arc<LoadedPlugin>) -> Result<Measurement, PluginError> {
    plugin
        .health_check()
        .unwrap()
        .check(&CheckTarget::default())
        .await
}

/// A one-route HTTP server on loopback answering `status` with `body`.
async fn serve(status: u16, body: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

fn grants(hosts: &[&str], secrets: &[&str]) -> Grants {
    Grants {
        allow_hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn a_notifier_is_called_through_its_trait() {
    let rt = runtime();
    let console = rt
        .load(
            spec("console", PluginKind::Notifier, "{}"),
            builtin("console"),
        )
        .unwrap();
    let event = Event {
        kind: EventKind::Succeeded,
        run_id: "r1".into(),
        pipeline: "api".into(),
        environment: Some("production".into()),
        release: Release::new("1.1.0"),
        message: "promoted".into(),
        fields: vec![],
        url: None,
        timestamp_ms: 0,
    };
    console.notifier().unwrap().notify(&event).await.unwrap();
    assert!(console.strategy().is_none());

    let picky = rt
        .load(
            spec("picky", PluginKind::Notifier, r#"{"colour":"red"}"#),
            builtin("console"),
        )
        .unwrap();
    let err = picky.notifier().unwrap().notify(&event).await.unwrap_err();
    match err {
        PluginError::Failed { plugin, message } => {
            assert_eq!(plugin.as_str(), "picky");
            assert!(message.contains("unknown field `colour`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_strategy_is_called_through_its_trait() {
    let rt = runtime();
    let rolling = rt
        .load(
            spec("rolling", PluginKind::Strategy, "{}"),
            builtin("rolling"),
        )
        .unwrap()
        .strategy()
        .unwrap();
    rolling.validate(r#"{"max_surge": 1}"#).await.unwrap();
    let err = rolling
        .validate(r#"{"max_surge": 0, "max_unavailable": 0}"#)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `rolling` rejected its parameters: max_surge and max_unavailable cannot both be 0"
    );
    let state = DeployState {
        environment: "production".into(),
        release: Release::new("2.0.0"),
        stable: Some(Release::new("1.0.0")),
        replicas: 2,
        params: r#"{"max_surge": 1}"#.into(),
        ..DeployState::default()
    };
    let action = rolling.decide(&state).await.unwrap();
    assert_eq!(
        action,
        Action::ApplySlot(SlotSpec {
            name: "2.0.0".into(),
            release: Release::new("2.0.0"),
            replicas: 1
        })
    );
    let plan = rolling.rollback(&state).await.unwrap();
    assert_eq!(
        plan.last(),
        Some(&Action::RemoveSlot {
            slot: "2.0.0".into()
        })
    );
}

#[tokio::test]
async fn a_health_check_is_called_through_its_trait() {
    let rt = runtime();
    let healthy = serve(200, "ok").await;
    let sick = serve(503, "down").await;
    let mut s = spec("http", PluginKind::HealthCheck, r#"{"body_contains":"ok"}"#);
    s.grants = grants(&["127.0.0.1:*"], &[]);
    let http = rt.load(s, builtin("http")).unwrap().health_check().unwrap();
    let target = |endpoints: Vec<String>| CheckTarget {
        environment: "staging".into(),
        slot: "canary".into(),
        release: "1.1.0".into(),
        endpoints,
    };
    let m = http
        .check(&target(vec![healthy.to_string()]))
        .await
        .unwrap();
    assert_eq!(m.verdict, Verdict::Pass, "{m:?}");
    assert_eq!(m.detail, "1 of 1 endpoints healthy");

    let m = http
        .check(&target(vec![healthy.to_string(), sick.to_string()]))
        .await
        .unwrap();
    assert_eq!(m.verdict, Verdict::Fail);
    assert_eq!(m.value, Some(0.5));
    assert!(
        m.detail
            .contains(&format!("http://{sick}/healthz: status 503 not in [200]")),
        "{}",
        m.detail
    );

    let m = http.check(&target(vec![])).await.unwrap();
    assert_eq!(m.verdict, Verdict::Inconclusive);
}

#[tokio::test]
async fn an_environment_provider_is_called_through_its_trait() {
    let rt = runtime();
    let provider = rt
        .load(
            spec(
                "fake-platform",
                PluginKind::EnvironmentProvider,
                r#"{"slot":"stable","release":"1.0.0","endpoint":"127.0.0.1:1"}"#,
            ),
            &rollcage_tests::fixture_bytes("static-provider"),
        )
        .unwrap()
        .environment_provider()
        .unwrap();
    let target = Target {
        environment: "staging".into(),
        service: "api".into(),
        service_spec: "{}".into(),
    };
    provider.prepare(&target).await.unwrap();
    let status = provider.status(&target).await.unwrap();
    assert_eq!(status.slot("stable").unwrap().ready, 1);
    let bad = provider
        .route(
            &target,
            &[RouteWeight {
                slot: "stable".into(),
                weight: 90,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(
        bad.to_string(),
        "plugin `fake-platform` failed: weights sum to 90"
    );
    let job = Job {
        name: "migrate".into(),
        command: vec!["true".into()],
        env: vec![],
        timeout_ms: 1000,
    };
    let refused = provider.run_job(&target, &job).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "plugin `fake-platform` failed: this provider cannot run jobs (job `migrate`)"
    );
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_its_time_limit() {
    let rt = runtime();
    let p = misbehave(&rt, "looper", "loop", "", Grants::default());
    let err = check(&p).await.unwrap_err();
    assert_eq!(
        err,
        PluginError::Timeout {
            plugin: "looper".parse().unwrap(),
            limit_ms: 500
        }
    );
    // The host goes on: the same runtime serves the next call.
    let ok = misbehave(&rt, "fine", "ok", "", Grants::default());
    assert_eq!(check(&ok).await.unwrap().detail, "fine");
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_at_its_memory_limit() {
    let rt = runtime();
    let p = misbehave(&rt, "hoarder", "memory", "", Grants::default());
    let err = check(&p).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `hoarder` was stopped at its memory limit of 16 MiB"
    );
    let ok = misbehave(&rt, "fine", "ok", "", Grants::default());
    assert!(check(&ok).await.is_ok());
}

#[tokio::test]
async fn a_panic_is_a_crash_with_the_panic_message() {
    let rt = runtime();
    let p = misbehave(&rt, "panicky", "panic", "", Grants::default());
    match check(&p).await.unwrap_err() {
        PluginError::Trap { plugin, message } => {
            assert_eq!(plugin.as_str(), "panicky");
            assert!(message.starts_with("wasm trap: "), "{message}");
            assert!(
                message.contains("the fixture panics on purpose"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reading_a_file_is_denied() {
    let rt = runtime();
    let p = misbehave(&rt, "snoop", "file", "/etc/passwd", Grants::default());
    match check(&p).await.unwrap_err() {
        PluginError::Denied {
            plugin,
            capability,
            detail,
        } => {
            assert_eq!(plugin.as_str(), "snoop");
            assert_eq!(capability, "filesystem");
            assert!(
                detail.starts_with("file access (plugins are granted no directories)"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn plugins_see_an_empty_environment() {
    let rt = runtime();
    let p = misbehave(&rt, "nosy", "env", "HOME", Grants::default());
    let err = check(&p).await.unwrap_err();
    // The plugin's own error, kept retryable (language runtimes read the
    // environment on every start), with a hint of why it was empty.
    assert!(matches!(err, PluginError::Failed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin `nosy` failed: HOME: environment variable not found (plugins see no environment variables; use config or secrets)"
    );
}

#[tokio::test]
async fn http_to_a_host_not_allowed_is_denied() {
    let rt = runtime();
    let server = serve(200, "ok").await;
    let url = format!("http://{server}/");
    // Granted another port of the same host only.
    let p = misbehave(&rt, "wanderer", "http", &url, grants(&["127.0.0.1:1"], &[]));
    let err = check(&p).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin `wanderer` was denied capability `http`: request to 127.0.0.1:{}, which is not in allow_hosts; the plugin said: http: request to `{server}` denied: the host is not in this plugin's allow_hosts",
            server.port()
        )
    );
    // Granted: the same request goes through.
    let p = misbehave(
        &rt,
        "granted",
        "http",
        &url,
        grants(&[&format!("127.0.0.1:{}", server.port())], &[]),
    );
    assert_eq!(check(&p).await.unwrap().detail, "200");
}

#[tokio::test]
async fn the_metadata_address_is_denied_even_under_a_wildcard() {
    let rt = runtime();
    let p = misbehave(
        &rt,
        "metadata",
        "http",
        "http://169.254.169.254/latest/meta-data/",
        grants(&["*:*"], &[]),
    );
    let err = check(&p).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `metadata` was denied capability `http`: request to 169.254.169.254:80, which resolves to 169.254.169.254 in a denied network; the plugin said: http: request to `169.254.169.254` denied: its address is in a denied network"
    );
}

#[tokio::test]
async fn a_secret_not_granted_is_denied_and_a_granted_one_is_read() {
    let rt = runtime();
    let p = misbehave(&rt, "thief", "secret", "TOKEN", Grants::default());
    let err = check(&p).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `thief` was denied capability `secrets`: secret `TOKEN` is not granted; the plugin said: secret: secret `TOKEN` is not granted to plugin `thief`"
    );
    let p = misbehave(&rt, "owner", "secret", "TOKEN", grants(&[], &["TOKEN"]));
    assert_eq!(check(&p).await.unwrap().detail, "s3cret");
    let p = misbehave(&rt, "unset", "secret", "OTHER", grants(&[], &["OTHER"]));
    assert_eq!(
        check(&p).await.unwrap_err().to_string(),
        "plugin `unset` failed: secret: secret `OTHER` is granted to plugin `unset` but has no value"
    );
}

#[tokio::test]
async fn opening_a_socket_is_denied() {
    let rt = runtime();
    let server = serve(200, "ok").await;
    let p = misbehave(
        &rt,
        "raw",
        "socket",
        &server.to_string(),
        grants(&["*:*"], &[]),
    );
    match check(&p).await.unwrap_err() {
        PluginError::Denied {
            plugin,
            capability,
            detail,
        } => {
            assert_eq!(plugin.as_str(), "raw");
            assert_eq!(capability, "sockets");
            // Connecting binds first: the first use refused is the bind.
            assert!(
                detail.starts_with("a socket (TcpBind 0.0.0.0:0); plugins get no sockets, use HTTP with allow_hosts"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn plugin_output_does_not_break_the_call() {
    let rt = runtime();
    let p = misbehave(&rt, "chatty", "log", "", Grants::default());
    assert_eq!(check(&p).await.unwrap().detail, "logged");
}

#[tokio::test]
async fn the_on_demand_allocator_runs_plugins_too() {
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: false,
        secrets: Arc::new(MapSecrets::default()),
    })
    .unwrap();
    assert_eq!(rt.allocator(), rollcage_runtime::AllocatorKind::OnDemand);
    let p = misbehave(&rt, "hoarder", "memory", "", Grants::default());
    assert!(matches!(
        check(&p).await,
        Err(PluginError::MemoryLimit { .. })
    ));
    let p = misbehave(&rt, "fine", "ok", "", Grants::default());
    assert!(check(&p).await.is_ok());
}

#[test]
fn the_second_load_of_a_component_does_not_compile_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = || RuntimeOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        pooling: true,
        secrets: Arc::new(MapSecrets::default()),
    };
    let wasm = builtin("console");
    let first = Runtime::new(options()).unwrap();
    first
        .load(spec("a", PluginKind::Notifier, "{}"), wasm)
        .unwrap();
    first
        .load(spec("b", PluginKind::Notifier, "{}"), wasm)
        .unwrap();
    let stats = first.cache().stats();
    assert_eq!(
        (stats.compiled, stats.disk_hits, stats.memory_hits),
        (1, 0, 1)
    );

    // A new host process: the compiled component comes from disk.
    let second = Runtime::new(options()).unwrap();
    second
        .load(spec("a", PluginKind::Notifier, "{}"), wasm)
        .unwrap();
    let stats = second.cache().stats();
    assert_eq!((stats.compiled, stats.disk_hits), (0, 1));
}

fn load_err(wasm: &[u8], kind: PluginKind) -> LoadError {
    match runtime().load(spec("suspect", kind, "{}"), wasm) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    }
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    assert_eq!(
        load_err(b"#!/bin/sh\necho hi\n", PluginKind::Notifier).to_string(),
        "plugin `suspect` (test:suspect): not a WebAssembly file"
    );
    let module = wat::parse_str("(module)").unwrap();
    assert!(
        load_err(&module, PluginKind::Notifier)
            .to_string()
            .starts_with(
                "plugin `suspect` (test:suspect): a core WebAssembly module, not a component"
            )
    );
}

#[test]
fn a_component_of_another_world_is_refused() {
    let err = load_err(builtin("console"), PluginKind::Strategy);
    assert_eq!(
        err.to_string(),
        "plugin `suspect` (test:suspect) does not fit world `strategy`: it does not export `rollcage:plugin/strategy-api@0.1.0` (it exports: rollcage:plugin/notifier-api@0.1.0)"
    );
}

#[test]
fn a_component_importing_what_the_host_lacks_is_refused() {
    let component = wat::parse_str(
        r#"(component
            (import "acme:evil/backdoor" (instance (export "open" (func))))
            (instance (export "rollcage:plugin/notifier-api@0.1.0")))"#,
    )
    .unwrap();
    let err = load_err(&component, PluginKind::Notifier);
    assert!(
        matches!(&err, LoadError::UnknownImport { import, .. } if import == "acme:evil/backdoor"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("plugin `suspect` (test:suspect) imports `acme:evil/backdoor`, which the host does not provide"),
        "{err}"
    );
}
