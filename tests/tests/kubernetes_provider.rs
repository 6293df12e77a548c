//! `builtin:kubernetes` called through the runtime, one call at a time,
//! against the Kubernetes API stand-in: the rules a provider must keep
//! that no strategy would ever test (they guard against other tools' bugs).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rollcage_core::*;
use rollcage_kube_standin::StandIn;
use rollcage_runtime::{Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions, TlsCa};
use serde_json::json;

fn standin() -> &'static StandIn {
    static S: OnceLock<StandIn> = OnceLock::new();
    S.get_or_init(StandIn::start)
}

/// The provider for `namespace`, with `traffic` settings and `token`.
fn provider(
    namespace: &str,
    traffic: serde_json::Value,
    token: &str,
) -> Arc<dyn EnvironmentProvider> {
    let s = standin();
    let secrets = MapSecrets(BTreeMap::from([
        ("KUBE_TOKEN".to_string(), token.to_string()),
        ("KUBE_CA".to_string(), s.ca_pem.clone()),
    ]));
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: false,
        secrets: Arc::new(secrets),
    })
    .unwrap();
    let mut config = json!({"api_url": s.url, "token_secret": "KUBE_TOKEN", "namespace": namespace,
        "attempts": 2, "timeout_ms": 5000});
    for (k, v) in traffic.as_object().unwrap() {
        config[k] = v.clone();
    }
    let spec = PluginSpec {
        id: "cluster".parse().unwrap(),
        kind: PluginKind::EnvironmentProvider,
        source_name: "builtin:kubernetes".into(),
        grants: Grants {
            allow_hosts: vec![format!("127.0.0.1:{}", s.port).parse().unwrap()],
            secrets: vec!["KUBE_TOKEN".into()],
            tls_ca: Some(TlsCa::Secret("KUBE_CA".into())),
            ..Grants::default()
        },
        limits: Limits {
            timeout_ms: 30_000,
            ..Limits::default()
        },
        config_json: config.to_string(),
    };
    let plugin = rt
        .load(spec, rollcage_builtins::get("kubernetes").unwrap().wasm)
        .unwrap();
    plugin.environment_provider().unwrap()
}

fn target() -> Target {
    Target {
        environment: "production".into(),
        service: "web".into(),
        service_spec: json!({"image": "registry.example/web:{release}", "port": 8080}).to_string(),
    }
}

fn slot(name: &str, version: &str, replicas: u32) -> SlotSpec {
    SlotSpec {
        name: name.into(),
        release: Release::new(version),
        replicas,
    }
}

fn weights(w: &[(&str, u32)]) -> Vec<RouteWeight> {
    w.iter()
        .map(|(slot, weight)| RouteWeight {
            slot: slot.to_string(),
            weight: *weight,
        })
        .collect()
}

async fn ready(p: &Arc<dyn EnvironmentProvider>, slot: &str, n: u32) -> EnvironmentStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = p.status(&target()).await.unwrap();
        if status.slots.iter().any(|s| s.name == slot && s.ready >= n) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{slot} never got {n} ready: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn weight_goes_only_to_ready_slots_and_a_slot_with_weight_stays() {
    let s = standin();
    let ns = "rules";
    s.create_namespace(ns);
    let p = provider(
        ns,
        json!({"traffic": "gateway-api", "http_route": "web"}),
        &s.token,
    );
    let t = target();

    // No HTTPRoute: prepare says what to create.
    let err = p.prepare(&t).await.unwrap_err().to_string();
    assert!(
        err.contains("HTTPRoute `web` does not exist in namespace `rules`"),
        "{err}"
    );
    s.seed(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "other", "port": 80}]}]}}));
    p.prepare(&t).await.unwrap();

    p.apply_slot(&t, &slot("stable", "1.0.0", 2)).await.unwrap();
    ready(&p, "stable", 2).await;
    p.route(&t, &weights(&[("stable", 100)])).await.unwrap();

    // A crash-looping canary is reported, not an error (before its deadline),
    // and gets no traffic.
    p.apply_slot(&t, &slot("canary", "1.1.0-crashloop", 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = p.status(&t).await.unwrap();
    let canary = status.slots.iter().find(|s| s.name == "canary").unwrap();
    assert_eq!((canary.desired, canary.ready), (1, 0));
    assert!(canary.endpoints.is_empty());
    let err = p
        .route(&t, &weights(&[("stable", 90), ("canary", 10)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("slot `canary` has no ready pod of release 1.1.0-crashloop"),
        "{err}"
    );

    // A slot with weight is never removed.
    let err = p.remove_slot(&t, "stable").await.unwrap_err().to_string();
    assert!(
        err.contains("slot `stable` still receives 100% of the traffic"),
        "{err}"
    );
    assert!(s.get("deployments", ns, "web-stable").is_some());

    // Weights are read from the cluster, not remembered: an edit by hand shows.
    s.edit("httproutes", ns, "web", |r| {
        r["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(60);
    });
    let status = p.status(&t).await.unwrap();
    assert_eq!(status.weights, weights(&[("stable", 60)]));
    // The foreign backendRef was never touched.
    let route = s.get("httproutes", ns, "web").unwrap();
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0],
        json!({"name": "other", "port": 80})
    );

    // Removing a slot without weight drops its objects and backendRef; again is fine.
    p.remove_slot(&t, "canary").await.unwrap();
    assert!(s.get("deployments", ns, "web-canary").is_none());
    assert!(s.get("services", ns, "web-canary").is_none());
    p.remove_slot(&t, "canary").await.unwrap();
}

#[tokio::test]
async fn what_is_not_rollcages_is_left_alone() {
    let s = standin();
    let ns = "foreign";
    s.create_namespace(ns);
    s.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web-blue", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:0"}]}}}}));
    let p = provider(ns, json!({"traffic": "service-selector"}), &s.token);
    let t = target();
    let err = p
        .apply_slot(&t, &slot("blue", "1.0.0", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("deployments `web-blue` in namespace `foreign` exists and is not Rollcage's"),
        "{err}"
    );
    let err = p.remove_slot(&t, "blue").await.unwrap_err().to_string();
    assert!(err.contains("is not Rollcage's"), "{err}");
    assert_eq!(
        s.history("deployments", ns, "web-blue")
            .iter()
            .filter(|v| v.is_some())
            .count(),
        s.history("deployments", ns, "web-blue").len()
    );
    let d = s.get("deployments", ns, "web-blue").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:0"
    );

    // service-selector sends everything to one slot: a split is refused.
    for colour in ["green", "red"] {
        p.apply_slot(&t, &slot(colour, "1.0.0", 1)).await.unwrap();
        ready(&p, colour, 1).await;
    }
    let err = p
        .route(&t, &weights(&[("green", 50), ("red", 50)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot split green=50, red=50"), "{err}");
    p.route(&t, &weights(&[("green", 100), ("red", 0)]))
        .await
        .unwrap();
    let front = s.get("services", ns, "web").unwrap();
    assert_eq!(front["spec"]["selector"]["rollcage.dev/slot"], "green");
    let status = p.status(&t).await.unwrap();
    assert_eq!(status.weights, weights(&[("green", 100), ("red", 0)]));
}

#[tokio::test]
async fn a_refused_token_is_named_without_its_value() {
    let s = standin();
    let p = provider("default", json!({"traffic": "replicas"}), "not-the-token");
    let err = p.status(&target()).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "refused the token (401 Unauthorized) for list deployments in namespace `default`"
        ),
        "{err}"
    );
    assert!(!err.contains("not-the-token"), "{err}");
    let _ = s;
}

