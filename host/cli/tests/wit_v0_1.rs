//! A component of the frozen contract 0.1.0 through the real binary:
//! `plugins check` names the version it targets, and a pipeline whose
//! strategy is that component (the `legacy-strategy` fixture, built by
//! wit-bindgen from `wit/v0.1.0`) deploys real releases of the demo
//! service on the local runtime.

mod common;
use common::{rollcage, text};

#[test]
fn a_0_1_0_strategy_is_checked_and_runs_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let wasm = rollcage_tests::fixture("legacy-strategy");
    let out = rollcage(&["plugins", "check", wasm.to_str().unwrap()], cache.path());
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("world:     strategy (rollcage:plugin@0.1.0)"),
        "{shown}"
    );

    let cfg = dir.path().join("rollcage.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.legacy]
component = "{wasm}"
kind = "strategy"

[environments.staging]
provider = "local"
strategy = {{ plugin = "legacy" }}
replicas = 1
progress_deadline = "30s"

[pipelines.web]
stages = ["staging"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}" }} }}
"#,
            wasm = wasm.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = rollcage(&["config", "check", cfg], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    for release in ["1.0.0", "1.1.0"] {
        let out = rollcage(
            &["run", "web", "-c", cfg, "--release", release],
            cache.path(),
        );
        let shown = text(&out.stdout);
        assert!(
            out.status.success(),
            "{release}:\n{shown}\n{}",
            text(&out.stderr)
        );
        assert!(
            shown.contains(&format!("web {release} succeeded")),
            "{shown}"
        );
    }
    // The second run replaced the first release the 0.1 strategy's way.
    let out = rollcage(
        &["runs", "list", "-c", cfg, "--output", "json"],
        cache.path(),
    );
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let log = text(&rollcage(&["runs", "show", &id, "-c", cfg], cache.path()).stdout);
    for line in [
        "ok   apply slot 1.1.0: 1.1.0 x1",
        "ok   route 1.1.0=100%",
        "ok   remove slot 1.0.0",
    ] {
        assert!(log.contains(line), "{line}:\n{log}");
    }
}
