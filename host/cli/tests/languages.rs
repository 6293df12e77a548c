//! Plugins in Python, JavaScript and Rust in a real deployment: the
//! examples of `examples/plugins/` built with their own build scripts
//! (componentize-py, componentize-js, cargo), then pipelines that deploy the
//! demo service.
//!
//! * The Python `exponential-ramp` strategy, analysed by the JavaScript
//!   `json-status-check`, reported to a stand-in GitHub (the example's
//!   `fake_github.py`, strict about the Deployments API) through the Python
//!   `github-deployments` notifier.
//! * The Rust `latency-probe` health check (written from the guide, not a
//!   template) gating a canary: a fast release promoted, a slow one rolled
//!   back; its unit tests run too.
//!
//! Where the Python or JavaScript tools are missing the test says so and
//! skips, except in CI (`CI=true`), where that is a failure.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod common;
use common::{rollcage, text};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins")
        .canonicalize()
        .unwrap()
}

/// The target folder the Rust examples and templates share.
fn shared_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugin-new")
}

/// Build example `name` with its build script; its component, or `None`
/// (having said why) when a tool is missing outside CI.
fn build(name: &str) -> Option<PathBuf> {
    let dir = examples().join(name);
    let out = Command::new("bash")
        .arg(dir.join("build.sh"))
        // A Rust example builds where the project templates' tests build
        // (plugin_new.rs), so they share the SDK's compiled dependencies.
        .env("CARGO_TARGET_DIR", shared_target())
        .output()
        .unwrap();
    if !out.status.success() {
        let why = text(&out.stderr);
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if !ci && why.contains("not found") {
            eprintln!(
                "SKIPPED: {name} cannot be built here: {why}(.ci/install-plugin-tools installs the tools)"
            );
            return None;
        }
        panic!("{name}/build.sh failed:\n{}{why}", text(&out.stdout));
    }
    let wasm = dir.join("target").join(format!("{name}.wasm"));
    assert!(wasm.exists(), "{} was not built", wasm.display());
    Some(wasm)
}

