//! `builtin:kubernetes` end to end: the real binary and the wasm plugin
//! against the Kubernetes API stand-in, over HTTPS with its private CA
//! (`tls_ca`). What the cluster was asked to do is read from the
//! stand-in's request log and object history, not from Rollcage's output.
//!
//! One stand-in serves the whole file; each test has its own namespace.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::text;
use rollcage_kube_standin::{Fault, FaultKind, StandIn};
use serde_json::{Value, json};

fn standin() -> &'static StandIn {
    static STANDIN: OnceLock<StandIn> = OnceLock::new();
    STANDIN.get_or_init(StandIn::start)
}

/// A health endpoint on loopback answering for a pod address: 500 for the
/// pods of release 1.2.0 (a bad release), 200 for any other pod the
/// stand-in knows, 404 otherwise.
fn health_stub() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut sock in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let n = sock.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let ip = path
                    .trim_start_matches("/pod/")
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_string();
                let pod = standin()
                    .list("pods", "")
                    .into_iter()
                    .find(|p| p["status"]["podIP"] == ip.as_str());
                let status = match pod {
                    Some(p) if p["metadata"]["labels"]["rollcage.dev/release"] == "1.2.0" => 500,
                    Some(_) => 200,
                    None => 404,
                };
                let _ = sock.write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        port
    })
}

struct Setup {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A configuration for `namespace` with the provider's `traffic`
    /// settings and the environment's `strategy`, and `extra` lines in the
    /// environment.
    fn new(namespace: &str, traffic: &str, strategy: &str, extra: &str) -> Setup {
        let s = standin();
        s.create_namespace(namespace);
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster-ca.pem"), &s.ca_pem).unwrap();
        let config = dir.path().join("rollcage.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
database = "sqlite://runs.db"

[plugins.cluster]
component = "builtin:kubernetes"
allow_hosts = ["127.0.0.1:{port}"]
secrets = ["KUBE_TOKEN"]
tls_ca = "cluster-ca.pem"
limits = {{ timeout_ms = 60000 }}
config = {{ api_url = "{url}", token_secret = "KUBE_TOKEN", namespace = "{namespace}", progress_deadline_seconds = 2, {traffic} }}

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:{stub}"]

[checks.healthy]
plugin = "probe"
config = {{ url = "http://127.0.0.1:{stub}/pod/{{endpoint}}", expect_status = [200] }}

[environments.production]
provider = "cluster"
strategy = {strategy}
analysis = {{ checks = ["healthy"], interval = "500ms", count = 1 }}
replicas = 2
progress_deadline = "30s"
{extra}

[pipelines.web]
stages = ["production"]
service = {{ image = "registry.example/web:{{release}}", port = 8080, readiness_path = "/healthz", labels = {{ team = "payments" }} }}
"#,
                port = s.port,
                url = s.url,
                stub = health_stub(),
            ),
        )
        .unwrap();
        Setup { dir, cache, config }
    }

    fn rollcage(&self, args: &[&str]) -> Output {
        common::command(self.cache.path())
            .args(args)
            .env("KUBE_TOKEN", &standin().token)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// `rollcage run web --release`; the output.
    fn run(&self, release: &str) -> Output {
        let cfg = self.config.to_str().unwrap();
        self.rollcage(&[
            "run",
            "web",
            "-c",
            cfg,
            "--release",
            release,
            "--output",
            "json",
        ])
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{what}:\n{stdout}\n{}",
        text(&out.stderr)
    );
    stdout
}

/// Our backendRefs' weights in one version of the HTTPRoute: `(name, weight)`.
fn our_weights(route: &Value, service: &str) -> Vec<(String, u64)> {
    let mut w: Vec<(String, u64)> = route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().cloned().unwrap_or_default())
        .filter(|b| {
            b["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{service}-")))
        })
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap_or(1),
            )
        })
        .collect();
    w.sort();
    w
}

/// The Deployment that ran `version` in `namespace`, at any time.
fn deployment_of(namespace: &str, version: &str) -> String {
    standin()
        .write_log()
        .into_iter()
        .filter_map(|(p, n, name, d)| (p == "deployments" && n == namespace).then_some((name, d?)))
        .find(|(_, d)| d["metadata"]["annotations"]["rollcage.dev/version"] == version)
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("no Deployment ran {version}"))
}

fn http_route(namespace: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": namespace, "labels": {"owner": "platform"}},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["web.example.com"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-env", "value": "prod"}]}}],
                "backendRefs": [{"name": "legacy-web", "port": 80, "weight": 0}]
            }]
        }
    })
}

