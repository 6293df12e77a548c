//! The HTTP API end to end: the real `rollcage serve` (engine, local
//! runtime running real processes of the demo service, SQLite) over real
//! HTTP; the CLI's `--server` mode as its client; a graceful stop in the
//! middle of a run and a restart that resumes it; the live event stream
//! resumed with `Last-Event-ID`; `/metrics` checked with `promtool` and
//! scraped by a real Prometheus evaluating the workflow's alert rules.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rollcage_tests::prometheus::{Prometheus, promtool, tool};
use serde_json::Value;

mod common;
use common::{Server, http, json, rollcage, text, token};

struct Tokens {
    alice: String,
    bob: String,
    viewer: String,
    ci: String,
}

/// staging (no gate) and production (approval by someone other than the
/// starter), both canaries of the demo service checked over HTTP.
fn config(dir: &Path, cache: &Path) -> (PathBuf, Tokens) {
    let (alice, a) = token("alice", "admin", &[], cache);
    let (bob, b) = token("bob", "approver", &["production"], cache);
    let (viewer, v) = token("viewer", "viewer", &[], cache);
    let (ci, c) = token("ci", "deployer", &["staging"], cache);
    let path = dir.join("rollcage.toml");
    let env = |name: &str, gate: &str| {
        format!(
            r#"
[environments.{name}]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
analysis = {{ checks = ["root"], interval = "500ms", count = 1 }}
replicas = 1
progress_deadline = "30s"
{gate}
"#
        )
    };
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

{a}
{b}
{v}
{c}

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.root]
plugin = "probe"
config = {{ url = "http://{{endpoint}}/", expect_status = [200] }}
{staging}
{production}
[pipelines.web]
stages = ["staging", "production"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}" }} }}
"#,
            staging = env("staging", ""),
            production = env(
                "production",
                "approval = \"manual\"\nrequire_different_approver = true"
            ),
        ),
    )
    .unwrap();
    (
        path,
        Tokens {
            alice,
            bob,
            viewer,
            ci,
        },
    )
}

/// The id of the first run with `status`, waiting up to 60 s.
fn wait_for_status(port: u16, token: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http(
            port,
            "GET",
            &format!("/v1/runs?status={status}"),
            Some(token),
            &[],
            None,
        );
        if let Some(id) = json(&body)["runs"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no run reached {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_server_runs_deployments_for_its_clients_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (cfg, t) = config(dir.path(), cache.path());
    assert!(!std::fs::read_to_string(&cfg).unwrap().contains(&t.alice));
    let mut server = Server::start(&cfg, cache.path(), "127.0.0.1:0");
    assert!(
        server.banner.contains("(0 unfinished runs resumed)"),
        "{}",
        server.banner
    );
    let (url, port) = (server.url(), server.port);

    // Health needs no token; the API does, and checks roles.
    assert_eq!(http(port, "GET", "/readyz", None, &[], None).0, 200);
    let (status, body) = http(port, "GET", "/v1/runs", None, &[], None);
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"]["code"], "unauthorized");
    let start = r#"{"pipeline": "web", "release": "1.0.0"}"#;
    let (status, body) = http(port, "POST", "/v1/runs", Some(&t.viewer), &[], Some(start));
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = http(
        port,
        "POST",
        "/v1/runs",
        Some(&t.alice),
        &[],
        Some("{\"pipeline\": "),
    );
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let (status, body) = http(
        port,
        "POST",
        "/v1/runs",
        Some(&t.alice),
        &[],
        Some(r#"{"pipeline": "web", "release": "one"}"#),
    );
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (422, Some("invalid_release"))
    );

    // The CLI as a client: ci deploys to staging, and only there.
    let cli = |args: &[&str], token: &str| {
        let mut all = args.to_vec();
        all.extend(["--server", &url, "--token", token]);
        rollcage(&all, cache.path())
    };
    let out = cli(&["run", "web", "--release", "1.0.0"], &t.ci);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("may not act in environment `production`"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        &["run", "web", "--release", "1.0.0", "--stage", "staging"],
        &t.ci,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("web 1.0.0 succeeded in every stage (staging)"),
        "{}",
        text(&out.stdout)
    );

    // alice starts 1.1.0 through both stages and follows it; production
    // waits for an approval.
    let follower = common::command(cache.path())
        .args([
            "run",
            "web",
            "--release",
            "1.1.0",
            "--server",
            &url,
            "--token",
            &t.alice,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_for_status(port, &t.viewer, "awaiting_approval");
    let out = cli(&["runs", "approve", &id], &t.alice);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("needs an approver other than the one who started the run"),
        "{}",
        text(&out.stderr)
    );

    // Stop the server mid-run: it stops promptly and cleanly...
    assert_eq!(server.stop(), Some(0));
    // ... and the next one, on the same address, resumes the run; the
    // follower reconnects and goes on from the last entry it printed.
    let server = Server::start(&cfg, cache.path(), &format!("127.0.0.1:{port}"));
    assert!(
        server.banner.contains("(1 unfinished runs resumed)"),
        "{}",
        server.banner
    );
    let port = server.port;
    let url = server.url();
    let id2 = wait_for_status(port, &t.viewer, "awaiting_approval");
    assert_eq!(id2, id);
    let out = rollcage(
        &["runs", "approve", &id, "--server", &url, "--token", &t.bob],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = follower.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("web 1.1.0 succeeded in every stage (staging, production)"),
        "{stdout}"
    );
    // Nothing printed twice across the reconnection.
    assert_eq!(
        stdout.matches("[production] started").count(),
        1,
        "{stdout}"
    );
    assert_eq!(stdout.matches("[staging] started").count(), 1, "{stdout}");

    // The live stream, resumed after the third entry: from the fourth to
    // the end, in order, then `end`.
    let (status, body) = http(
        port,
        "GET",
        &format!("/v1/runs/{id}/events"),
        Some(&t.viewer),
        &[("Accept", "text/event-stream"), ("Last-Event-ID", "3")],
        None,
    );
    assert_eq!(status, 200);
    let ids: Vec<u64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&4));
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert!(
        body.contains("event: end\ndata: {\"reason\":null,\"status\":\"succeeded\"}"),
        "{body}"
    );

    // Detail, list, show and the audit trail.
    let (_, body) = http(
        port,
        "GET",
        &format!("/v1/runs/{id}"),
        Some(&t.viewer),
        &[],
        None,
    );
    let detail = json(&body);
    assert_eq!(detail["stages"][1]["decisions"][0]["by"], "bob");
    // The components the run used, by digest: the builtin strategy's is
    // the SHA-256 of the bytes in this binary.
    let canary = rollcage_builtins::get("canary").unwrap().wasm;
    assert_eq!(
        detail["plugins"]["canary"],
        rollcage_registry::digest_of(canary).to_string(),
        "{detail:#}"
    );
    assert!(
        detail["stages"][0]["analyses"][0]["measurements"][0]["verdict"] == "pass",
        "{detail:#}"
    );
    let out = rollcage(
        &["runs", "list", "--server", &url, "--token", &t.viewer],
        cache.path(),
    );
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "{}",
        text(&out.stdout)
    );
    let out = rollcage(
        &["runs", "show", &id, "--server", &url, "--token", &t.viewer],
        cache.path(),
    );
    assert!(
        text(&out.stdout).contains("succeeded in every stage"),
        "{}",
        text(&out.stdout)
    );
    let (_, body) = http(
        port,
        "GET",
        &format!("/v1/audit?run={id}"),
        Some(&t.viewer),
        &[],
        None,
    );
    let audit: Vec<(String, String)> = json(&body)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        audit,
        [
            ("bob".into(), "approve".into()),
            ("alice".into(), "start".into())
        ]
    );
    let (_, body) = http(
        port,
        "GET",
        "/v1/environments/production",
        Some(&t.viewer),
        &[],
        None,
    );
    let env = json(&body);
    assert_eq!(
        env["services"][0]["slots"][0]["release"], "1.1.0",
        "{env:#}"
    );
    assert_eq!(env["services"][0]["slots"][0]["weight"], 100, "{env:#}");
    let (_, body) = http(port, "GET", "/v1/plugins", Some(&t.viewer), &[], None);
    let plugins = json(&body);
    let local = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "local")
        .unwrap();
    assert!(
        local["calls"]["apply-slot"]["calls"].as_u64().unwrap() > 0,
        "{local:#}"
    );
}