/// Run an example's local tests (`argv` in its folder); they must pass.
fn local_tests(name: &str, argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(examples().join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: `{}` failed:\n{}{}",
        argv.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The stand-in GitHub: its port, the process, and the file it records
/// requests in.
struct FakeGithub {
    child: Child,
    port: u16,
    record: PathBuf,
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fake_github(dir: &Path) -> FakeGithub {
    let record = dir.join("github.jsonl");
    let mut child = Command::new("python3")
        .arg(examples().join("github-deployments/fake_github.py"))
        .args(["--port", "0", "--repo", "octo/app", "--token", "ghp_test"])
        .args(["--refs", "v1.0.0,v1.1.0,v1.2.0"])
        .arg("--record")
        .arg(&record)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::port_on_first_line(&mut child, "fake_github.py");
    FakeGithub {
        child,
        port,
        record,
    }
}

/// A status page: `/status/<release>` is `{"error_ratio": ...}`, 0.3 for
/// the bad release 1.2.0 and 0.01 for the others.
fn status_page() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let ratio = if path.ends_with("/1.2.0") { 0.3 } else { 0.01 };
            let body = format!("{{\"service\": \"web\", \"error_ratio\": {ratio}}}");
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn python_and_javascript_plugins_take_part_in_a_real_deployment() {
    let (Some(ramp), Some(check), Some(github)) = (
        build("exponential-ramp"),
        build("json-status-check"),
        build("github-deployments"),
    ) else {
        return;
    };
    // Each example's own tests of its logic, natively (CPython, Node),
    // after its build.sh wrote the bindings and helpers they import.
    local_tests("exponential-ramp", &["python3", "test_local.py"]);
    local_tests("json-status-check", &["node", "--test", "test.mjs"]);
    local_tests("github-deployments", &["python3", "test_local.py"]);
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let gh = fake_github(dir.path());
    let status = status_page();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "GITHUB_TOKEN = \"ghp_test\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = dir.path().join("rollcage.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
database = "sqlite://runs.db"
secrets_file = "secrets.toml"

[plugins.ramp]
component = "{ramp}"

[plugins.status]
component = "{check}"
allow_hosts = ["127.0.0.1:{status}"]
config = {{ url = "http://127.0.0.1:{status}/status/{{release}}", pointer = "/error_ratio" }}

[checks.error-ratio]
plugin = "status"
config = {{ pass_if = "< 0.05" }}

[plugins.github]
component = "{github}"
allow_hosts = ["127.0.0.1:{gh}"]
secrets = ["GITHUB_TOKEN"]
config = {{ api_url = "http://127.0.0.1:{gh}", owner = "octo", repo = "app", token = "${{secret:GITHUB_TOKEN}}" }}

[environments.staging]
provider = "local"
strategy = {{ plugin = "ramp", start = 25, factor = 2 }}
analysis = {{ checks = ["error-ratio"], interval = "200ms", count = 1 }}
replicas = 1
progress_deadline = "30s"

# The pipeline's notifiers hear every event of its runs, the run's own
# (started, succeeded) and each stage's.
[pipelines.web]
stages = ["staging"]
notify = ["github"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}" }} }}
"#,
            ramp = ramp.display(),
            check = check.display(),
            github = github.display(),
            gh = gh.port,
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();

    // The strategy validates its parameters when the configuration is checked.
    let (run, first) = checked_and_first_deployed(cfg, cache.path());
    // A good release: 25%, 50%, then all of the traffic, analysed by the
    // JavaScript check at each step.
    let good = run("1.1.0");
    let stdout = text(&good.stdout);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{stdout}{}",
        text(&good.stderr)
    );
    for split in [
        "route 1.1.0=25% 1.0.0=75%",
        "route 1.1.0=50% 1.0.0=50%",
        "route 1.1.0=100%",
    ] {
        assert!(stdout.contains(split), "{split}: {stdout}");
    }
    assert!(stdout.contains("error-ratio: 0.0100 (pass)"), "{stdout}");
    // A bad one: rolled back at the first analysis.
    let bad = run("1.2.0");
    let stdout = text(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}{}", text(&bad.stderr));
    assert!(stdout.contains("error-ratio: 0.3000 (fail)"), "{stdout}");
    assert!(stdout.contains("rolled back"), "{stdout}");
    assert!(!stdout.contains("route 1.2.0=50%"), "{stdout}");
    // No notification failed.
    for out in [&first, &good, &bad] {
        assert!(
            !text(&out.stdout).contains("notification to github failed"),
            "{}",
            text(&out.stdout)
        );
    }

    // GitHub saw each release deployed to staging, with statuses that end
    // in success for the good ones and failure for the bad one; every
    // request met the documented contract (the stand-in answers 4xx
    // otherwise).
    let log = std::fs::read_to_string(&gh.record).unwrap();
    let requests: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused: Vec<_> = requests
        .iter()
        .filter(|r| r["status"].as_u64().unwrap_or(0) >= 400)
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    for r in &requests {
        assert_eq!(
            r["headers"]["authorization"]
                .as_str()
                .or(r["headers"]["Authorization"].as_str()),
            Some("Bearer ghp_test"),
            "{r}"
        );
    }
    let created: Vec<&str> = requests
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/repos/octo/app/deployments")
        .map(|r| r["body"]["ref"].as_str().unwrap())
        .collect();
    assert_eq!(created, ["v1.0.0", "v1.1.0", "v1.2.0"]);
    let last_state = |id_of_ref: &str| -> String {
        let index = created.iter().position(|r| *r == id_of_ref).unwrap() + 1;
        requests
            .iter()
            .rev()
            .find(|r| {
                r["method"] == "POST"
                    && r["path"] == format!("/repos/octo/app/deployments/{index}/statuses")
            })
            .map(|r| r["body"]["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(last_state("v1.1.0"), "success");
    assert_eq!(last_state("v1.2.0"), "failure");
}

/// Whether `stdout` (a run's output) has a line of check `check` with
/// verdict `verdict` (`pass`, `fail`).
fn has_verdict(stdout: &str, check: &str, verdict: &str) -> bool {
    stdout
        .lines()
        .any(|l| l.contains(&format!("{check}: ")) && l.contains(&format!("({verdict})")))
}

#[test]
fn a_rust_plugin_written_from_the_guide_gates_a_real_deployment() {
    // Its unit tests, natively, as the guide says to run them.
    let project = examples().join("latency-probe");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--locked", "--quiet", "--manifest-path"])
        .arg(project.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", shared_target())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "latency-probe's unit tests:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let probe = build("latency-probe").expect("cargo is there wherever this test runs");

    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rollcage.toml");
    // Release 1.2.0 of the demo service answers `/` 500 ms late; the
    // others at once. The probe's budget is 200 ms at the 95th percentile
    // (of 20 requests, one slow answer is tolerated: a busy machine's hiccup).
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.probe]
component = "{probe}"
allow_hosts = ["127.0.0.1:*"]
config = {{ path = "/", requests = 20, timeout_ms = 2000 }}

[checks.latency]
plugin = "probe"
config = {{ max_p95_ms = 200 }}

[environments.staging]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
analysis = {{ checks = ["latency"], interval = "200ms", count = 1 }}
replicas = 1
progress_deadline = "30s"

[pipelines.web]
stages = ["staging"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}", RELEASE_EXTRA_LATENCY_MS = "1.2.0=500" }} }}
"#,
            probe = probe.display(),
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let (run, _) = checked_and_first_deployed(cfg, cache.path());

    // A fast release: measured at 50% and promoted.
    let good = run("1.1.0");
    let stdout = text(&good.stdout);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{stdout}{}",
        text(&good.stderr)
    );
    assert!(stdout.contains("route 1.1.0=50% 1.0.0=50%"), "{stdout}");
    assert!(stdout.contains("route 1.1.0=100%"), "{stdout}");
    assert!(has_verdict(&stdout, "latency", "pass"), "{stdout}");
    assert!(!has_verdict(&stdout, "latency", "fail"), "{stdout}");

    // A slow one: its p95 (0.5 s and more) over the budget at the first
    // analysis, so it never takes all of the traffic and 1.1.0 stays.
    let bad = run("1.2.0");
    let stdout = text(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}{}", text(&bad.stderr));
    assert!(has_verdict(&stdout, "latency", "fail"), "{stdout}");
    let value: f64 = stdout
        .lines()
        .find(|l| l.contains("latency: ") && l.contains("(fail)"))
        .and_then(|l| l.split("latency: ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no latency value: {stdout}"));
    assert!(value >= 0.5, "{value}: {stdout}");
    assert!(stdout.contains("rolled back"), "{stdout}");
    assert!(!stdout.contains("route 1.2.0=100%"), "{stdout}");
}

/// What each pipeline case starts from: `config check` passes and the
/// first release (1.0.0) deploys. Returns a run of pipeline `web` for a
/// given release, and the first run's output.
fn checked_and_first_deployed<'a>(
    cfg: &'a str,
    cache: &'a Path,
) -> (
    impl Fn(&str) -> std::process::Output + 'a,
    std::process::Output,
) {
    let out = rollcage(&["config", "check", cfg], cache);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let run =
        move |release: &str| rollcage(&["run", "web", "-c", cfg, "--release", release], cache);
    let first = run("1.0.0");
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}{}",
        text(&first.stdout),
        text(&first.stderr)
    );
    (run, first)
}
