//! The local runtime end to end: real processes (a small Python HTTP server
//! as the supervised service), real HTTP over loopback, through the admin
//! API, the front ports and the metrics endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rollcage_local::{LocalRuntime, LocalRuntimeOptions};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

/// Answers `/healthz` (500 when its release is `broken`), `/fail` with a
/// 500, anything else with a 200; every body is the release, and the
/// `x-instance` header says which instance answered.
const SERVER: &str = r#"
import http.server, os, sys, time, urllib.parse
VERSION = os.environ.get("VERSION", "")
INSTANCE = os.environ.get("INSTANCE", "")
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle's algorithm and the
    # client's delayed ACK, every response would take 40 ms.
    disable_nagle_algorithm = True
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if "sleep_ms" in query:
            time.sleep(int(query["sleep_ms"][0]) / 1000)
        if url.path == "/healthz":
            code = 500 if VERSION == "broken" else 200
        else:
            code = 500 if url.path == "/fail" else 200
        body = VERSION.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-instance", INSTANCE)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("serving", VERSION, "on", sys.argv[1], flush=True)
server.serve_forever()
"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Env {
    dir: TempDir,
    server: PathBuf,
    client: HttpClient,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server.py");
        std::fs::write(&server, SERVER).unwrap();
        Env {
            dir,
            server,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    async fn start(&self) -> LocalRuntime {
        LocalRuntime::start(LocalRuntimeOptions::new(self.state_dir()))
            .await
            .unwrap()
    }

    /// The plain service definition: the test server on `{port}`.
    fn definition(&self) -> Value {
        json!({
            "command": ["python3", self.server, "{port}"],
            "env": {"VERSION": "{release}", "INSTANCE": "{slot}-{instance}"},
        })
    }

    async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, http::HeaderMap, Bytes) {
        let mut request = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    async fn admin(
        &self,
        rt: &LocalRuntime,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {}", rt.token());
        let url = format!("{}{path}", rt.admin_url());
        let (status, _, body) = self
            .request(method, &url, &[("authorization", &auth)], body)
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn ok(&self, rt: &LocalRuntime, method: &str, path: &str, body: Value) -> Value {
        let (status, reply) = self.admin(rt, method, path, Some(body)).await;
        assert_eq!(status, 200, "{method} {path}: {reply}");
        reply
    }

    /// Create a service and return its front address.
    async fn service(&self, rt: &LocalRuntime, name: &str, def: Value) -> String {
        let reply = self
            .ok(rt, "PUT", &format!("/v1/services/{name}"), def)
            .await;
        reply["front"].as_str().unwrap().to_owned()
    }

    async fn slot(
        &self,
        rt: &LocalRuntime,
        service: &str,
        slot: &str,
        release: &str,
        replicas: u32,
    ) {
        let path = format!("/v1/services/{service}/slots/{slot}");
        self.ok(
            rt,
            "PUT",
            &path,
            json!({"release": release, "replicas": replicas}),
        )
        .await;
    }

    async fn weights(&self, rt: &LocalRuntime, service: &str, weights: &[(&str, u32)]) {
        let weights: Vec<Value> = weights
            .iter()
            .map(|(slot, weight)| json!({"slot": slot, "weight": weight}))
            .collect();
        let path = format!("/v1/services/{service}/weights");
        self.ok(rt, "PUT", &path, json!({ "weights": weights }))
            .await;
    }

    async fn slot_status(&self, rt: &LocalRuntime, service: &str, slot: &str) -> Value {
        let (status, reply) = self
            .admin(rt, "GET", &format!("/v1/services/{service}"), None)
            .await;
        assert_eq!(status, 200, "{reply}");
        reply["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == slot)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Wait until `check` holds for the slot's status, and return it.
    async fn wait_slot(
        &self,
        rt: &LocalRuntime,
        service: &str,
        slot: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.slot_status(rt, service, slot).await;
            if check(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "slot never got there: {status}");
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&self, rt: &LocalRuntime, service: &str, slot: &str, n: u64) -> Value {
        self.wait_slot(rt, service, slot, |s| {
            s["ready"] == n && s["desired"] == n && s["retiring"] == 0
        })
        .await
    }

    /// GET through a front port: status, body, and which instance answered.
    async fn get(
        &self,
        front: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let (status, h, body) = self
            .request("GET", &format!("http://{front}{path}"), headers, None)
            .await;
        let instance = h
            .get("x-instance")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, String::from_utf8(body.to_vec()).unwrap(), instance)
    }

    async fn releases(&self, front: &str, n: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (status, body, _) = self.get(front, "/", &[]).await;
            assert_eq!(status, 200, "{body}");
            seen.push(body);
        }
        seen
    }
}

/// A failed test never reaches its shutdown: kill whatever `state.json`
/// still records, so a failure does not leave servers running.
impl Drop for Env {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read(self.state_dir().join("state.json")) else {
            return;
        };
        let state: Value = serde_json::from_slice(&text).unwrap_or_default();
        for service in state["services"].as_array().into_iter().flatten() {
            for slot in service["slots"].as_array().into_iter().flatten() {
                for process in slot["processes"].as_array().into_iter().flatten() {
                    if let Some(pid) = process["pid"].as_u64().filter(|p| *p > 1) {
                        unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
                    }
                }
            }
        }
    }
}