#[tokio::test]
async fn replicas_traffic_splits_only_as_the_replica_counts_do() {
    let s = standin();
    let ns = "replicas";
    s.create_namespace(ns);
    let p = provider(ns, json!({"traffic": "replicas"}), &s.token);
    let t = target();
    p.apply_slot(&t, &slot("stable", "1.0.0", 3)).await.unwrap();
    p.apply_slot(&t, &slot("canary", "1.1.0", 1)).await.unwrap();
    ready(&p, "stable", 3).await;
    ready(&p, "canary", 1).await;
    let err = p
        .route(&t, &weights(&[("stable", 90), ("canary", 10)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("splits traffic by replica counts (canary=1, stable=3): it cannot represent stable=90, canary=10"),
        "{err}"
    );
    p.route(&t, &weights(&[("stable", 75), ("canary", 25)]))
        .await
        .unwrap();
    // The front Service selects every slot of the service; the split is
    // what the ready pods make it.
    let front = s.get("services", ns, "web").unwrap();
    assert_eq!(
        front["spec"]["selector"],
        json!({"rollcage.dev/service": "web"})
    );
    let status = p.status(&t).await.unwrap();
    assert_eq!(status.weights, weights(&[("canary", 25), ("stable", 75)]));
}

#[tokio::test]
async fn a_forbidden_call_names_the_rule_to_add() {
    let s = standin();
    let ns = "forbidden";
    s.create_namespace(ns);
    s.deny(ns, "patch", "deployments");
    let p = provider(ns, json!({"traffic": "service-selector"}), &s.token);
    let err = p
        .apply_slot(&target(), &slot("blue", "1.0.0", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the token may not patch deployments in namespace `forbidden` (403 Forbidden"),
        "{err}"
    );
    assert!(
        err.contains(r#"add this rule to the Role bound to it: {apiGroups: ["apps"], resources: ["deployments"], verbs: ["patch"]}"#),
        "{err}"
    );
    assert!(s.list("deployments", ns).is_empty());
}

#[tokio::test]
async fn prepare_refuses_a_route_no_gateway_accepted() {
    let s = standin();
    let ns = "unaccepted";
    s.create_namespace(ns);
    s.seed(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"parentRefs": [{"name": "missing-gateway"}], "rules": [{}]}}),
    );
    let p = provider(
        ns,
        json!({"traffic": "gateway-api", "http_route": "web"}),
        &s.token,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        // The gateway answers in its own time.
        match p.prepare(&target()).await {
            Err(e) => break e.to_string(),
            Ok(()) => {
                assert!(
                    Instant::now() < deadline,
                    "prepare kept accepting the route"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        err.contains("HTTPRoute `web` in namespace `unaccepted` is not accepted by its Gateway: parent `missing-gateway`: NoMatchingParent"),
        "{err}"
    );
}
