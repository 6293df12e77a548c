//! The OpenAPI document is the contract: schemathesis reads it from a real
//! `rollcage serve` and sends what it allows (and what it does not) to every
//! route, with every check on (statuses documented, answers matching their
//! schemas, content types, invalid input refused), once with a token and
//! once without. Without schemathesis this prints SKIPPED; in CI
//! (`CI=true`, where `.ci/run` installs it in `.tools/venv`) that fails.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{Server, rollcage, text};

/// The schemathesis binary: `.tools/venv`'s, or one on the PATH.
fn schemathesis() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        root.join(".tools/venv/bin/schemathesis"),
        PathBuf::from("schemathesis"),
    ];
    let found = candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("schemathesis is not installed; .ci/run installs it in .tools/venv");
        }
        eprintln!(
            "SKIPPED the API contract test: no schemathesis (.tools/venv/bin/python -m pip install schemathesis==4.32.5)"
        );
    }
    found
}

/// A host with one admin token and nothing to deploy: every route answers,
/// and no run the tool starts touches anything.
fn config(dir: &Path, cache: &Path) -> (PathBuf, String) {
    let out = rollcage(&["token", "new", "contract", "--role", "admin"], cache);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = text(&out.stderr);
    let block = &lines[lines.find("[server.tokens").unwrap()..];
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndatabase = \"sqlite://runs.db\"\n\n{block}\n[server.api]\nrequests_per_second = 10000\nburst = 10000\nauth_failures_per_minute = 100000\n"
        ),
    )
    .unwrap();
    (path, text(&out.stdout).trim().to_string())
}

/// The one thing the document cannot say: which pipelines this host has.
/// A run asked for an unknown one is a schema-valid request refused (422),
/// so that answer is expected of `POST /v1/runs`.
const SETTINGS: &str = r#"
[[operations]]
include-path = "/v1/runs"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"#;

fn run(tool: &Path, settings: &Path, port: u16, token: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(tool);
    // It keeps a cache (`.schemathesis/`) in its working folder: the
    // test's, not the checkout.
    cmd.current_dir(settings.parent().unwrap());
    cmd.arg("--config-file")
        .arg(settings)
        .args([
            "run",
            &format!("http://127.0.0.1:{port}/v1/openapi.json"),
            "--checks",
            "all",
            "--max-examples",
            "20",
            "--generation-deterministic",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .env_remove("HYPOTHESIS_PROFILE");
    if let Some(t) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn the_server_keeps_to_its_openapi_document() {
    let Some(tool) = schemathesis() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (cfg, token) = config(dir.path(), cache.path());
    let settings = dir.path().join("schemathesis.toml");
    std::fs::write(&settings, SETTINGS).unwrap();
    let mut server = Server::start(&cfg, cache.path(), "127.0.0.1:0");
    for token in [Some(token.as_str()), None] {
        let (ok, report) = run(&tool, &settings, server.port, token);
        let who = if token.is_some() {
            "with a token"
        } else {
            "without a token"
        };
        assert!(ok, "schemathesis {who}:\n{report}");
    }
    assert_eq!(server.stop(), Some(0));
}
