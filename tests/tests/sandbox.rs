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
        ..Limits::default()
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
    http_server(move |_request| (status, body.to_string())).await
}

/// A one-route HTTP server on loopback answering with the request it got.
async fn echo() -> std::net::SocketAddr {
    http_server(|request| (200, request)).await
}

/// A loopback HTTP server answering each request with `answer(request)`.
async fn http_server(
    answer: impl Fn(String) -> (u16, String) + Copy + Send + 'static,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let (status, body) = answer(String::from_utf8_lossy(&buf[..n]).into_owned());
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
        ..Grants::default()
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
        exposure: None,
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
        "plugin `metadata` was denied capability `http`: request to 169.254.169.254:80: 169.254.169.254 is in a denied network (link-local, 169.254.0.0/16, which holds cloud metadata), which no grant opens; the plugin said: http: request to `169.254.169.254` denied: its address is in a denied network"
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
        "plugin `suspect` (test:suspect) does not fit world `strategy`: it does not export `rollcage:plugin/strategy-api@0.2.0` (it exports: rollcage:plugin/notifier-api@0.2.0)"
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

/// A health-check component that instantiates `memories` core modules of
/// one memory of `pages` pages each, and `tables` modules of one table of
/// `elements` elements: a bomb that goes off when it is instantiated,
/// before any code runs.
fn bomb(memories: usize, pages: u32, tables: usize, elements: u32) -> Vec<u8> {
    let mut parts = String::new();
    for _ in 0..memories {
        parts.push_str(&format!(
            "(core module $mem{n} (memory {pages})) (core instance (instantiate $mem{n}))\n",
            n = parts.len()
        ));
    }
    for _ in 0..tables {
        parts.push_str(&format!(
            "(core module $tab{n} (table {elements} funcref)) (core instance (instantiate $tab{n}))\n",
            n = parts.len()
        ));
    }
    health_check_component(&parts, "", "unreachable")
}

/// A health check that calls `wasi:cli/exit.exit-with-code(code)`.
fn exiter(code: u8) -> Vec<u8> {
    health_check_component(
        r#"(import "wasi:cli/exit@0.2.12" (instance $exit (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit_with_code (canon lower (func $exit "exit-with-code")))
  (core module $imports (func (export "exit-with-code") (import "" "exit") (param i32)))
  (core instance $shim (instantiate $imports (with "" (instance (export "exit" (func $exit_with_code))))))"#,
        r#"(import "wasi" "exit-with-code" (func $exit (param i32)))"#,
        &format!("i32.const {code} call $exit unreachable"),
    )
}

/// A component that fits the health-check world: `imports` at the
/// component level, `module_items` in its core module, `body` as `check`.
fn health_check_component(imports: &str, module_items: &str, body: &str) -> Vec<u8> {
    let record = r#"(record (field "environment" string) (field "slot" string) (field "release" string) (field "endpoints" (list string)))"#;
    let verdict = r#"(enum "pass" "fail" "inconclusive")"#;
    wat::parse_str(format!(
        r#"(component
  {imports}
  (core module $m
    {module_items}
    (memory (export "mem") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
    (func (export "check") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) {body}))
  (core instance $i (instantiate $m {with}))
  (type $target {record})
  (type $verdict {verdict})
  (type $measurement (record (field "verdict" $verdict) (field "value" (option f64)) (field "detail" string)))
  (func $check (param "target" $target) (result (result $measurement (error string)))
    (canon lift (core func $i "check") (memory (core memory $i "mem")) (realloc (core func $i "realloc"))))
  (component $api
    (type $t {record})
    (import "import-type-check-target" (type $ti (eq $t)))
    (type $v {verdict})
    (import "import-type-verdict" (type $vi (eq $v)))
    (type $mt (record (field "verdict" $vi) (field "value" (option f64)) (field "detail" string)))
    (import "import-type-measurement" (type $mi (eq $mt)))
    (import "import-func-check" (func $f (param "target" $ti) (result (result $mi (error string)))))
    (export $te "check-target" (type $ti))
    (export $ve "verdict" (type $vi))
    (type $mt2 (record (field "verdict" $ve) (field "value" (option f64)) (field "detail" string)))
    (export $me "measurement" (type $mi) (type (eq $mt2)))
    (export "check" (func $f) (func (param "target" $te) (result (result $me (error string))))))
  (instance $inst (instantiate $api
    (with "import-type-check-target" (type $target))
    (with "import-type-verdict" (type $verdict))
    (with "import-type-measurement" (type $measurement))
    (with "import-func-check" (func $check))))
  (export "rollcage:plugin/health-check-api@0.1.0" (instance $inst)))"#,
        with = if !imports.contains("$shim") {
            ""
        } else {
            r#"(with "wasi" (instance $shim))"#
        },
    ))
    .unwrap()
}