fn pids(slot: &Value) -> Vec<u32> {
    slot["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| Some(i["pid"].as_u64()? as u32))
        .collect()
}

/// Whether a process runs (a zombie has exited; it only waits for its
/// parent to collect it).
fn alive(pid: u32) -> bool {
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'));
    exists && !zombie
}

async fn wait_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "process {pid} is still running");
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_says_what_is_wrong() {
    let env = Env::new();
    let rt = env.start().await;
    assert!(rt.admin_url().starts_with("http://127.0.0.1:"));
    assert!(rt.metrics_url().ends_with("/metrics"));
    let url = format!("{}/v1/services/web", rt.admin_url());
    for auth in [None, Some("Bearer nope"), Some(rt.token())] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let (status, _, body) = env.request("GET", &url, &headers, None).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _, _) = env
        .request("GET", &format!("{}/healthz", rt.admin_url()), &[], None)
        .await;
    assert_eq!(status, 200);

    let (status, reply) = env.admin(&rt, "GET", "/v1/services/web", None).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    env.service(&rt, "web", env.definition()).await;
    env.slot(&rt, "web", "stable", "1.0.0", 1).await;
    let cases = [
        (
            "PUT",
            "/v1/services/web",
            json!({"command": ["x"], "port": 1}),
            400,
            "unknown field `port`",
        ),
        (
            "PUT",
            "/v1/services/web/slots/canary",
            json!({"release": "2"}),
            400,
            "missing field `replicas`",
        ),
        (
            "PUT",
            "/v1/services/nope/slots/canary",
            json!({"release": "2", "replicas": 1}),
            404,
            "service `nope` does not exist",
        ),
        (
            "PUT",
            "/v1/services/web/weights",
            json!({"weights": [{"slot": "stable", "weight": 90}]}),
            400,
            "weights: sum to 90, not 100",
        ),
        (
            "PUT",
            "/v1/services/web/weights",
            json!({"weights": [{"slot": "stable", "weight": 50}, {"slot": "blue", "weight": 50}]}),
            400,
            "weights[1].slot: there is no slot `blue`",
        ),
        (
            "POST",
            "/v1/services/web/jobs",
            json!({"name": "j", "command": ["echo", "{release}"]}),
            400,
            "command[1]: uses `{release}`",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let (got, reply) = env.admin(&rt, method, path, Some(body)).await;
        assert_eq!(got, status, "{method} {path}: {reply}");
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{text} lacks {message}");
    }
    env.weights(&rt, "web", &[("stable", 100)]).await;
    let (status, reply) = env
        .admin(&rt, "DELETE", "/v1/services/web/slots/stable", None)
        .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    for query in ["", "?slot=stable&window=0", "?slot=stable&windw=5"] {
        let (status, _) = env
            .admin(&rt, "GET", &format!("/v1/services/web/stats{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}");
    }
    let (status, _) = env
        .admin(&rt, "GET", "/v1/services/web/stats?slot=green", None)
        .await;
    assert_eq!(status, 404);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_slot_serves_its_release_and_is_measured() {
    let env = Env::new();
    let rt = env.start().await;
    let front = env.service(&rt, "web", env.definition()).await;
    // Updating with the same definition keeps the front port.
    assert_eq!(env.service(&rt, "web", env.definition()).await, front);
    env.slot(&rt, "web", "stable", "1.0.0", 2).await;
    // No weights yet: nowhere to send traffic.
    let (status, body, _) = env.get(&front, "/", &[]).await;
    assert_eq!(status, 503, "{body}");
    env.weights(&rt, "web", &[("stable", 100)]).await;
    let slot = env.wait_ready(&rt, "web", "stable", 2).await;
    assert_eq!(slot["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(slot["restarts"], 0);

    let mut instances = Vec::new();
    for _ in 0..4 {
        let (status, body, instance) = env.get(&front, "/", &[]).await;
        assert_eq!((status, body.as_str()), (200, "1.0.0"));
        instances.push(instance);
    }
    // Round robin over both ready instances.
    assert_eq!(
        instances.iter().filter(|i| *i == "stable-0").count(),
        2,
        "{instances:?}"
    );
    assert_eq!(
        instances.iter().filter(|i| *i == "stable-1").count(),
        2,
        "{instances:?}"
    );
    let (status, _, _) = env.get(&front, "/fail", &[]).await;
    assert_eq!(status, 500);

    let (status, _, text) = env.request("GET", &rt.metrics_url(), &[], None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(text.to_vec()).unwrap();
    let l = r#"service="web",slot="stable",release="1.0.0""#;
    for line in [
        "# TYPE http_requests_total counter".to_owned(),
        format!("http_requests_total{{{l},status=\"200\"}} 4"),
        format!("http_requests_total{{{l},status=\"500\"}} 1"),
        r#"http_requests_total{service="web",slot="",release="",status="503"} 1"#.to_owned(),
        "# TYPE http_request_duration_seconds histogram".to_owned(),
        format!("http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 5"),
        format!("http_request_duration_seconds_count{{{l}}} 5"),
        r#"rollcage_local_instance_restarts_total{service="web",slot="stable"} 0"#.to_owned(),
        r#"rollcage_local_instances_ready{service="web",slot="stable"} 2"#.to_owned(),
    ] {
        assert!(text.lines().any(|x| x == line), "no `{line}` in\n{text}");
    }
    assert!(text.contains(&format!("http_request_duration_seconds_sum{{{l}}} ")));

    let url = format!(
        "{}/v1/services/web/slots/stable/logs?instance=1&tail=5",
        rt.admin_url()
    );
    let auth = format!("Bearer {}", rt.token());
    let (status, _, log) = env
        .request("GET", &url, &[("authorization", &auth)], None)
        .await;
    assert_eq!(status, 200);
    let log = String::from_utf8(log.to_vec()).unwrap();
    assert!(log.contains("serving 1.0.0 on"), "{log}");
    let log_file = env.state_dir().join("logs/web/stable-1.log");
    assert!(log_file.exists());
    rt.shutdown().await;
}

#[tokio::test]
async fn weights_move_traffic_and_sticky_clients_stay() {
    let env = Env::new();
    let rt = env.start().await;
    let mut def = env.definition();
    def["sticky_header"] = json!("x-user");
    let front = env.service(&rt, "web", def).await;
    env.slot(&rt, "web", "stable", "1.0.0", 1).await;
    env.slot(&rt, "web", "canary", "2.0.0", 1).await;
    env.wait_ready(&rt, "web", "stable", 1).await;
    env.wait_ready(&rt, "web", "canary", 1).await;

    env.weights(&rt, "web", &[("stable", 100), ("canary", 0)])
        .await;
    assert!(env.releases(&front, 20).await.iter().all(|r| r == "1.0.0"));
    env.weights(&rt, "web", &[("stable", 0), ("canary", 100)])
        .await;
    assert!(env.releases(&front, 20).await.iter().all(|r| r == "2.0.0"));
    env.weights(&rt, "web", &[("stable", 50), ("canary", 50)])
        .await;
    let split = env.releases(&front, 200).await;
    let canary = split.iter().filter(|r| *r == "2.0.0").count();
    assert!(
        (60..=140).contains(&canary),
        "{canary} of 200 went to the canary"
    );

    let mut slots_seen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        let mut answers = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let (_, body, _) = env.get(&front, "/", &[("x-user", &user)]).await;
            answers.insert(body);
        }
        assert_eq!(answers.len(), 1, "{user} moved between slots: {answers:?}");
        slots_seen.extend(answers);
    }
    assert_eq!(slots_seen.len(), 2, "12 users all hashed to one slot");
    let reply = env.ok(&rt, "GET", "/v1/services/web", Value::Null).await;
    assert_eq!(
        reply["weights"],
        json!([{"slot": "stable", "weight": 50}, {"slot": "canary", "weight": 50}])
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn slots_without_ready_instances_get_no_traffic() {
    let env = Env::new();
    let rt = env.start().await;
    let front = env.service(&rt, "web", env.definition()).await;
    env.slot(&rt, "web", "stable", "1.0.0", 1).await;
    // This release fails its health check, so it never gets ready.
    env.slot(&rt, "web", "canary", "broken", 1).await;
    env.wait_ready(&rt, "web", "stable", 1).await;
    env.weights(&rt, "web", &[("stable", 50), ("canary", 50)])
        .await;
    sleep(Duration::from_millis(500)).await;
    assert!(env.releases(&front, 40).await.iter().all(|r| r == "1.0.0"));
    let canary = env.slot_status(&rt, "web", "canary").await;
    assert_eq!(
        (canary["ready"].as_u64(), canary["desired"].as_u64()),
        (Some(0), Some(1))
    );

    env.weights(&rt, "web", &[("stable", 0), ("canary", 100)])
        .await;
    let (status, body, _) = env.get(&front, "/", &[]).await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "no_ready_instance");
    rt.shutdown().await;
}

#[tokio::test]
async fn weight_changes_under_load_drop_nothing() {
    let env = Arc::new(Env::new());
    let rt = env.start().await;
    let front = env.service(&rt, "web", env.definition()).await;
    env.slot(&rt, "web", "stable", "1.0.0", 2).await;
    env.slot(&rt, "web", "canary", "2.0.0", 2).await;
    env.wait_ready(&rt, "web", "stable", 2).await;
    env.wait_ready(&rt, "web", "canary", 2).await;
    env.weights(&rt, "web", &[("stable", 100)]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (env, front, stop) = (env.clone(), front.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    statuses.push(env.get(&front, "/", &[]).await.0);
                }
                statuses
            })
        })
        .collect();
    for (stable, canary) in [
        (90, 10),
        (75, 25),
        (50, 50),
        (0, 100),
        (100, 0),
        (10, 90),
        (100, 0),
    ] {
        sleep(Duration::from_millis(150)).await;
        env.weights(&rt, "web", &[("stable", stable), ("canary", canary)])
            .await;
    }
    sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    assert!(statuses.len() > 50, "only {} requests", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    rt.shutdown().await;
}

#[tokio::test]
async fn stats_cover_the_requested_window() {
    let env = Env::new();
    let rt = env.start().await;
    let front = env.service(&rt, "web", env.definition()).await;
    env.slot(&rt, "web", "canary", "2.0.0", 1).await;
    env.weights(&rt, "web", &[("canary", 100)]).await;
    env.wait_ready(&rt, "web", "canary", 1).await;

    let empty = env
        .ok(
            &rt,
            "GET",
            "/v1/services/web/stats?slot=canary",
            Value::Null,
        )
        .await;
    assert_eq!(empty["requests"], 0);
    assert!(empty["error_ratio"].is_null() && empty["p50_seconds"].is_null());
    for path in ["/", "/", "/", "/", "/", "/", "/", "/", "/fail", "/fail"] {
        env.get(&front, path, &[]).await;
    }
    let (_, _, _) = env.get(&front, "/?sleep_ms=300", &[]).await;
    let stats = env
        .ok(
            &rt,
            "GET",
            "/v1/services/web/stats?slot=canary&window=30",
            Value::Null,
        )
        .await;
    assert_eq!(stats["slot"], "canary");
    assert_eq!(stats["release"], "2.0.0");
    assert_eq!(stats["window_seconds"], 30);
    assert_eq!(stats["requests"], 11);
    assert_eq!(stats["errors"], 2);
    let ratio = stats["error_ratio"].as_f64().unwrap();
    assert!((ratio - 2.0 / 11.0).abs() < 1e-9, "{ratio}");
    let p50 = stats["p50_seconds"].as_f64().unwrap();
    let p99 = stats["p99_seconds"].as_f64().unwrap();
    assert!(p50 < 0.1, "{stats}");
    assert!((0.25..=0.5).contains(&p99), "{stats}");
    assert!(stats["p90_seconds"].as_f64().unwrap() <= p99);

    sleep(Duration::from_millis(2100)).await;
    let stats = env
        .ok(
            &rt,
            "GET",
            "/v1/services/web/stats?slot=canary&window=1",
            Value::Null,
        )
        .await;
    assert_eq!(stats["requests"], 0, "{stats}");
    assert!(stats["error_ratio"].is_null() && stats["p99_seconds"].is_null());
    rt.shutdown().await;
}

#[tokio::test]
async fn jobs_run_to_completion_or_are_killed_at_their_timeout() {
    let env = Env::new();
    let rt = env.start().await;
    let workdir = env.dir.path().join("app");
    std::fs::create_dir_all(&workdir).unwrap();
    let mut def = env.definition();
    def["workdir"] = json!(workdir);
    env.service(&rt, "web", def).await;

    let job = json!({
        "name": "migrate",
        "command": ["sh", "-c", "echo \"$(pwd) {service} {release} $TARGET\"; echo warn >&2; exit 3"],
        "env": {"TARGET": "db-{release}"},
        "timeout_ms": 10000,
        "release": "1.2.0",
    });
    let reply = env.ok(&rt, "POST", "/v1/services/web/jobs", job).await;
    assert_eq!(reply["exit_code"], 3);
    let expected = format!("{} web 1.2.0 db-1.2.0\nwarn\n", workdir.display());
    assert_eq!(reply["output"], expected);

    let began = Instant::now();
    let job =
        json!({"name": "hang", "command": ["sh", "-c", "echo begun; sleep 60"], "timeout_ms": 300});
    let reply = env.ok(&rt, "POST", "/v1/services/web/jobs", job).await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(reply["exit_code"], -1);
    let output = reply["output"].as_str().unwrap();
    assert!(output.starts_with("begun\n"), "{output}");
    assert!(
        output
            .trim_end()
            .ends_with("timed out after 300 ms and was killed"),
        "{output}"
    );

    let job = json!({"name": "x", "command": ["true"]});
    let (status, _) = env
        .admin(&rt, "POST", "/v1/services/other/jobs", Some(job))
        .await;
    assert_eq!(status, 404);
    rt.shutdown().await;
}

#[tokio::test]
async fn removal_and_scale_down_kill_whole_process_groups() {
    let env = Env::new();
    let rt = env.start().await;
    let marks = env.dir.path();
    // A shell that leaves a sleeping child in the group, then becomes the
    // server: removing the instance must end both.
    let script = format!(
        "sleep 300 & echo $! > {}/{{slot}}-{{instance}}.child; exec python3 {} {{port}}",
        marks.display(),
        env.server.display()
    );
    let def = json!({"command": ["sh", "-c", script], "env": {"VERSION": "{release}"}});
    env.service(&rt, "web", def).await;
    env.slot(&rt, "web", "stable", "1.0.0", 2).await;
    let slot = env.wait_ready(&rt, "web", "stable", 2).await;
    let servers = pids(&slot);
    let children: Vec<u32> = (0..2)
        .map(|i| read_pid(&marks.join(format!("stable-{i}.child"))))
        .collect();
    assert!(servers.iter().chain(&children).all(|p| alive(*p)));

    // Scale down: instance 1 and its group go, instance 0 stays.
    env.slot(&rt, "web", "stable", "1.0.0", 1).await;
    wait_dead(servers[1]).await;
    wait_dead(children[1]).await;
    assert!(alive(servers[0]) && alive(children[0]));

    let (status, reply) = env
        .admin(&rt, "DELETE", "/v1/services/web/slots/stable", None)
        .await;
    assert_eq!((status, reply["removed"].as_bool()), (200, Some(true)));
    assert!(
        !alive(servers[0]),
        "DELETE returned before the instance was gone"
    );
    wait_dead(children[0]).await;
    let (status, reply) = env
        .admin(&rt, "DELETE", "/v1/services/web/slots/stable", None)
        .await;
    assert_eq!((status, reply["removed"].as_bool()), (200, Some(false)));

    // Deleting the service ends what is left of it.
    env.slot(&rt, "web", "blue", "1.0.0", 1).await;
    let blue = pids(&env.wait_ready(&rt, "web", "blue", 1).await);
    let (status, reply) = env.admin(&rt, "DELETE", "/v1/services/web", None).await;
    assert_eq!((status, reply["removed"].as_bool()), (200, Some(true)));
    assert!(!alive(blue[0]));
    let (status, _) = env.admin(&rt, "GET", "/v1/services/web", None).await;
    assert_eq!(status, 404);
    rt.shutdown().await;
}

#[tokio::test]
async fn an_instance_that_dies_is_restarted() {
    let env = Env::new();
    let rt = env.start().await;
    let front = env.service(&rt, "web", env.definition()).await;
    env.slot(&rt, "web", "stable", "1.0.0", 1).await;
    env.weights(&rt, "web", &[("stable", 100)]).await;
    let before = pids(&env.wait_ready(&rt, "web", "stable", 1).await)[0];
    unsafe { libc::kill(before as libc::pid_t, libc::SIGKILL) };
    let slot = env
        .wait_slot(&rt, "web", "stable", |s| {
            s["restarts"] == 1 && s["ready"] == 1
        })
        .await;
    let instance = &slot["instances"][0];
    assert_eq!(instance["restarts"], 1);
    assert_eq!(instance["last_exit"], "signal: 9 (SIGKILL)");
    assert_ne!(instance["pid"].as_u64().unwrap() as u32, before);
    assert_eq!(env.releases(&front, 3).await, ["1.0.0"; 3]);
    let (_, _, text) = env.request("GET", &rt.metrics_url(), &[], None).await;
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains(r#"rollcage_local_instance_restarts_total{service="web",slot="stable"} 1"#)
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_release_change_replaces_instances_once_the_new_ones_are_ready() {
    let env = Env::new();
    let rt = env.start().await;
    let front = env.service(&rt, "web", env.definition()).await;
    env.slot(&rt, "web", "stable", "1.0.0", 2).await;
    env.weights(&rt, "web", &[("stable", 100)]).await;
    let old = pids(&env.wait_ready(&rt, "web", "stable", 2).await);

    // Same release and replicas: nothing happens.
    env.slot(&rt, "web", "stable", "1.0.0", 2).await;
    assert_eq!(pids(&env.slot_status(&rt, "web", "stable").await), old);

    env.slot(&rt, "web", "stable", "2.0.0", 2).await;
    let slot = env.wait_ready(&rt, "web", "stable", 2).await;
    assert_eq!(slot["release"], "2.0.0");
    for pid in old {
        wait_dead(pid).await;
    }
    assert!(env.releases(&front, 6).await.iter().all(|r| r == "2.0.0"));

    // A changed definition replaces the instances too, on the same front.
    let current = pids(&slot);
    let mut def = env.definition();
    def["env"]["EXTRA"] = json!("1");
    assert_eq!(env.service(&rt, "web", def).await, front);
    let slot = env
        .wait_slot(&rt, "web", "stable", |s| {
            s["ready"] == 2 && s["retiring"] == 0 && pids(s).iter().all(|p| !current.contains(p))
        })
        .await;
    assert_eq!(slot["release"], "2.0.0");
    for pid in current {
        wait_dead(pid).await;
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn a_new_host_reaps_what_a_killed_one_left_and_takes_over() {
    let env = Env::new();
    let first = env.start().await;
    let front = env.service(&first, "web", env.definition()).await;
    env.slot(&first, "web", "stable", "1.0.0", 2).await;
    env.weights(&first, "web", &[("stable", 100)]).await;
    let old = pids(&env.wait_ready(&first, "web", "stable", 2).await);
    first.abandon().await;
    assert!(
        old.iter().all(|p| alive(*p)),
        "abandoning must not stop processes"
    );
    let state = std::fs::read_to_string(env.state_dir().join("state.json")).unwrap();
    assert!(state.contains(&old[0].to_string()));

    let second = env.start().await;
    for pid in &old {
        assert!(!alive(*pid), "process {pid} of the killed host survived");
    }
    let slot = env.wait_ready(&second, "web", "stable", 2).await;
    assert!(pids(&slot).iter().all(|p| !old.contains(p)));
    let service = env
        .ok(&second, "GET", "/v1/services/web", Value::Null)
        .await;
    assert_eq!(
        service["front"], front,
        "the front port was not taken again"
    );
    assert_eq!(
        service["weights"],
        json!([{"slot": "stable", "weight": 100}])
    );
    assert!(env.releases(&front, 4).await.iter().all(|r| r == "1.0.0"));

    let new = pids(&slot);
    second.shutdown().await;
    for pid in new {
        assert!(!alive(pid));
    }
    assert!(!env.state_dir().join("state.json").exists());
    assert!(
        std::net::TcpStream::connect(&front).is_err(),
        "the front port still answers after shutdown"
    );
}

#[tokio::test]
async fn a_second_runtime_on_the_same_folder_is_refused_naming_the_first() {
    // It would reap the first one's instances: one runtime per folder.
    let env = Env::new();
    let first = env.start().await;
    let front = env.service(&first, "web", env.definition()).await;
    env.slot(&first, "web", "stable", "1.0.0", 1).await;
    let old = pids(&env.wait_ready(&first, "web", "stable", 1).await);
    let err = LocalRuntime::start(LocalRuntimeOptions::new(env.state_dir()))
        .await
        .err()
        .expect("a second runtime started on the same folder");
    let message = err.to_string();
    assert!(
        message.contains("in use by another rollcage process")
            && message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    // The first one's instances were left alone.
    assert!(old.iter().all(|p| alive(*p)));
    assert!(!front.is_empty());
    // Once it is gone, the folder is free again.
    first.shutdown().await;
    let again = env.start().await;
    again.shutdown().await;
}