/// Every write to the route gave weight only to slots whose Deployment had
/// ready pods of its release at that moment (the history is in order).
fn assert_weight_only_to_ready_slots(namespace: &str, service: &str) {
    let s = standin();
    let route_versions = s.history("httproutes", namespace, "web");
    assert!(route_versions.len() > 1, "the route was never written");
    // Replay: the latest Deployment status per slot before each route write.
    let all = s.write_log();
    let mut ready: std::collections::BTreeMap<String, u64> = Default::default();
    for (plural, ns, name, obj) in all {
        if ns != namespace {
            continue;
        }
        match (plural.as_str(), obj) {
            ("deployments", Some(d)) => {
                ready.insert(name, d["status"]["readyReplicas"].as_u64().unwrap_or(0));
            }
            ("deployments", None) => {
                ready.remove(&name);
            }
            ("httproutes", Some(r)) => {
                for (backend, weight) in our_weights(&r, service) {
                    if weight > 0 {
                        assert!(
                            ready.get(&backend).copied().unwrap_or(0) > 0,
                            "{backend} got weight {weight} without a ready pod"
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn a_canary_over_gateway_api_touches_only_what_is_rollcages() {
    let s = standin();
    let ns = "canary";
    s.seed(http_route(ns));
    // Someone else's Deployment in the namespace: never to be touched.
    s.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "legacy-web", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "legacy"}},
            "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [{"name": "app", "image": "legacy:1"}]}}}}));
    let setup = Setup::new(
        ns,
        r#"traffic = "gateway-api", http_route = "web""#,
        r#"{ plugin = "canary", steps = [25, 50, 100] }"#,
        "",
    );
    let first = setup.run("1.0.0");
    ok(&first, "first deployment");
    let canary = setup.run("1.1.0");
    let out = ok(&canary, "canary");
    assert!(out.contains("\"status\":\"succeeded\""), "{out}");

    // The route went through exactly the steps asked for, in order.
    let versions: Vec<Vec<(String, u64)>> = s
        .history("httproutes", ns, "web")
        .into_iter()
        .flatten()
        .map(|r| our_weights(&r, "web"))
        .collect();
    let canary = deployment_of(ns, "1.1.0");
    let canary_weights: Vec<u64> = versions
        .iter()
        .filter_map(|v| v.iter().find(|(n, _)| *n == canary).map(|(_, w)| *w))
        .collect();
    let mut steps = canary_weights.clone();
    steps.dedup();
    assert!(
        steps.windows(3).any(|w| w == [25, 50, 100]),
        "canary weights over time: {canary_weights:?}"
    );

    // Every other field of the route and the foreign backendRef are kept.
    let route = s.get("httproutes", ns, "web").unwrap();
    assert_eq!(route["spec"]["hostnames"], json!(["web.example.com"]));
    assert_eq!(route["metadata"]["labels"]["owner"], "platform");
    assert_eq!(
        route["spec"]["rules"][0]["filters"][0]["type"],
        "RequestHeaderModifier"
    );
    let legacy: Vec<&Value> = route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == "legacy-web")
        .collect();
    assert_eq!(
        legacy,
        [&json!({"name": "legacy-web", "port": 80, "weight": 0})]
    );
    // What the cluster holds now: the release promoted, weights read back.
    let weights = our_weights(&route, "web");
    assert_eq!(
        weights.iter().map(|(_, w)| w).sum::<u64>(),
        100,
        "{weights:?}"
    );
    let serving: Vec<&String> = weights
        .iter()
        .filter(|(_, w)| *w == 100)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(serving.len(), 1, "{weights:?}");
    let d = s.get("deployments", ns, serving[0]).unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["rollcage.dev/version"],
        "1.1.0"
    );
    assert_eq!(
        d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "rollcage"
    );
    assert_eq!(d["metadata"]["labels"]["rollcage.dev/release"], "1.1.0");
    assert_eq!(d["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/web:1.1.0"
    );

    // Writes: Deployments and Services by server-side apply as `rollcage`;
    // the route by PUT of the version read; nothing else written; nothing
    // not Rollcage's ever written or deleted.
    let writes: Vec<_> = s
        .requests()
        .into_iter()
        .filter(|r| r.namespace == ns && !matches!(r.method.as_str(), "GET"))
        .collect();
    assert!(!writes.is_empty());
    for w in &writes {
        match w.resource.as_str() {
            "deployments" | "services" if w.method == "PATCH" => {
                assert_eq!(w.content_type, "application/apply-patch+yaml", "{w:?}");
                assert!(w.query.contains("fieldManager=rollcage"), "{w:?}");
                assert!(w.name.starts_with("web-") || w.name == "web", "{w:?}");
            }
            "deployments" | "services" if w.method == "DELETE" => {
                assert!(w.query.contains("propagationPolicy=Background"), "{w:?}");
                assert!(w.name.starts_with("web-"), "{w:?}");
            }
            "httproutes" => {
                assert_eq!(w.method, "PUT", "{w:?}");
                let rv = &w.body.as_ref().unwrap()["metadata"]["resourceVersion"];
                assert!(rv.as_str().is_some_and(|v| !v.is_empty()), "{w:?}");
            }
            other => panic!("unexpected write to {other}: {w:?}"),
        }
    }
    let legacy: Vec<Value> = s
        .history("deployments", ns, "legacy-web")
        .into_iter()
        .map(|d| d.expect("the foreign Deployment is never deleted"))
        .collect();
    assert!(
        legacy.iter().all(|d| d["spec"] == legacy[0]["spec"]
            && d["metadata"]["labels"] == legacy[0]["metadata"]["labels"]),
        "the foreign Deployment was changed: {legacy:?}"
    );
    assert!(
        writes.iter().all(|w| !w.name.starts_with("legacy")),
        "a write to something not Rollcage's"
    );
    assert_weight_only_to_ready_slots(ns, "web");

    // The provider's status through the API of a server is what the
    // cluster holds (checked above), so is the CLI's view of the run.
    assert!(setup.path().join("runs.db").exists());
}

#[test]
fn a_crash_looping_release_fails_with_the_kubernetes_reason() {
    let s = standin();
    let ns = "crashloop";
    s.seed(http_route(ns));
    let setup = Setup::new(
        ns,
        r#"traffic = "gateway-api", http_route = "web""#,
        r#"{ plugin = "canary", steps = [50, 100] }"#,
        "",
    );
    ok(&setup.run("1.0.0"), "first deployment");
    // The image of this release crash-loops (the stand-in's convention).
    let out = setup.run("1.3.0-crashloop");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let log = text(&out.stdout);
    assert!(log.contains("ProgressDeadlineExceeded"), "{log}");
    assert!(log.contains("CrashLoopBackOff"), "{log}");
    // No weight ever went to it, and the stable release still serves.
    let crashing = s
        .write_log()
        .into_iter()
        .filter_map(|(p, n, name, d)| (p == "deployments" && n == ns).then_some((name, d?)))
        .find(|(_, d)| d["metadata"]["annotations"]["rollcage.dev/version"] == "1.3.0-crashloop")
        .map(|(name, _)| name)
        .expect("the crash-looping release was applied");
    for version in s.history("httproutes", ns, "web").into_iter().flatten() {
        for (name, w) in our_weights(&version, "web") {
            assert!(!(name == crashing && w > 0), "{name} got {w}");
        }
    }
    let route = s.get("httproutes", ns, "web").unwrap();
    let weights = our_weights(&route, "web");
    let serving: Vec<&String> = weights
        .iter()
        .filter(|(_, w)| *w == 100)
        .map(|(n, _)| n)
        .collect();
    let d = s.get("deployments", ns, serving[0]).unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["rollcage.dev/version"],
        "1.0.0"
    );
}

#[test]
fn blue_green_over_a_service_selector_and_a_bad_release_rolled_back_by_analysis() {
    let s = standin();
    let ns = "bluegreen";
    let setup = Setup::new(
        ns,
        r#"traffic = "service-selector""#,
        r#"{ plugin = "blue-green", scale_down_delay = "1s" }"#,
        "",
    );
    ok(&setup.run("1.0.0"), "first deployment");
    ok(&setup.run("1.1.0"), "blue-green switch");
    let front = s.get("services", ns, "web").unwrap();
    let slot = front["spec"]["selector"]["rollcage.dev/slot"]
        .as_str()
        .unwrap()
        .to_string();
    let d = s.get("deployments", ns, &format!("web-{slot}")).unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["rollcage.dev/version"],
        "1.1.0"
    );

    // 1.2.0 fails its analysis: traffic goes back to 1.1.0's colour.
    let out = setup.run("1.2.0");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("rolled_back"),
        "{}",
        text(&out.stdout)
    );
    let front = s.get("services", ns, "web").unwrap();
    assert_eq!(
        front["spec"]["selector"]["rollcage.dev/slot"],
        slot.as_str()
    );
    // The front Service's selector only ever named one slot at a time, and
    // it never changed its slot Services' (immutable) Deployment selectors.
    for version in s.history("services", ns, "web").into_iter().flatten() {
        let sel = version["spec"]["selector"].as_object().unwrap();
        assert_eq!(sel.len(), 2, "{sel:?}");
    }
    for colour in ["blue", "green"] {
        let selectors: Vec<Value> = s
            .history("deployments", ns, &format!("web-{colour}"))
            .into_iter()
            .flatten()
            .map(|d| d["spec"]["selector"].clone())
            .collect();
        assert!(selectors.windows(2).all(|w| w[0] == w[1]), "{selectors:?}");
    }
}

#[test]
fn conflicts_and_throttling_are_retried_inside_the_call() {
    let s = standin();
    let ns = "storms";
    s.seed(http_route(ns));
    let setup = Setup::new(
        ns,
        r#"traffic = "gateway-api", http_route = "web""#,
        r#"{ plugin = "canary", steps = [50, 100] }"#,
        "",
    );
    ok(&setup.run("1.0.0"), "first deployment");
    let path = format!("/namespaces/{ns}/");
    s.inject(Fault {
        method: Some("PUT".into()),
        path_contains: format!("{path}httproutes"),
        kind: FaultKind::Conflict,
        times: 4,
    });
    s.inject(Fault {
        method: Some("PATCH".into()),
        path_contains: format!("{path}deployments"),
        kind: FaultKind::TooManyRequests { retry_after: 1 },
        times: 3,
    });
    s.inject(Fault {
        method: Some("GET".into()),
        path_contains: format!("{path}pods"),
        kind: FaultKind::Unavailable,
        times: 3,
    });
    s.inject(Fault {
        method: Some("GET".into()),
        path_contains: format!("{path}httproutes"),
        kind: FaultKind::Slow(std::time::Duration::from_millis(300)),
        times: 2,
    });
    let before = s.requests().len();
    ok(&setup.run("1.1.0"), "canary through the storms");
    assert_eq!(s.faults_left(), 0, "every injected fault was met");
    let requests = &s.requests()[before..];
    // After each 429 the next try came no sooner than Retry-After allows:
    // the request log is in order, so a 429 is followed by a retry.
    let throttled = requests.iter().filter(|r| r.status == 429).count();
    assert_eq!(throttled, 3);
    let conflicts = requests
        .iter()
        .filter(|r| r.status == 409 && r.resource == "httproutes")
        .count();
    assert_eq!(conflicts, 4);
    let route = s.get("httproutes", ns, "web").unwrap();
    let weights = our_weights(&route, "web");
    assert_eq!(
        weights.iter().map(|(_, w)| w).sum::<u64>(),
        100,
        "{weights:?}"
    );
}

#[test]
fn a_migration_job_runs_once_before_the_deployment_over_replicas_traffic() {
    let s = standin();
    let ns = "jobs";
    let setup = Setup::new(
        ns,
        r#"traffic = "replicas""#,
        r#"{ plugin = "blue-green", scale_down_delay = "1s" }"#,
        r#"jobs = { pre = [{ name = "migrate", command = ["sh", "-c", "migrate up"], env = { ROLLCAGE_RELEASE = "1.0.0" }, timeout = "30s" }] }"#,
    );
    ok(&setup.run("1.0.0"), "deployment with a migration");
    ok(&setup.run("1.0.1"), "the same migration again");
    let jobs = s.list("jobs", ns);
    assert_eq!(
        jobs.len(),
        1,
        "the same migration is adopted, not run twice: {jobs:?}"
    );
    let job = &jobs[0];
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert!(job["spec"]["activeDeadlineSeconds"].as_i64().unwrap() >= 30);
    assert!(job["spec"]["ttlSecondsAfterFinished"].is_number());
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/web:1.0.0"
    );
    let creates = s
        .requests()
        .into_iter()
        .filter(|r| r.namespace == ns && r.resource == "jobs" && r.method == "POST")
        .count();
    assert_eq!(creates, 1);
    // The job ran before any Deployment of the first run existed.
    let log = s.write_log();
    let job_at = log
        .iter()
        .position(|(p, n, _, _)| p == "jobs" && n == ns)
        .unwrap();
    let deploy_at = log
        .iter()
        .position(|(p, n, _, _)| p == "deployments" && n == ns)
        .unwrap();
    assert!(job_at < deploy_at);

    // A failing migration fails the run with its exit code and log.
    let cfg = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        cfg.replace("migrate up", "migrate up; exit 3"),
    )
    .unwrap();
    let out = setup.run("1.0.2");
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("exited with 3"), "{stdout}");
    assert!(
        stdout.contains("running: sh -c migrate up; exit 3"),
        "{stdout}"
    );
}

