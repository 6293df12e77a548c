//! The API through `Router::oneshot`, without a socket, over an engine of
//! plain Rust fakes and a real (in-memory) SQLite store: authentication and
//! roles, the error model, runs started, followed, approved, retried and
//! rolled back, the event stream, metrics and the OpenAPI document.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Answer, send, token};
use http_body_util::BodyExt;
use rollcage_api::{Api, ApiOptions, Auth, RateSettings, Role};
use rollcage_core::HealthCheck;
use rollcage_engine::fakes::scripted;
use rollcage_engine::run::Engine;
use rollcage_store::{RunStatus, SqliteStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

struct World {
    api: Api,
    router: Router,
    engine: Arc<Engine>,
    /// The database's folder.
    dir: tempfile::TempDir,
}

/// `staging` passes its analysis, `production` passes and needs an
/// approval from someone other than the starter, `qa` fails.
fn world(rate: RateSettings) -> World {
    world_with(ApiOptions {
        body_limit_bytes: 1024,
        rate,
        event_poll: Duration::from_millis(100),
        ..ApiOptions::default()
    })
}

fn world_with(options: ApiOptions) -> World {
    let w = built(options);
    w.api.start_scheduler();
    w
}

/// [`world`] with no run driven: runs stay where the test puts them, as
/// many as it makes (every unfinished run counts toward admission).
fn idle_world() -> World {
    built(ApiOptions {
        body_limit_bytes: 1024,
        rate: generous(),
        event_poll: Duration::from_millis(100),
        max_runs: 10_000,
        max_runs_per_pipeline: 10_000,
        ..ApiOptions::default()
    })
}

fn built(options: ApiOptions) -> World {
    let breaker = common::breaker();
    let dir = tempfile::tempdir().unwrap();
    let check = |verdict| scripted("error-rate", vec![Ok(verdict)]) as Arc<dyn HealthCheck>;
    let engine = common::engine(dir.path(), &breaker, check, true);
    let auth = Auth::new(vec![
        token("viewer", Role::Viewer, &[]),
        token("ci", Role::Deployer, &["staging", "qa"]),
        token("alice", Role::Admin, &[]),
        token("bob", Role::Approver, &["production"]),
        token("sam", Role::Approver, &["staging"]),
        token("dora", Role::Deployer, &["production"]),
        token("am", Role::Alerts, &[]),
    ]);
    let api = Api::new(engine.clone(), auth, common::plugins(breaker), options);
    World {
        router: api.router(),
        api,
        engine,
        dir,
    }
}

fn generous() -> RateSettings {
    RateSettings {
        per_second: 10_000,
        burst: 10_000,
    }
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
    fn code(&self) -> String {
        let v: Value = serde_json::from_str(&self.text).unwrap_or(Value::Null);
        v["error"]["code"].as_str().unwrap_or("").to_string()
    }
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer rc_{t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    send(router, req).await
}

/// Poll a run until its status is one of `want`.
async fn until(router: &Router, id: &str, want: &[&str]) -> Value {
    for _ in 0..500 {
        let r = call(
            router,
            "GET",
            &format!("/v1/runs/{id}"),
            Some("viewer"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let v = r.json();
        if want.contains(&v["run"]["status"].as_str().unwrap()) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {id} never reached {want:?}");
}

/// Start a run (202 expected); its id.
async fn started(router: &Router, token: &str, body: Value) -> String {
    let r = start(router, token, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_string()
}

async fn start(router: &Router, token: &str, body: Value) -> Answer {
    call(
        router,
        "POST",
        "/v1/runs",
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401_and_wrong_roles_403() {
    let w = world(generous());
    let r = call(&w.router, "GET", "/v1/runs", None, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let r = call(&w.router, "GET", "/v1/runs", Some("mallory"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["message"], "unknown token");
    // A viewer reads, but does not deploy.
    assert_eq!(
        call(&w.router, "GET", "/v1/runs", Some("viewer"), None)
            .await
            .status,
        StatusCode::OK
    );
    let r = start(
        &w.router,
        "viewer",
        json!({"pipeline": "api", "release": "2.0.0"}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert!(
        r.text.contains("role viewer; this needs deployer or admin"),
        "{}",
        r.text
    );
    // ci deploys to staging only.
    let r = start(
        &w.router,
        "ci",
        json!({"pipeline": "api", "release": "2.0.0"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text.contains("may not act in environment `production`"),
        "{}",
        r.text
    );
    // Nothing was recorded for refused requests.
    let runs = call(&w.router, "GET", "/v1/runs", Some("viewer"), None)
        .await
        .json();
    assert_eq!(runs["runs"], json!([]));
    // Health, readiness, metrics and the document need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        assert_eq!(
            call(&w.router, "GET", path, None, None).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_alertmanager_hook_takes_alerts_only_from_its_role_and_audits_each() {
    let w = world(generous());
    let payload = |version: &str| {
        json!({
            "version": version, "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "rollcage", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "environment": "production"},
                "annotations": {"summary": "High error rate detected"},
                "startsAt": "2026-11-30T20:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph", "fingerprint": "a4b6b9b2747748b3"
            }]
        })
        .to_string()
    };
    let hook = "/v1/hooks/alertmanager";
    // A deployer does not send alerts; an alerts token reads nothing.
    let r = call(&w.router, "POST", hook, Some("ci"), Some(&payload("4"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("this needs alerts or admin"), "{}", r.text);
    let r = call(&w.router, "GET", "/v1/runs", Some("am"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = call(&w.router, "POST", hook, Some("am"), Some(&payload("3"))).await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_version".into()
        )
    );
    // Without [alerts] matchers the alert is ignored, and audited.
    let r = call(&w.router, "POST", hook, Some("am"), Some(&payload("4"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["alerts"][0]["outcome"], "ignored");
    let audit = call(&w.router, "GET", "/v1/audit", Some("viewer"), None)
        .await
        .json();
    let entry = &audit["entries"][0];
    assert_eq!(
        (&entry["actor"], &entry["action"]),
        (&json!("am"), &json!("alert"))
    );
    assert_eq!(entry["detail"]["fingerprint"], "a4b6b9b2747748b3");
    assert_eq!(entry["detail"]["matched"], false);
}

#[tokio::test]
async fn bad_input_is_a_precise_4xx_and_records_nothing() {
    let w = world(generous());
    let cases: Vec<(Option<&str>, StatusCode, &str, &str)> = vec![
        (
            Some("{\"pipeline\": "),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "not valid JSON",
        ),
        (
            Some(r#"{"pipeline": "api", "release": "2.0.0", "stage": ["staging"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "unknown field `stage`",
        ),
        (
            Some(r#"{"pipeline": "api", "release": 2}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "`release`: invalid type: integer `2`, expected a string",
        ),
        (
            Some(r#"{"pipeline": "ap", "release": "2.0.0"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_pipeline",
            "unknown pipeline `ap`",
        ),
        (
            Some(r#"{"pipeline": "api", "release": "2.0"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_release",
            "2.0",
        ),
        (
            Some(r#"{"pipeline": "api", "release": "2.0.0", "stages": ["prod"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_stage",
            "no stage `prod`",
        ),
    ];
    for (body, status, code, needle) in cases {
        let r = call(&w.router, "POST", "/v1/runs", Some("alice"), body).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code.to_string()),
            "{body:?}: {}",
            r.text
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{}",
            r.text
        );
    }
    let r = start(
        &w.router,
        "alice",
        json!({"pipeline": "ap", "release": "2.0.0"}),
    )
    .await;
    assert_eq!(
        r.json()["error"]["details"]["pipelines"],
        json!(["api", "flaky"])
    );
    // Not JSON at all.
    let req = Request::post("/v1/runs")
        .header(header::AUTHORIZATION, "Bearer rc_alice")
        .body(Body::from("pipeline=api"))
        .unwrap();
    let r = w.router.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Over the body limit (1 KiB here).
    let big = json!({"pipeline": "api", "release": "2.0.0", "notes": "x".repeat(4096)});
    let r = start(&w.router, "alice", big).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );
    // Queries are checked too.
    let r = call(
        &w.router,
        "GET",
        "/v1/runs?status=done",
        Some("viewer"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text.contains("expected one of queued, running"),
        "{}",
        r.text
    );
    let r = call(
        &w.router,
        "GET",
        "/v1/runs?pipelin=api",
        Some("viewer"),
        None,
    )
    .await;
    assert!(
        r.text.contains("unknown query parameter `pipelin`"),
        "{}",
        r.text
    );
    let r = call(&w.router, "GET", "/v1/runs/r-nope", Some("viewer"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "no_such_run".into())
    );
    let r = call(&w.router, "GET", "/v1/nothing", Some("viewer"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let r = call(&w.router, "DELETE", "/v1/runs", Some("viewer"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    // Nothing was recorded.
    let runs = call(&w.router, "GET", "/v1/runs", Some("viewer"), None)
        .await
        .json();
    assert_eq!(runs["runs"], json!([]));
    let audit = call(&w.router, "GET", "/v1/audit", Some("viewer"), None)
        .await
        .json();
    assert_eq!(audit["entries"], json!([]));
}

#[tokio::test]
async fn every_error_is_the_json_model_and_quotes_the_request_short() {
    let w = world(generous());
    let cases: Vec<(&str, &str, Option<&str>, StatusCode, &str)> = vec![
        (
            "POST",
            "/v1/runs",
            Some(r#"{"pipeline": "api", "release": "2.0.0", "stages": []}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_stages",
        ),
        (
            "POST",
            "/v1/runs",
            Some(r#"{"pipeline": "api", "release": "2.0.0", "stages": ["staging", "staging"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_stages",
        ),
        // The fields by position, as serde would take them.
        (
            "POST",
            "/v1/runs",
            Some(r#"["api", "2.0.0", null, {}, null]"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/runs/r1/rollback",
            Some(r#"["production"]"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        // `null` is no body: the run is looked for.
        (
            "POST",
            "/v1/runs/r1/rollback",
            Some("null"),
            StatusCode::NOT_FOUND,
            "no_such_run",
        ),
        // A path axum cannot decode.
        (
            "GET",
            "/v1/runs/%FF%FE",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "GET",
            "/v1/environments/%C3%28",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "PUT",
            "/v1/runs/r1",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        ("GET", "/v2/runs", None, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, uri, body, status, code) in cases {
        let r = call(&w.router, method, uri, Some("alice"), body).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code.to_string()),
            "{method} {uri} {body:?}: {}",
            r.text
        );
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "application/json",
            "{method} {uri}"
        );
    }
    // Nothing was recorded.
    let runs = call(&w.router, "GET", "/v1/runs", Some("viewer"), None).await;
    assert_eq!(runs.json()["runs"], json!([]));
    // Long values come back cut, wherever they are quoted.
    let long = "x".repeat(30_000);
    let uris = [
        format!("/v1/runs/{long}"),
        format!("/v1/environments/{long}"),
        format!("/v1/runs?status={long}"),
        format!("/v1/runs?{long}=1"),
        format!("/v1/runs/{long}/events?after={long}"),
        format!("/v1/nothing/{long}"),
    ];
    for uri in &uris {
        let r = call(&w.router, "GET", uri, Some("viewer"), None).await;
        assert!(r.status.is_client_error(), "{}", r.text);
        assert!(
            r.text.len() < 700,
            "{} bytes: {}",
            r.text.len(),
            &r.text[..200]
        );
        assert!(r.text.contains(" bytes)"), "{}", r.text);
    }
    let long = "x".repeat(10_000);
    for body in [
        json!({"pipeline": long, "release": "2.0.0"}),
        json!({"pipeline": "api", "release": long}),
        json!({"pipeline": "api", "release": "2.0.0", "stages": [long]}),
    ] {
        let w = world_with(ApiOptions::default());
        let r = start(&w.router, "alice", body).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            &r.text[..200]
        );
        assert!(r.text.len() < 700, "{} bytes", r.text.len());
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    use futures_util::StreamExt;
    let w = world_with(ApiOptions {
        request_timeout: Duration::from_millis(300),
        ..ApiOptions::default()
    });
    // Half a body, then nothing.
    let chunks = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"pipeline\": "))
    })
    .chain(futures_util::stream::pending());
    let req = Request::post("/v1/runs")
        .header(header::AUTHORIZATION, "Bearer rc_alice")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "100")
        .body(Body::from_stream(chunks))
        .unwrap();
    let r = w.router.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "request_timeout");
}

#[tokio::test]
async fn a_run_is_started_followed_to_its_end_and_shown_in_detail() {
    let w = world(generous());
    let r = start(&w.router, "ci", json!({"pipeline": "api", "release": "2.0.0", "stages": ["staging"], "params": {"jira_issue": "OPS-12"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let run = r.json();
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers[header::LOCATION], format!("/v1/runs/{id}"));
    assert_eq!(
        (run["started_by"].as_str(), run["config_hash"].as_str()),
        (Some("ci"), Some("cfg0123"))
    );
    let detail = until(&w.router, &id, &["succeeded", "failed", "rolled_back"]).await;
    assert_eq!(detail["run"]["status"], "succeeded", "{detail:#}");
    assert_eq!(detail["run"]["params"], json!({"jira_issue": "OPS-12"}));
    // The digests of the components its plugins came from, as recorded
    // when it started.
    let digests: serde_json::Map<String, serde_json::Value> = common::PLUGIN_DIGESTS
        .iter()
        .map(|(n, d)| (n.to_string(), json!(d)))
        .collect();
    assert_eq!(detail["plugins"], serde_json::Value::Object(digests));
    let stage = &detail["stages"][0];
    assert_eq!(
        (stage["name"].as_str(), stage["status"].as_str()),
        (Some("staging"), Some("succeeded"))
    );
    assert_eq!(stage["steps"].as_array().unwrap().len(), 4, "{stage:#}");
    assert_eq!(stage["steps"][1]["action"]["type"], "route", "{stage:#}");
    assert_eq!(
        stage["steps"][1]["action"]["weights"][0]["weight"], 50,
        "{stage:#}"
    );
    assert_eq!(
        stage["steps"][1]["outcome"],
        json!({"type": "ok"}),
        "{stage:#}"
    );
    let analysis = &stage["analyses"][0];
    assert_eq!(analysis["outcome"], "Passed");
    assert_eq!(analysis["measurements"][0]["check"], "error-rate");
    assert_eq!(analysis["measurements"][0]["verdict"], "pass");

    // The list filters by environment, pipeline and status.
    let q = |q: &str| {
        let router = w.router.clone();
        let uri = format!("/v1/runs?{q}");
        async move {
            call(&router, "GET", &uri, Some("viewer"), None)
                .await
                .json()["runs"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(q("environment=staging").await, 1);
    assert_eq!(q("environment=production").await, 0);
    assert_eq!(q("pipeline=api&status=succeeded&since=1h").await, 1);
    assert_eq!(q("status=failed").await, 0);

    // The plugin's calls are counted.
    let plugins = call(&w.router, "GET", "/v1/plugins", Some("viewer"), None)
        .await
        .json();
    assert_eq!(plugins[0]["id"], "error-rate");
    assert_eq!(plugins[0]["breaker"], "closed");
    assert_eq!(plugins[0]["calls"]["check"]["calls"], 1);
    // The environment shows what runs there and its last run.
    let env = call(
        &w.router,
        "GET",
        "/v1/environments/staging",
        Some("viewer"),
        None,
    )
    .await
    .json();
    assert_eq!(env["last_run"]["id"], id.as_str());
    assert_eq!(env["strategy"], "canary");
    let slots = &env["services"][0]["slots"];
    assert!(
        slots
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "2.0.0" && s["weight"] == 100),
        "{env:#}"
    );
    let envs = call(&w.router, "GET", "/v1/environments", Some("viewer"), None)
        .await
        .json();
    assert_eq!(envs.as_array().unwrap().len(), 3);
    let r = call(
        &w.router,
        "GET",
        "/v1/environments/prod",
        Some("viewer"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "no_such_environment".into())
    );
}

#[tokio::test]
async fn production_needs_an_approver_other_than_the_starter() {
    let w = world(generous());
    let id = started(
        &w.router,
        "alice",
        json!({"pipeline": "api", "release": "2.0.0"}),
    )
    .await;
    until(&w.router, &id, &["awaiting_approval"]).await;
    let approve = format!("/v1/runs/{id}/approve");
    // The starter, although admin, may not approve production.
    let r = call(&w.router, "POST", &approve, Some("alice"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "same_approver".into()),
        "{}",
        r.text
    );
    // A deployer may not approve at all.
    let r = call(&w.router, "POST", &approve, Some("ci"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(&w.router, "POST", &approve, Some("bob"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let detail = until(&w.router, &id, &["succeeded", "failed", "rolled_back"]).await;
    assert_eq!(detail["run"]["status"], "succeeded", "{detail:#}");
    assert_eq!(detail["stages"][1]["decisions"][0]["by"], "bob");
    // Approving a finished run is a conflict.
    let r = call(&w.router, "POST", &approve, Some("bob"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "finished".into())
    );
    // The audit trail: who did what, with which configuration.
    let audit = call(
        &w.router,
        "GET",
        &format!("/v1/audit?run={id}"),
        Some("viewer"),
        None,
    )
    .await
    .json();
    let lines: Vec<(String, String)> = audit["entries"]
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
        lines,
        [
            ("bob".into(), "approve".into()),
            ("alice".into(), "start".into())
        ]
    );
    assert_eq!(audit["entries"][0]["config_hash"], "cfg0123");
}

/// A phase of a run of `staging, production`, written into its log the
/// way the engine writes it (nothing drives these runs), with the run's
/// summary stage as it lagged behind before: `null` in the first stage,
/// `staging` well into production.
struct Phase {
    name: &'static str,
    /// `(kind, stage, data)` entries of the log.
    log: Vec<(&'static str, Option<&'static str>, Value)>,
    status: RunStatus,
    summary_stage: Option<&'static str>,
    /// The environment a decision acts in, from the log.
    acting: &'static str,
}

fn phases() -> Vec<Phase> {
    let started = ("run-started", None, json!({}));
    let stage_started = |s| ("stage-started", Some(s), json!({"stable": "1.0.0"}));
    let finished = |s, result| ("stage-finished", Some(s), json!({"result": result}));
    let waiting = |s| ("awaiting-approval", Some(s), json!({"gate": "stage"}));
    vec![
        Phase {
            name: "queued",
            log: vec![],
            status: RunStatus::Queued,
            summary_stage: None,
            acting: "staging",
        },
        Phase {
            name: "staging in progress",
            log: vec![started.clone(), stage_started("staging")],
            status: RunStatus::Running,
            summary_stage: None,
            acting: "staging",
        },
        Phase {
            name: "staging waiting for a person",
            log: vec![
                started.clone(),
                stage_started("staging"),
                waiting("staging"),
            ],
            status: RunStatus::AwaitingApproval,
            summary_stage: None,
            acting: "staging",
        },
        Phase {
            name: "production in progress",
            log: vec![
                started.clone(),
                stage_started("staging"),
                finished("staging", "succeeded"),
                stage_started("production"),
            ],
            status: RunStatus::Running,
            summary_stage: Some("staging"),
            acting: "production",
        },
        Phase {
            name: "production waiting for a person",
            log: vec![
                started.clone(),
                stage_started("staging"),
                finished("staging", "succeeded"),
                waiting("production"),
            ],
            status: RunStatus::AwaitingApproval,
            summary_stage: Some("staging"),
            acting: "production",
        },
        Phase {
            name: "rolled back in production",
            log: vec![
                started.clone(),
                stage_started("staging"),
                finished("staging", "succeeded"),
                stage_started("production"),
                finished("production", "rolled_back"),
            ],
            status: RunStatus::RolledBack,
            summary_stage: Some("staging"),
            acting: "production",
        },
        Phase {
            name: "failed in staging",
            log: vec![
                started.clone(),
                stage_started("staging"),
                finished("staging", "failed"),
            ],
            status: RunStatus::Failed,
            summary_stage: Some("production"),
            acting: "staging",
        },
    ]
}

/// A run of `api` by alice, in `phase`, held by another host that does
/// not move it (the world drives no run); its id.
async fn run_in(w: &World, phase: &Phase) -> String {
    let store = SqliteStore::open_as(
        &w.dir.path().join("rollcage.db"),
        rollcage_store::HostIdentity {
            name: "another-host".into(),
            lease: Duration::from_secs(600),
        },
    )
    .unwrap();
    let id = w
        .engine
        .create(rollcage_engine::run::RunRequest {
            pipeline: "api".into(),
            release: "2.0.0".into(),
            notes: None,
            params: vec![],
            stages: None,
            started_by: "alice".into(),
        })
        .await
        .unwrap();
    let lease = store.claim(Some(&id), 1).await.unwrap().remove(0);
    for (kind, stage, data) in &phase.log {
        store
            .append(&lease, kind, *stage, data.clone())
            .await
            .unwrap();
    }
    store
        .set_status(&lease, phase.status, phase.summary_stage, None)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn decisions_are_authorized_in_the_stage_the_log_shows_in_every_phase() {
    let w = idle_world();
    // (token, role, environments it is limited to; none: all)
    let tokens: [(&str, &str, &[&str]); 6] = [
        ("viewer", "viewer", &[]),
        ("sam", "approver", &["staging"]),
        ("bob", "approver", &["production"]),
        ("ci", "deployer", &["staging", "qa"]),
        ("dora", "deployer", &["production"]),
        ("alice", "admin", &[]),
    ];
    let mut checked = 0;
    for phase in phases() {
        for decision in ["approve", "abort", "retry", "rollback"] {
            for (token, role, envs) in tokens {
                let id = run_in(&w, &phase).await;
                // The environments the decision acts in: a retry runs
                // every stage again; the others act where the run is.
                let acts_in: Vec<&str> = match decision {
                    "retry" => vec!["staging", "production"],
                    _ => vec![phase.acting],
                };
                let role_ok = match decision {
                    "approve" | "abort" => matches!(role, "approver" | "admin"),
                    _ => matches!(role, "deployer" | "admin"),
                };
                let allowed = role == "admin"
                    || (role_ok && (envs.is_empty() || acts_in.iter().all(|e| envs.contains(e))));
                let r = call(
                    &w.router,
                    "POST",
                    &format!("/v1/runs/{id}/{decision}"),
                    Some(token),
                    None,
                )
                .await;
                let what = format!(
                    "{decision} by {token} ({role} {envs:?}) with the run {}",
                    phase.name
                );
                if !allowed {
                    assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
                    if role_ok {
                        let env = acts_in.iter().find(|e| !envs.contains(e)).unwrap();
                        assert!(
                            r.text
                                .contains(&format!("may not act in environment `{env}`")),
                            "{what}: {}",
                            r.text
                        );
                    }
                    continue;
                }
                // Allowed: whatever else is in the way is not a 403.
                let finished = phase.status.is_finished();
                let expected = match decision {
                    "approve" if finished => StatusCode::CONFLICT,
                    "approve" if phase.status != RunStatus::AwaitingApproval => {
                        StatusCode::CONFLICT
                    }
                    // alice started the run; production wants someone else.
                    "approve" if token == "alice" && phase.acting == "production" => {
                        StatusCode::FORBIDDEN
                    }
                    "abort" if finished => StatusCode::CONFLICT,
                    "approve" | "abort" => StatusCode::ACCEPTED,
                    "retry" if finished => StatusCode::ACCEPTED,
                    // No earlier successful run to go back to.
                    _ => StatusCode::CONFLICT,
                };
                assert_eq!(r.status, expected, "{what}: {}", r.text);
                if r.status == StatusCode::FORBIDDEN {
                    assert_eq!(r.code(), "same_approver", "{what}");
                }
                if r.status == StatusCode::ACCEPTED && decision != "retry" {
                    // The audit records the stage acted in.
                    let audit = call(
                        &w.router,
                        "GET",
                        &format!("/v1/audit?run={id}"),
                        Some("viewer"),
                        None,
                    )
                    .await
                    .json();
                    assert_eq!(audit["entries"][0]["action"], decision, "{what}");
                    assert_eq!(
                        audit["entries"][0]["detail"]["stage"], phase.acting,
                        "{what}"
                    );
                }
                checked += 1;
            }
        }
        // The API's `stage` is the one the log shows, not the summary.
        let id = run_in(&w, &phase).await;
        let r = call(
            &w.router,
            "GET",
            &format!("/v1/runs/{id}"),
            Some("viewer"),
            None,
        )
        .await;
        assert_eq!(r.json()["run"]["stage"], phase.acting, "{}", phase.name);
    }
    assert!(checked > 20, "{checked}");
}

#[tokio::test]
async fn failed_runs_are_retried_and_environments_rolled_back_to_the_previous_release() {
    let w = world(generous());
    let id = started(
        &w.router,
        "ci",
        json!({"pipeline": "flaky", "release": "2.0.0"}),
    )
    .await;
    let d = until(&w.router, &id, &["succeeded", "failed", "rolled_back"]).await;
    assert_eq!(d["run"]["status"], "rolled_back");
    assert_eq!(
        d["stages"][0]["rollback"].as_array().unwrap().len(),
        1,
        "{d:#}"
    );
    let r = call(
        &w.router,
        "POST",
        &format!("/v1/runs/{id}/retry"),
        Some("ci"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let retry = r.json();
    assert_eq!(retry["params"]["retry_of"], id.as_str());
    assert_eq!(retry["release"], "2.0.0");
    until(&w.router, retry["id"].as_str().unwrap(), &["rolled_back"]).await;

    // Two releases through staging, then back to the first.
    let mut ids = Vec::new();
    for release in ["1.1.0", "1.2.0"] {
        let id = started(
            &w.router,
            "ci",
            json!({"pipeline": "api", "release": release, "stages": ["staging"]}),
        )
        .await;
        until(&w.router, &id, &["succeeded"]).await;
        ids.push(id);
    }
    let rollback = format!("/v1/runs/{}/rollback", ids[1]);
    let r = call(&w.router, "POST", &rollback, Some("viewer"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &w.router,
        "POST",
        &rollback,
        Some("ci"),
        Some(r#"{"environment": "production"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = call(
        &w.router,
        "POST",
        &rollback,
        Some("alice"),
        Some(r#"{"environment": "production"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.text
            .contains("did not go through environment `production`"),
        "{}",
        r.text
    );
    let r = call(&w.router, "POST", &rollback, Some("ci"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let back = r.json();
    assert_eq!(
        (back["release"].as_str(), back["stages"].clone()),
        (Some("1.1.0"), json!(["staging"]))
    );
    assert_eq!(back["params"]["rollback_of"], ids[1].as_str());
    until(&w.router, back["id"].as_str().unwrap(), &["succeeded"]).await;
    // The first release has nothing before it.
    let r = call(
        &w.router,
        "POST",
        &format!("/v1/runs/{}/rollback", ids[0]),
        Some("ci"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "no_previous_release".into()),
        "{}",
        r.text
    );
    // A succeeded run is not retried.
    let r = call(
        &w.router,
        "POST",
        &format!("/v1/runs/{}/retry", ids[0]),
        Some("ci"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

/// The event stream of run `id` from after `last`, to its end.
async fn sse(router: &Router, id: &str, last: Option<u64>) -> (axum::http::HeaderMap, String) {
    let mut req = Request::get(format!("/v1/runs/{id}/events"))
        .header(header::AUTHORIZATION, "Bearer rc_viewer")
        .header(header::ACCEPT, "text/event-stream");
    if let Some(n) = last {
        req = req.header("Last-Event-ID", n.to_string());
    }
    let r = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let headers = r.headers().clone();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// `(id, event, data)` of each SSE event in `text`.
fn sse_events(text: &str) -> Vec<(Option<u64>, String, String)> {
    text.split("\n\n")
        .filter(|b| b.lines().any(|l| l.starts_with("event:")))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            (
                field("id:").and_then(|v| v.parse().ok()),
                field("event:").unwrap_or_default(),
                field("data:").unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_event_stream_sends_the_whole_log_and_resumes_after_last_event_id() {
    let w = world(generous());
    let id = started(
        &w.router,
        "ci",
        json!({"pipeline": "api", "release": "2.0.0", "stages": ["staging"]}),
    )
    .await;
    // Follow from the start while it runs: the stream ends by itself.
    let (headers, text) = sse(&w.router, &id, None).await;
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let all = sse_events(&text);
    let (last, rest) = all.split_last().unwrap();
    assert_eq!(
        (last.1.as_str(), last.2.as_str()),
        ("end", r#"{"reason":null,"status":"succeeded"}"#)
    );
    let seqs: Vec<u64> = rest.iter().map(|e| e.0.unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless, in order"
    );
    assert_eq!(rest[0].1, "run-started");
    assert!(rest.iter().any(|e| e.1 == "analysis"));
    // Resume after the fifth.
    let (_, text) = sse(&w.router, &id, Some(5)).await;
    let resumed = sse_events(&text);
    assert_eq!(resumed.first().unwrap().0, Some(6));
    assert_eq!(resumed.len(), all.len() - 5);
    // Without `Accept: text/event-stream`: the log so far as JSON.
    let log = call(
        &w.router,
        "GET",
        &format!("/v1/runs/{id}/events?after=2"),
        Some("viewer"),
        None,
    )
    .await
    .json();
    assert_eq!(log.as_array().unwrap().len(), all.len() - 3);
    assert_eq!(log[0]["seq"], 3);
    let r = call(
        &w.router,
        "GET",
        &format!("/v1/runs/{id}/events?after=x"),
        Some("viewer"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = call(
        &w.router,
        "GET",
        "/v1/runs/nope/events",
        Some("viewer"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tokens_are_rate_limited_one_by_one() {
    let w = world(RateSettings {
        per_second: 1,
        burst: 2,
    });
    for _ in 0..2 {
        assert_eq!(
            call(&w.router, "GET", "/v1/runs", Some("viewer"), None)
                .await
                .status,
            StatusCode::OK
        );
    }
    let r = call(&w.router, "GET", "/v1/runs", Some("viewer"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    // Another token is not affected.
    assert_eq!(
        call(&w.router, "GET", "/v1/runs", Some("alice"), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_the_document_lists_every_route() {
    let w = world(generous());
    call(&w.router, "GET", "/v1/runs/r1", Some("viewer"), None).await;
    call(&w.router, "GET", "/v1/runs/r2", Some("viewer"), None).await;
    call(&w.router, "GET", "/nowhere", None, None).await;
    let text = call(&w.router, "GET", "/metrics", None, None).await.text;
    assert!(
        text.contains(
            "http_requests_total{method=\"GET\",route=\"/v1/runs/{id}\",status=\"404\"} 2\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("rollcage_plugin_breaker_open{plugin=\"error-rate\"} 0"),
        "{text}"
    );

    let doc = call(&w.router, "GET", "/v1/openapi.json", None, None)
        .await
        .json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "/healthz",
        "/metrics",
        "/readyz",
        "/v1/audit",
        "/v1/environments",
        "/v1/environments/{name}",
        "/v1/hooks/alertmanager",
        "/v1/plugins",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/abort",
        "/v1/runs/{id}/approve",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/retry",
        "/v1/runs/{id}/rollback",
    ];
    assert_eq!(paths, expected);
    // Every documented route answers (not a 404 of the router, nor 405).
    for path in expected {
        let concrete = path.replace("{id}", "nope").replace("{name}", "nope");
        let methods = doc["paths"][path].as_object().unwrap();
        for method in methods.keys() {
            let r = call(
                &w.router,
                &method.to_uppercase(),
                &concrete,
                Some("alice"),
                None,
            )
            .await;
            assert!(
                r.code() != "not_found" && r.status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {}",
                r.text
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_document_lists_every_status_a_route_answers_and_the_bounds_it_takes() {
    let w = world(generous());
    let doc = call(&w.router, "GET", "/v1/openapi.json", None, None)
        .await
        .json();
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
            let mut needed = vec![];
            if op.get("security").is_some() {
                needed.extend(["401", "429", "500"]);
            }
            if op.get("requestBody").is_some() {
                needed.extend(["400", "408", "413", "415", "422"]);
            }
            if path.contains('{') {
                needed.extend(["400", "404"]);
            }
            for status in needed {
                assert!(
                    statuses.contains(&status),
                    "{method} {path}: no {status} in {statuses:?}"
                );
            }
            for (status, r) in responses {
                // (a 503 of /readyz is its health report, by design)
                if status.starts_with('4') || status == "500" {
                    assert_eq!(
                        r["content"]["application/json"]["schema"], error,
                        "{method} {path} {status}"
                    );
                }
            }
            if statuses.contains(&"429") {
                assert!(
                    responses["429"]["headers"].get("Retry-After").is_some(),
                    "{method} {path}"
                );
            }
        }
    }
    // `details` is there only sometimes.
    let detail = &doc["components"]["schemas"]["ErrorDetail"];
    let required: Vec<&str> = detail["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["code", "message"]);
    // `limit` is bounded as the server bounds it.
    for path in ["/v1/runs", "/v1/audit"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
            (&json!(1), &json!(500)),
            "{path}: {limit}"
        );
    }
    // A missing `details` is left out, not `null`.
    let r = call(&w.router, "GET", "/v1/runs/nope", Some("viewer"), None).await;
    assert!(r.json()["error"].get("details").is_none(), "{}", r.text);
}

#[tokio::test]
async fn unfinished_runs_are_bounded_per_pipeline_and_per_host() {
    let w = world_with(ApiOptions {
        max_runs: 2,
        max_runs_per_pipeline: 1,
        ..ApiOptions::default()
    });
    // Waits for production's approval: unfinished.
    let first = started(
        &w.router,
        "alice",
        json!({"pipeline": "api", "release": "2.0.0"}),
    )
    .await;
    until(&w.router, &first, &["awaiting_approval"]).await;
    let r = start(
        &w.router,
        "alice",
        json!({"pipeline": "api", "release": "2.1.0"}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_runs".into()),
        "{}",
        r.text
    );
    assert!(r.text.contains("max_runs_per_pipeline"), "{}", r.text);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    // Another pipeline has room of its own.
    let second = started(
        &w.router,
        "alice",
        json!({"pipeline": "flaky", "release": "2.0.0"}),
    )
    .await;
    until(&w.router, &second, &["rolled_back", "failed"]).await;
    // Once the first is decided and finished, there is room again.
    let r = call(
        &w.router,
        "POST",
        &format!("/v1/runs/{first}/approve"),
        Some("bob"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    until(&w.router, &first, &["succeeded"]).await;
    for _ in 0..100 {
        if w.api.active_runs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started(
        &w.router,
        "alice",
        json!({"pipeline": "api", "release": "2.1.0"}),
    )
    .await;

    // A host full of runs takes none, whatever the pipeline.
    let w = world_with(ApiOptions {
        max_runs: 1,
        ..ApiOptions::default()
    });
    let first = started(
        &w.router,
        "alice",
        json!({"pipeline": "api", "release": "2.0.0"}),
    )
    .await;
    until(&w.router, &first, &["awaiting_approval"]).await;
    let r = start(
        &w.router,
        "alice",
        json!({"pipeline": "flaky", "release": "2.0.0"}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_runs".into()),
        "{}",
        r.text
    );
    assert!(r.text.contains("[server.api] max_runs)"), "{}", r.text);
    // Retries and rollbacks start runs too.
    let r = call(
        &w.router,
        "POST",
        &format!("/v1/runs/{first}/retry"),
        Some("alice"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
}

#[tokio::test]
async fn live_streams_are_bounded_per_token() {
    let w = world_with(ApiOptions {
        streams_per_token: 1,
        event_poll: Duration::from_millis(50),
        ..ApiOptions::default()
    });
    let id = w
        .engine
        .create(rollcage_engine::run::RunRequest {
            pipeline: "api".into(),
            release: "2.0.0".into(),
            notes: None,
            params: vec![],
            stages: None,
            started_by: "alice".into(),
        })
        .await
        .unwrap();
    let open = |token: &str| {
        Request::get(format!("/v1/runs/{id}/events"))
            .header(header::AUTHORIZATION, format!("Bearer rc_{token}"))
            .header(header::ACCEPT, "text/event-stream")
            .body(Body::empty())
            .unwrap()
    };
    // Open, never finished (nothing drives the run): held.
    let first = w.router.clone().oneshot(open("viewer")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = w.router.clone().oneshot(open("viewer")).await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another token has its own.
    let other = w.router.clone().oneshot(open("alice")).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // A client that goes gives its stream back.
    drop(first);
    let again = w.router.clone().oneshot(open("viewer")).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn stopping_leaves_runs_resumable_and_readiness_fails() {
    let w = world(generous());
    let id = started(
        &w.router,
        "alice",
        json!({"pipeline": "api", "release": "2.0.0"}),
    )
    .await;
    until(&w.router, &id, &["awaiting_approval"]).await;
    assert_eq!(w.api.active_runs(), 1);
    w.api.stop_runs().await;
    assert_eq!(w.api.active_runs(), 0);
    let r = call(&w.router, "GET", "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["checks"]["host"], "stopping");
    // The run is still unfinished in the store: the next host resumes it.
    let d = call(
        &w.router,
        "GET",
        &format!("/v1/runs/{id}"),
        Some("viewer"),
        None,
    )
    .await
    .json();
    assert_eq!(d["run"]["status"], "awaiting_approval");
}
