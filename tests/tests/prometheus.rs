//! The `prometheus` health check against a real Prometheus server (Debian's
//! `prometheus`, started here on loopback) scraping a real metrics endpoint.
//! Without the binary the test says so and skips, except in CI (`CI=true`),
//! where a missing tool is a failure.

use std::sync::Arc;

use rollcage_core::*;
use rollcage_runtime::{Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions};
use rollcage_tests::prometheus::{Prometheus, tool};
use rollcage_tests::stub::Stub;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn queries_a_real_prometheus() {
    let Some(bin) = tool("prometheus", "queries_a_real_prometheus") else {
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
    let prom = Prometheus::start(&bin, &metrics.addr.to_string(), &[]);
    // Until Prometheus has scraped the target once.
    tokio::task::block_in_place(|| {
        prom.wait_for("/api/v1/query?query=demo_error_ratio", |v| {
            v.to_string().contains("\"slot\":\"canary\"")
        })
    });

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
                ..Grants::default()
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
        exposure: None,
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
