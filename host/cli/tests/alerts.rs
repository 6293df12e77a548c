//! Alert-driven rollback end to end, with a real Prometheus and a real
//! Alertmanager (Debian's `prometheus` and `prometheus-alertmanager`,
//! started here on loopback in their own process groups and killed when
//! the test ends, a failing one too): Prometheus scrapes the local
//! runtime's router and evaluates the workflow's `HighErrorRate` and
//! `SlowResponses` rules (examples/prometheus/rollback-alerts.yaml, with
//! the test's short windows); the demo service's error rate rises after
//! its release was promoted; the alert fires, Alertmanager calls the
//! host's webhook with its token, and the host rolls the release back: a
//! release promoted a little earlier by a new run, a release still baking
//! in the run that promoted it.
//! Without the binaries the test prints SKIPPED, except in CI (`CI=true`),
//! where it fails.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rollcage_tests::alertmanager::{self, Alertmanager};
use rollcage_tests::prometheus::{Prometheus, free_port, tool};
use serde_json::Value;

mod common;
use common::{Server, http, json, token};

/// Poll `GET path` with `token` until `done` holds for the answer.
fn until(port: u16, path: &str, token: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (status, body) = http(port, "GET", path, Some(token), &[], None);
        if status == 200 {
            let v = json(&body);
            if done(&v) {
                return v;
            }
        }
        last = body;
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what} never came; last answer of {path}: {last}");
}

