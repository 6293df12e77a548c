//! `tls_ca`: a plugin's HTTPS trusts a private certificate authority beside
//! the public roots, read from a PEM file or a secret, and still verifies
//! the certificate for the host name it asked for.

use std::collections::BTreeMap;
use std::sync::Arc;

use http_body_util::BodyExt;
use rollcage_core::{CheckTarget, PluginKind, Verdict};
use rollcage_kube_standin::pki::{ServerCert, TestCa};
use rollcage_kube_standin::tls::spawn_https;
use rollcage_runtime::{
    Grants, Limits, LoadError, LoadedPlugin, MapSecrets, PluginSpec, Runtime, RuntimeOptions, TlsCa,
};

/// An HTTPS server on 127.0.0.1 presenting `cert`, answering 200.
async fn https_server(cert: &ServerCert) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    spawn_https(listener, cert.server_config(), |_req| async {
        http::Response::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed(),
        )
    });
    port
}

fn runtime(secrets: &[(&str, &str)]) -> Runtime {
    let secrets = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: false,
        secrets: Arc::new(MapSecrets(secrets)),
    })
    .unwrap()
}

/// `builtin:http` allowed to reach localhost:`port`, trusting `tls_ca`.
fn http_check(
    rt: &Runtime,
    port: u16,
    tls_ca: Option<TlsCa>,
) -> Result<Arc<LoadedPlugin>, LoadError> {
    let spec = PluginSpec {
        id: "healthz".parse().unwrap(),
        kind: PluginKind::HealthCheck,
        source_name: "builtin:http".into(),
        grants: Grants {
            allow_hosts: vec![format!("localhost:{port}").parse().unwrap()],
            allow_private: vec!["127.0.0.1".parse().unwrap()],
            tls_ca,
            ..Grants::default()
        },
        limits: Limits::default(),
        config_json: r#"{"url": "https://{endpoint}/healthz"}"#.into(),
    };
    rt.load(spec, rollcage_builtins::get("http").unwrap().wasm)
}

async fn probe(plugin: &Arc<LoadedPlugin>, port: u16) -> (Verdict, String) {
    let target = CheckTarget {
        slot: "canary".into(),
        endpoints: vec![format!("localhost:{port}")],
        ..CheckTarget::default()
    };
    let m = plugin.health_check().unwrap().check(&target).await.unwrap();
    (m.verdict, m.detail)
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_granted() {
    let ca = TestCa::new("cluster CA");
    let port = https_server(&ca.issue(&["localhost"])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let rt = runtime(&[("CLUSTER_CA", &ca.cert_pem)]);

    // The public roots alone do not know the cluster's CA.
    let plugin = http_check(&rt, port, None).unwrap();
    let (verdict, detail) = probe(&plugin, port).await;
    assert_eq!(verdict, Verdict::Fail, "{detail}");
    assert!(
        detail.contains("TLS failed: the certificate is not trusted"),
        "{detail}"
    );

    // Granted as a file, then as a secret: the same server is trusted.
    for ca in [
        TlsCa::File(ca_file.clone()),
        TlsCa::Secret("CLUSTER_CA".into()),
    ] {
        let plugin = http_check(&rt, port, Some(ca.clone())).unwrap();
        let (verdict, detail) = probe(&plugin, port).await;
        assert_eq!(verdict, Verdict::Pass, "{ca}: {detail}");
    }

    // Another CA's certificate does not make this server trusted.
    let other = TestCa::new("another CA");
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, &other.cert_pem).unwrap();
    let plugin = http_check(&rt, port, Some(TlsCa::File(other_file))).unwrap();
    let (verdict, detail) = probe(&plugin, port).await;
    assert_eq!(verdict, Verdict::Fail, "{detail}");
}

#[tokio::test]
async fn the_certificate_is_verified_for_the_host_name() {
    let ca = TestCa::new("cluster CA");
    // Signed by the trusted CA, but for another name than the one asked for.
    let port = https_server(&ca.issue(&["kubernetes.default.svc"])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let rt = runtime(&[]);
    let plugin = http_check(&rt, port, Some(TlsCa::File(ca_file))).unwrap();
    let (verdict, detail) = probe(&plugin, port).await;
    assert_eq!(verdict, Verdict::Fail, "{detail}");
}

#[tokio::test]
async fn a_tls_ca_that_cannot_be_read_fails_the_load_naming_plugin_and_grant() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.pem");
    let cert = TestCa::new("x").issue(&["localhost"]);
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    let rt = runtime(&[]);
    let cases = [
        (TlsCa::File(dir.path().join("missing.pem")), "No such file"),
        (TlsCa::File(key_file), "no PEM certificate"),
        (TlsCa::Secret("NOT_THERE".into()), "no such secret"),
    ];
    for (ca, expected) in cases {
        let err = http_check(&rt, 443, Some(ca.clone()))
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(matches!(err, LoadError::TlsCa { .. }), "{text}");
        assert!(
            text.starts_with("plugin `healthz` (builtin:http): tls_ca ("),
            "{text}"
        );
        assert!(text.contains(expected), "{ca}: {text}");
        // The key's text is never quoted.
        let key_line = cert.key_pem.lines().nth(1).unwrap();
        assert!(!text.contains(key_line), "{text}");
    }
}