#[test]
fn metrics_satisfy_the_workflow_alert_rules_in_a_real_prometheus() {
    let Some(promtool_bin) = tool("promtool", "metrics_satisfy_the_workflow_alert_rules") else {
        return;
    };
    let Some(prometheus_bin) = tool("prometheus", "metrics_satisfy_the_workflow_alert_rules")
    else {
        return;
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/prometheus");
    // The rules are valid, and fire on series shaped like ours.
    promtool(
        &promtool_bin,
        &["check", "rules", "alerts.yaml", "rollcage-rules.yaml"],
        None,
        &rules,
    );
    promtool(
        &promtool_bin,
        &["test", "rules", "alerts.test.yaml"],
        None,
        &rules,
    );

    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (cfg, t) = config(dir.path(), cache.path());
    let server = Server::start(&cfg, cache.path(), "127.0.0.1:0");
    let port = server.port;
    // Traffic, kept up while Prometheus scrapes, so that rates are not 0.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, viewer) = (stop.clone(), t.viewer.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                http(port, "GET", "/v1/runs", Some(&viewer), &[], None);
                http(port, "GET", "/v1/runs/nope", Some(&viewer), &[], None);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (_, metrics) = http(port, "GET", "/metrics", None, &[], None);
    promtool(
        &promtool_bin,
        &["check", "metrics"],
        Some(&metrics),
        dir.path(),
    );
    assert!(
        metrics
            .contains("http_requests_total{method=\"GET\",route=\"/v1/runs/{id}\",status=\"404\"}"),
        "{metrics}"
    );

    let prom = Prometheus::start(
        &prometheus_bin,
        &format!("127.0.0.1:{port}"),
        &[rules.join("alerts.yaml"), rules.join("rollcage-rules.yaml")],
    );
    // Every rule evaluates without error...
    prom.wait_for("/api/v1/rules", |v| {
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules.len() == 3
            && rules.iter().all(|r| {
                r["health"] == "ok"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
            })
    });
    // ... over series that exist: both sides of the error ratio, and the
    // recorded 0.9 quantile the latency alert reads.
    let q = |expr: &str| {
        format!(
            "/api/v1/query?query={}",
            expr.replace(' ', "%20")
                .replace('"', "%22")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('~', "%7E")
                .replace('=', "%3D")
                .replace('[', "%5B")
                .replace(']', "%5D")
        )
    };
    let has_data = |v: &Value| {
        v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    };
    prom.wait_for(&q("sum(rate(http_requests_total[5m]))"), has_data);
    prom.wait_for(
        &q("http_request_duration_seconds{quantile=\"0.9\",route=\"/v1/runs\"}"),
        has_data,
    );
    // Healthy traffic: neither alert is pending or firing.
    let (_, alerts) = (0, prom.get("/api/v1/alerts").unwrap());
    assert_eq!(
        json(&alerts)["data"]["alerts"],
        serde_json::json!([]),
        "{alerts}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
}
