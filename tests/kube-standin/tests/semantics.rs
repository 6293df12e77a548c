//! What kubectl cannot be made to send: the stand-in's answers to raw
//! requests, over HTTPS with its CA.

use std::sync::Arc;

use rollcage_kube_standin::StandIn;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request over TLS trusting the stand-in's CA: status, body.
async fn request(
    s: &StandIn,
    method: &str,
    path: &str,
    content_type: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(s.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn deployment(replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_servers_rules_hold_for_raw_requests() {
    let s = tokio::task::spawn_blocking(StandIn::start).await.unwrap();
    let t = Some(s.token.as_str());
    let path = "/apis/apps/v1/namespaces/default/deployments/api";
    let json = "application/json";
    let apply = "application/apply-patch+yaml";

    // No token, or another one: 401 with a Status.
    let (code, status) = request(&s, "GET", path, json, None, &Value::Null).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (code, _) = request(&s, "GET", path, json, Some("nope"), &Value::Null).await;
    assert_eq!(code, 401);

    // Apply without a field manager is Invalid; with one it creates.
    let (code, status) = request(&s, "PATCH", path, apply, t, &deployment(2)).await;
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager: Required value")
    );
    let with = format!("{path}?fieldManager=ci");
    let (code, created) = request(&s, "PATCH", &with, apply, t, &deployment(2)).await;
    assert_eq!(code, 200, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    let rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The same apply again changes nothing: same version, same generation.
    let (_, again) = request(&s, "PATCH", &with, apply, t, &deployment(2)).await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // A status write touches status only, and never the generation.
    let mut status_update = created.clone();
    status_update["status"] = json!({"observedGeneration": 1, "replicas": 7});
    status_update["spec"]["replicas"] = json!(9);
    let (code, after) = request(
        &s,
        "PUT",
        &format!("{path}/status"),
        json,
        t,
        &status_update,
    )
    .await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["spec"]["replicas"], 2);
    assert_eq!(after["metadata"]["generation"], 1);
    let rv2: u64 = after["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv, "one global, growing resourceVersion");

    // JSON patch with a failing test is refused; a good one bumps the generation.
    let ops = json!([{"op": "test", "path": "/spec/replicas", "value": 5}, {"op": "replace", "path": "/spec/replicas", "value": 3}]);
    let (code, _) = request(&s, "PATCH", path, "application/json-patch+json", t, &ops).await;
    assert_eq!(code, 422);
    let ops = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]);
    let (code, patched) = request(&s, "PATCH", path, "application/json-patch+json", t, &ops).await;
    assert_eq!(code, 200);
    assert_eq!(patched["metadata"]["generation"], 2);

    // The JSON patch took `spec.replicas` from `ci` (its manager, without
    // a field manager or user agent, is `unknown`): another manager's
    // apply of it conflicts unless forced.
    let other = format!("{path}?fieldManager=autoscaler");
    let mut scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"replicas": 5}});
    let (code, status) = request(&s, "PATCH", &other, apply, t, &scale).await;
    assert_eq!(code, 409, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"unknown\": .spec.replicas"),
        "{status}"
    );
    let (code, forced) = request(
        &s,
        "PATCH",
        &format!("{other}&force=true"),
        apply,
        t,
        &scale,
    )
    .await;
    assert_eq!((code, forced["spec"]["replicas"].as_u64()), (200, Some(5)));
    scale["metadata"]["name"] = json!("other");
    let (code, _) = request(&s, "PATCH", &other, apply, t, &scale).await;
    assert_eq!(code, 400, "the name in the body must be the URL's");

    // Not found is a Status with the resource named as the API does.
    let (code, status) = request(
        &s,
        "DELETE",
        "/apis/apps/v1/namespaces/default/deployments/none",
        json,
        t,
        &Value::Null,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(status["message"], "deployments.apps \"none\" not found");
    tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
}