fn load_bomb(rt: &Runtime, id: &str, wasm: &[u8], limits: Limits) -> Arc<LoadedPlugin> {
    let mut s = spec(id, PluginKind::HealthCheck, "{}");
    s.limits = limits;
    rt.load(s, wasm).unwrap()
}

#[tokio::test]
async fn memories_count_together_against_the_memory_limit() {
    // 15 memories of 31 MiB under a 32 MiB limit (and the plugin's own one
    // page): 465 MiB if each were checked alone. Allowed 16 memories, the
    // total is what stops it.
    let wasm = bomb(15, 496, 0, 0);
    for pooling in [true, false] {
        let rt = Runtime::new(RuntimeOptions {
            cache_dir: None,
            pooling,
            secrets: Arc::new(MapSecrets::default()),
        })
        .unwrap();
        let limits = Limits {
            memory_mb: 32,
            memories: 16,
            ..Limits::default()
        };
        let p = load_bomb(&rt, "hydra", &wasm, limits);
        assert_eq!(
            check(&p).await.unwrap_err().to_string(),
            "plugin `hydra` was stopped at its memory limit of 32 MiB",
            "pooling: {pooling}"
        );
        // Small memories, many of them: the default count stops them.
        let p = load_bomb(&rt, "hydra", &bomb(15, 1, 0, 0), Limits::default());
        assert_eq!(
            check(&p).await.unwrap_err().to_string(),
            "plugin `hydra` hit its limit limits.memories = 4: the component creates more than 4 memories",
            "pooling: {pooling}"
        );
        // The runtime goes on.
        let ok = misbehave(&rt, "fine", "ok", "", Grants::default());
        assert!(check(&ok).await.is_ok());
    }
}

#[tokio::test]
async fn tables_count_against_the_memory_limit_and_their_own_cap() {
    let rt = runtime();
    let p = load_bomb(&rt, "tables", &bomb(1, 1, 40, 10), Limits::default());
    assert_eq!(
        check(&p).await.unwrap_err().to_string(),
        "plugin `tables` hit its limit limits.tables = 16: the component creates more than 16 tables"
    );
    // One table of 8 million elements: 64 MiB of host memory at 8 bytes
    // each, over a 16 MiB limit (the on-demand allocator sizes tables as
    // asked; the pool has a fixed size per table).
    let on_demand = Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: false,
        secrets: Arc::new(MapSecrets::default()),
    })
    .unwrap();
    let limits = Limits {
        memory_mb: 16,
        ..Limits::default()
    };
    let p = load_bomb(&on_demand, "wide", &bomb(1, 1, 1, 8_000_000), limits);
    assert_eq!(
        check(&p).await.unwrap_err().to_string(),
        "plugin `wide` was stopped at its memory limit of 16 MiB"
    );
}

#[tokio::test]
async fn an_exit_code_is_reported() {
    let rt = runtime();
    let p = load_bomb(&rt, "quitter", &exiter(3), Limits::default());
    assert_eq!(
        check(&p).await.unwrap_err().to_string(),
        "plugin `quitter` crashed: exited with code 3"
    );
    // Rust's `std::process::exit(3)` goes through WASI 0.2's `exit`, which
    // carries success or failure only: it arrives as code 1.
    let p = misbehave(&rt, "quitter", "exit", "", Grants::default());
    assert_eq!(
        check(&p).await.unwrap_err().to_string(),
        "plugin `quitter` crashed: exited with code 1"
    );
}

