//! The `prometheus` health check against a real Prometheus server (Debian's
//! `prometheus`, started here on loopback) scraping a real metrics endpoint.
//! Without the binary the test says so and skips, except in CI (`CI=true`),
//! where a missing tool is a failure.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcage_core::*;
use rollcage_runtime::{Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions};
use rollcage_tests::stub::Stub;
use serde_json::json;

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_binary() -> Option<String> {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match found {
        Ok(s) if s.success() => Some("prometheus".into()),
        _ => None,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(bin: &str, target: std::net::SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Prometheus {
        child,
        port,
        _dir: dir,
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, or `None` while the server is not up.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    sock.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    sock.read_to_string(&mut out).await.ok()?;
    Some(out)
}

/// Wait until Prometheus has scraped the target at least once.
async fn wait_for_data(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus on port {port} never had data"
        );
        let ready = http_get(port, "/api/v1/query?query=demo_error_ratio")
            .await
            .is_some_and(|body| body.contains("\"slot\":\"canary\""));
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn queries_a_real_prometheus() {
    let Some(bin) = prometheus_binary() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("prometheus is not installed; .ci/run installs it with apt-get");
        }
        eprintln!(
            "SKIPPED queries_a_real_prometheus: no `prometheus` binary (apt-get install prometheus)"
        );
        return;
    };
    let metrics = Stub::start(|_| {
        (
            200,
            vec![("content-type".into(), "text/plain; version=0.0.4".into())],
            "# TYPE demo_error_ratio gauge\ndemo_error_ratio{slot=\"canary\"} 0.01\ndemo_error_ratio{slot=\"bad\"} 0.3\ndemo_error_ratio{slot=\"nan\"} NaN\n".into(),
        )
    })
    .await;
    let prom = start_prometheus(&bin, metrics.addr);
    wait_for_data(prom.port).await;

    let rt = Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: true,
        secrets: Arc::new(MapSecrets::default()),
    })
    .unwrap();
    let check = |query: &str, pass_if: &str| {
        let spec = PluginSpec {
            id: "error-rate".parse().unwrap(),
            kind: PluginKind::HealthCheck,
            source_name: "builtin:prometheus".into(),
            grants: Grants {
                allow_hosts: vec![format!("127.0.0.1:{}", prom.port).parse().unwrap()],
                secrets: vec![],
            },
            limits: Limits::default(),
            config_json: json!({"url": format!("http://127.0.0.1:{}", prom.port), "query": query, "pass_if": pass_if}).to_string(),
        };
        rt.load(spec, rollcage_builtins::get("prometheus").unwrap().wasm)
            .unwrap()
            .health_check()
            .unwrap()
    };
    let target = |slot: &str| CheckTarget {
        environment: "production".into(),
        slot: slot.into(),
        release: "1.2.0".into(),
        endpoints: vec![],
    };
    let ratio = check(r#"demo_error_ratio{slot="{slot}"}"#, "< 0.05");

    let pass = ratio.check(&target("canary")).await.unwrap();
    assert_eq!(
        (pass.verdict, pass.value),
        (Verdict::Pass, Some(0.01)),
        "{pass:?}"
    );

    let fail = ratio.check(&target("bad")).await.unwrap();
    assert_eq!(
        (fail.verdict, fail.value),
        (Verdict::Fail, Some(0.3)),
        "{fail:?}"
    );
    assert!(fail.detail.contains("fails `< 0.05`"), "{}", fail.detail);

    let empty = ratio.check(&target("absent")).await.unwrap();
    assert_eq!(empty.verdict, Verdict::Inconclusive);
    let nan = ratio.check(&target("nan")).await.unwrap();
    assert_eq!(nan.verdict, Verdict::Inconclusive);

    let between = check("sum(demo_error_ratio{slot!=\"nan\"})", "between 0.3 0.4");
    assert_eq!(
        between.check(&target("x")).await.unwrap().verdict,
        Verdict::Pass
    );

    // A broken query is an error from Prometheus, not a failed check.
    let broken = check("sum(demo_error_ratio", "< 1");
    let err = broken.check(&target("x")).await.unwrap_err();
    assert!(
        err.to_string().starts_with(
            "plugin `error-rate` failed: Prometheus refused `sum(demo_error_ratio`: bad_data:"
        ),
        "{err}"
    );
}