#[test]
fn a_missing_rbac_rule_is_named_with_the_rule_to_add() {
    let s = standin();
    let ns = "rbac";
    s.seed(http_route(ns));
    s.deny(ns, "update", "httproutes");
    let setup = Setup::new(
        ns,
        r#"traffic = "gateway-api", http_route = "web""#,
        r#"{ plugin = "canary", steps = [100] }"#,
        "",
    );
    let out = setup.run("1.0.0");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(r#"{apiGroups: [\"gateway.networking.k8s.io\"], resources: [\"httproutes\"], verbs: [\"update\"]}"#),
        "{stdout}"
    );
    assert!(stdout.contains("namespace `rbac`"), "{stdout}");
    // Nothing was created before the missing rule was found.
    assert!(s.list("deployments", ns).is_empty());
    assert!(
        !stdout.contains(&s.token),
        "the token never leaves the host"
    );
}

#[test]
fn the_example_configuration_checks() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes/rollcage.toml");
    let example = example.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let check = |env: &[(&str, &str)]| {
        common::command(cache.path())
            .args(["config", "check", example])
            .env_remove("KUBE_CA")
            .env_remove("KUBE_TOKEN")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let ca = &standin().ca_pem;
    let out = check(&[("KUBE_CA", ca), ("KUBE_TOKEN", "t0ken")]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(": ok (6 plugins, 1 checks, 2 environments, 1 pipelines)"),
        "{}",
        text(&out.stdout)
    );

    // Without the CA in the secrets, the plugins that need it say so.
    let out = check(&[("KUBE_TOKEN", "t0ken")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("plugin `staging-cluster` (builtin:kubernetes): tls_ca (secret KUBE_CA): the secret source has no such secret"),
        "{err}"
    );
}

#[test]
fn a_host_killed_mid_canary_resumes_it_to_its_end() {
    let s = standin();
    let ns = "resume";
    s.seed(http_route(ns));
    let setup = Setup::new(
        ns,
        r#"traffic = "gateway-api", http_route = "web""#,
        r#"{ plugin = "canary", steps = [25, { pause = "3s" }, 50, 100] }"#,
        "",
    );
    ok(&setup.run("1.0.0"), "first deployment");
    let cfg = setup.config.to_str().unwrap();
    let mut host = common::command(setup.cache.path())
        .args(["run", "web", "-c", cfg, "--release", "1.1.0"])
        .env("KUBE_TOKEN", &s.token)
        .current_dir(setup.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while the canary holds 25% (during the pause).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the canary never reached 25%"
        );
        let route = s.get("httproutes", ns, "web").unwrap();
        if our_weights(&route, "web").iter().any(|(_, w)| *w == 25) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    host.kill().unwrap(); // SIGKILL
    host.wait().unwrap();

    let out = setup.rollcage(&["runs", "resume", "-c", cfg]);
    ok(&out, "resume");
    let canary = deployment_of(ns, "1.1.0");
    let weights: Vec<u64> = s
        .history("httproutes", ns, "web")
        .into_iter()
        .flatten()
        .filter_map(|r| {
            our_weights(&r, "web")
                .into_iter()
                .find(|(n, _)| *n == canary)
                .map(|(_, w)| w)
        })
        .collect();
    let mut steps = weights.clone();
    steps.dedup();
    assert!(steps.windows(3).any(|w| w == [25, 50, 100]), "{weights:?}");
    // Never back to fewer: the resumed run went on from where it was.
    let at_25 = steps.iter().position(|w| *w == 25).unwrap();
    assert!(steps[at_25..].windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    let route = s.get("httproutes", ns, "web").unwrap();
    let serving: Vec<String> = our_weights(&route, "web")
        .into_iter()
        .filter(|(_, w)| *w == 100)
        .map(|(n, _)| n)
        .collect();
    let d = s.get("deployments", ns, &serving[0]).unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["rollcage.dev/version"],
        "1.1.0"
    );
    let out = setup.rollcage(&["runs", "list", "-c", cfg, "--output", "json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
}
