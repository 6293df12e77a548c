//! The engine the API's tests drive: plain Rust fakes over a real SQLite
//! store. `staging` and `production` pass their analysis, `production`
//! needs an approval, `qa` fails; pipelines `api` (staging → production)
//! and `flaky` (qa). Each test file is its own crate and uses only some of
//! this.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use rollcage_api::{PluginEntry, Role, TokenEntry, hash_token};
use rollcage_core::{Action, AnalysisRequest, HealthCheck, Verdict};
use rollcage_engine::analysis::AnalysisSpec;
use rollcage_engine::breaker::{Breaker, BreakerConfig, guard_check};
use rollcage_engine::fakes::{FakeProvider, PlanStrategy, apply, route};
use rollcage_engine::run::{Engine, EnvironmentPlan, PipelinePlan};
use rollcage_notify::Dispatcher;
use rollcage_store::{SqliteStore, Store};
use tower::ServiceExt;

/// A canary from 1.0.0 to 2.0.0: half, an analysis, all; back to 1.0.0
/// on a rollback.
pub fn strategy() -> Arc<PlanStrategy> {
    Arc::new(PlanStrategy {
        id: "canary".parse().unwrap(),
        plan: vec![
            apply("2.0.0", "2.0.0", 1),
            route(&[("2.0.0", 50), ("1.0.0", 50)]),
            Action::Analyze(AnalysisRequest {
                checks: vec![],
                slot: "2.0.0".into(),
            }),
            route(&[("2.0.0", 100)]),
        ],
        rollback: vec![route(&[("1.0.0", 100)])],
    })
}

/// The circuit breaker of the `error-rate` check.
pub fn breaker() -> Arc<Breaker> {
    Breaker::new("error-rate".parse().unwrap(), BreakerConfig::default())
}

/// An engine over `dir`'s database. `check` makes each environment's
/// `error-rate` check from the verdict it answers; `production` also wants
/// its approver to differ from the starter when `different_approver`.
pub fn engine(
    dir: &std::path::Path,
    breaker: &Arc<Breaker>,
    check: impl Fn(Verdict) -> Arc<dyn HealthCheck>,
    different_approver: bool,
) -> Arc<Engine> {
    let mut envs = Vec::new();
    for (name, verdict) in [
        ("staging", Verdict::Pass),
        ("production", Verdict::Pass),
        ("qa", Verdict::Fail),
    ] {
        envs.push(EnvironmentPlan {
            name: name.into(),
            provider: Arc::new(FakeProvider::running("1.0.0", "1.0.0", 2)),
            strategy: strategy(),
            strategy_params: "{}".into(),
            checks: BTreeMap::from([(
                "error-rate".to_string(),
                guard_check(check(verdict), breaker),
            )]),
            default_checks: vec!["error-rate".into()],
            analysis: AnalysisSpec {
                interval: Duration::ZERO,
                count: 1,
                ..AnalysisSpec::default()
            },
            replicas: 2,
            progress_deadline: Duration::from_secs(10),
            readiness_poll: Duration::from_millis(10),
            approval: name == "production",
            require_different_approver: different_approver && name == "production",
            window: None,
            refuse_outside_window: false,
            refuse_when_busy: false,
            pre_jobs: vec![],
            post_jobs: vec![],
            bake: None,
            notify: Dispatcher::default(),
            exposures: Default::default(),
            exposure: None,
            settle: std::time::Duration::ZERO,
        });
    }
    let pipeline = |name: &str, stages: &[&str]| PipelinePlan {
        name: name.into(),
        stages: stages.iter().map(|s| s.to_string()).collect(),
        service: "api".into(),
        service_spec: "{}".into(),
        notify: Dispatcher::default(),
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("rollcage.db")).unwrap());
    Arc::new(
        Engine::new(
            store,
            envs,
            vec![
                pipeline("api", &["staging", "production"]),
                pipeline("flaky", &["qa"]),
            ],
            "cfg0123".into(),
        )
        .with_plugin_digests(
            PLUGIN_DIGESTS
                .iter()
                .map(|(n, d)| (n.to_string(), d.to_string()))
                .collect(),
        ),
    )
}

/// The components the test engine says its plugins were loaded from.
pub const PLUGIN_DIGESTS: [(&str, &str); 2] = [
    (
        "canary",
        "sha256:c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00",
    ),
    (
        "platform",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
];

/// A token named `name` whose secret is `rc_{name}`.
pub fn token(name: &str, role: Role, environments: &[&str]) -> TokenEntry {
    TokenEntry::new(
        name,
        &hash_token(&format!("rc_{name}")),
        role,
        environments.iter().map(|e| e.to_string()).collect(),
    )
    .unwrap()
}

/// The plugins the API lists: the `error-rate` check behind `breaker`.
pub fn plugins(breaker: Arc<Breaker>) -> Vec<PluginEntry> {
    vec![PluginEntry {
        id: "error-rate".into(),
        kind: "health-check".into(),
        component: "builtin:prometheus".into(),
        allow_hosts: vec!["127.0.0.1:9090".into()],
        secrets: vec![],
        memory_mb: 64,
        timeout_ms: 5000,
        breaker,
    }]
}

/// What the router answered, its body as text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

/// `req` through `router`, without a socket.
pub async fn send(router: &Router, req: Request<Body>) -> Answer {
    let r = router.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