#[tokio::test]
async fn every_spelling_of_the_metadata_address_is_denied() {
    let rt = runtime();
    for host in [
        "[::ffff:169.254.169.254]",
        "[::169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::]",
    ] {
        let url = format!("http://{host}/latest/meta-data/");
        let p = misbehave(&rt, "metadata", "http", &url, grants(&["*:*"], &[]));
        let err = check(&p).await.unwrap_err().to_string();
        assert!(
            err.starts_with("plugin `metadata` was denied capability `http`")
                && err.contains("169.254.169.254 is in a denied network (link-local"),
            "{host}: {err}"
        );
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_needs_the_address_granted() {
    let rt = runtime();
    let server = serve(200, "ok").await;
    let url = format!("http://localhost:{}/", server.port());
    let p = misbehave(&rt, "rebind", "http", &url, grants(&["localhost:*"], &[]));
    let err = check(&p).await.unwrap_err().to_string();
    // `localhost` may resolve to 127.0.0.1 or ::1 first; both are loopback.
    assert!(
        err.contains(&format!("request to localhost:{}: ", server.port()))
            && err.contains("is in a denied network (loopback"),
        "{err}"
    );
    // Granted the network: reached.
    let mut g = grants(&["localhost:*"], &[]);
    g.allow_private = vec!["127.0.0.0/8".parse().unwrap()];
    let p = misbehave(&rt, "granted", "http", &url, g);
    assert_eq!(check(&p).await.unwrap().detail, "200");
}

#[tokio::test]
async fn a_name_lookup_through_sockets_is_a_denial() {
    let rt = runtime();
    let p = misbehave(
        &rt,
        "resolver",
        "resolve",
        "example.com:80",
        grants(&["*:*"], &[]),
    );
    match check(&p).await.unwrap_err() {
        PluginError::Denied {
            capability, detail, ..
        } => {
            assert_eq!(capability, "sockets");
            assert!(
                detail.starts_with("a name lookup of `example.com`"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn url_credentials_become_an_authorization_header_never_the_host() {
    let rt = runtime();
    let server = echo().await;
    let url = format!("http://deployer:p%40ss@127.0.0.1:{}/x", server.port());
    let p = misbehave(
        &rt,
        "basic",
        "http-body",
        &url,
        grants(&["127.0.0.1:*"], &[]),
    );
    let request = check(&p).await.unwrap().detail.to_lowercase();
    // base64("deployer:p@ss")
    assert!(
        request.contains("authorization: basic zgvwbg95zxi6cebzcw=="),
        "{request}"
    );
    assert!(
        request.contains(&format!("host: 127.0.0.1:{}\r\n", server.port())),
        "{request}"
    );
    assert!(!request.contains("deployer"), "{request}");
}

#[test]
fn strategies_are_granted_nothing() {
    let rt = runtime();
    let mut s = spec("steps", PluginKind::Strategy, "{}");
    s.grants = grants(&["api.example.com"], &[]);
    let err = rt.load(s, builtin("canary")).err().unwrap();
    assert_eq!(
        err.to_string(),
        "plugin `steps` (test:steps) is a strategy and strategies are granted nothing: remove its allow_hosts, allow_private, secrets and tls_ca"
    );
    // Built against the strategy world, the builtins import no HTTP at all.
    for name in ["canary", "rolling", "blue-green"] {
        let p = rt
            .load(spec(name, PluginKind::Strategy, "{}"), builtin(name))
            .unwrap();
        let imports = &p.info().imports;
        assert!(
            !imports.iter().any(|i| i.starts_with("wasi:http/")),
            "{name}: {imports:?}"
        );
    }
}

#[test]
fn a_changed_cache_entry_is_compiled_again_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let options = || RuntimeOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        pooling: true,
        secrets: Arc::new(MapSecrets::default()),
    };
    let wasm = builtin("console");
    Runtime::new(options())
        .unwrap()
        .load(spec("a", PluginKind::Notifier, "{}"), wasm)
        .unwrap();
    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();

    let second = Runtime::new(options()).unwrap();
    second
        .load(spec("a", PluginKind::Notifier, "{}"), wasm)
        .unwrap();
    let stats = second.cache().stats();
    assert_eq!((stats.compiled, stats.disk_hits), (1, 0));
    assert_eq!(second.cache().rejected(), 1);
    // The entry written again carries a valid tag.
    let third = Runtime::new(options()).unwrap();
    third
        .load(spec("a", PluginKind::Notifier, "{}"), wasm)
        .unwrap();
    assert_eq!(third.cache().stats().disk_hits, 1);
}