#[test]
fn a_firing_alert_after_promotion_rolls_the_release_back() {
    let test = "a_firing_alert_after_promotion_rolls_the_release_back";
    let Some(prometheus_bin) = tool("prometheus", test) else {
        return;
    };
    let Some(alertmanager_bin) = tool(alertmanager::BIN, test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (ci, ci_block) = token("ci", "deployer", &[], cache.path());
    let (am, am_block) = token(
        "alertmanager",
        "alerts",
        &["staging", "production"],
        cache.path(),
    );
    let metrics_port = free_port();
    let cfg = dir.path().join("rollcage.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
database = "sqlite://runs.db"
local_metrics = "127.0.0.1:{metrics_port}"

{ci_block}
{am_block}

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.healthz]
plugin = "probe"
config = {{ url = "http://{{endpoint}}/healthz", expect_status = [200] }}

[environments.staging]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
analysis = {{ checks = ["healthz"], interval = "1s" }}
replicas = 2
progress_deadline = "30s"

[environments.production]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
analysis = {{ checks = ["healthz"], interval = "1s" }}
bake = {{ duration = "40s", interval = "5s", checks = ["healthz"] }}
replicas = 2
progress_deadline = "30s"

[pipelines.web]
stages = ["staging"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}", RELEASE_ERROR_RATES = "1.2.0=0.5", ERRORS_AFTER_MS = "10000" }} }}

[pipelines.api]
stages = ["production"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}", RELEASE_ERROR_RATES = "1.2.0=0.5", ERRORS_AFTER_MS = "6000" }} }}

[alerts]
after_promotion = "10m"

[[alerts.matchers]]
alertnames = ["HighErrorRate", "SlowResponses"]
"#
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, cache.path(), "127.0.0.1:0");
    let port = server.port;

    // Alertmanager posts to the host with its token; Prometheus scrapes
    // the router (the local runtime names a service `<environment>-<its
    // name>`: the environment label comes from there) and sends alerts to
    // Alertmanager.
    let alertmanager = Alertmanager::start(
        &alertmanager_bin,
        &format!("{}/v1/hooks/alertmanager", server.url()),
        &am,
    );
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/prometheus/rollback-alerts.yaml"),
    )
    .unwrap()
    .replace("[1m]", "[10s]")
    .replace("for: 1m", "for: 1s");
    let rules_file = dir.path().join("rollback-alerts.yaml");
    std::fs::write(&rules_file, rules).unwrap();
    let prometheus = Prometheus::start_with(
        &prometheus_bin,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: router\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n    metric_relabel_configs:\n      - source_labels: [service]\n        regex: '(staging|production)-.*'\n        target_label: environment\n\
             rule_files:\n  - '{}'\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{}']\n",
            rules_file.display(),
            alertmanager.port
        ),
    );

    let start_in = |pipeline: &str, release: &str| {
        let (status, body) = http(
            port,
            "POST",
            "/v1/runs",
            Some(&ci),
            &[],
            Some(&format!(
                r#"{{"pipeline": "{pipeline}", "release": "{release}"}}"#
            )),
        );
        assert_eq!(status, 202, "{body}");
        json(&body)["id"].as_str().unwrap().to_string()
    };
    let start = |release: &str| start_in("web", release);
    let finished = |id: &str| {
        until(port, &format!("/v1/runs/{id}"), &ci, "the run's end", |v| {
            !matches!(
                v["run"]["status"].as_str(),
                Some("queued" | "running" | "awaiting_approval")
            )
        })["run"]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(finished(&start("1.0.0")), "succeeded");

    // Traffic through the router, as users would send it.
    let state = || -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(".rollcage-local/state.json")).unwrap(),
        )
        .unwrap()
    };
    let service = |state: &Value, name: &str| -> Value {
        state["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name}: {state}"))
            .clone()
    };
    let traffic = |front: String| {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let traffic = std::thread::spawn(move || {
            let port: u16 = front.rsplit(':').next().unwrap().parse().unwrap();
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n");
                    let _ = s.read_to_end(&mut Vec::new());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (stop, traffic)
    };
    let (stop, web_traffic) = traffic(
        service(&state(), "staging-web")["front"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    // 1.2.0 is healthy while its canary runs, and is promoted; ten
    // seconds after its instances started, half its answers are errors.
    let bad = start("1.2.0");
    assert_eq!(finished(&bad), "succeeded");
    let is_rollback =
        |r: &Value| r["release"] == "1.0.0" && r["params"]["rollback_of"] == bad.as_str();
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let (_, body) = http(port, "GET", "/v1/runs", Some(&ci), &[], None);
        let runs = json(&body);
        if runs["runs"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(is_rollback))
        {
            break runs;
        }
        if Instant::now() > deadline {
            let (_, audit) = http(port, "GET", "/v1/audit", Some(&ci), &[], None);
            panic!(
                "no rollback run: {body}\naudit: {audit}\nalerts: {:?}\ntargets: {:?}",
                prometheus.get("/api/v1/alerts"),
                prometheus.get("/api/v1/targets")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let rollback = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| is_rollback(r))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(finished(&rollback), "succeeded");
    stop.store(true, Ordering::Relaxed);
    web_traffic.join().unwrap();

    // The alert is in the audit trail with what it did.
    let audit = until(port, "/v1/audit", &ci, "the alert's audit line", |v| {
        v["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|a| a["action"] == "alert"))
    });
    let alert = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "alert")
        .find(|a| a["detail"]["outcome"] == "rolled_back")
        .unwrap_or_else(|| panic!("no alert rolled back: {audit}"));
    assert_eq!(alert["actor"], "alertmanager");
    assert_eq!(alert["detail"]["alert"], "HighErrorRate");
    assert_eq!(alert["detail"]["rollback_run"], rollback.as_str());
    assert_eq!(alert["detail"]["labels"]["environment"], "staging");
    // The alerts token reads nothing.
    let (status, _) = http(port, "GET", "/v1/runs", Some(&am), &[], None);
    assert_eq!(status, 403);

    let slots = |name: &str| -> Vec<String> {
        service(&state(), name)["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["release"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(slots("staging-web"), ["1.0.0"]);

    // In production releases bake for 40 s: 1.2.0 goes bad while it
    // bakes, and the alert rolls it back in the run that promoted it.
    assert_eq!(finished(&start_in("api", "1.0.0")), "succeeded");
    let (stop, api_traffic) = traffic(
        service(&state(), "production-api")["front"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let baking = start_in("api", "1.2.0");
    assert_eq!(finished(&baking), "rolled_back");
    stop.store(true, Ordering::Relaxed);
    api_traffic.join().unwrap();
    let (_, body) = http(
        port,
        "GET",
        &format!("/v1/runs/{baking}"),
        Some(&ci),
        &[],
        None,
    );
    let run = json(&body);
    assert_eq!(
        run["run"]["reason"], "aborted by alert `HighErrorRate` during the bake",
        "{run}"
    );
    assert_eq!(slots("production-api"), ["1.0.0"]);
    let (_, audit) = http(port, "GET", "/v1/audit", Some(&ci), &[], None);
    let audit = json(&audit);
    assert!(
        audit["entries"].as_array().unwrap().iter().any(|a| {
            a["action"] == "alert"
                && a["detail"]["outcome"] == "aborted"
                && a["run_id"] == baking.as_str()
        }),
        "{audit}"
    );
}
