//! Deploy dark, expose by flag, against a real Unleash server: the real
//! binary runs a canary whose steps put the release on every instance and
//! then expose the flag `checkout-v2` to 10%, 50% and 100% of users through
//! `builtin:unleash`. The analysis after each exposure probes a status page
//! of this test, which measures, at that moment, which of 1,000 user ids
//! Unleash itself enables the flag for. A second release, whose analysis
//! fails once half the users see the flag, is rolled back: afterwards the
//! flag exposes what it exposed before that run. Without node, the Unleash
//! fixture or PostgreSQL the test prints SKIPPED (a failure under CI=true).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rollcage_tests::unleash::{ADMIN_TOKEN, Unleash};

mod common;
use common::{rollcage, text};

const USERS: u32 = 1000;

/// What the status page saw at each probe: the users enabled then.
type Seen = Arc<Mutex<Vec<BTreeSet<u32>>>>;

/// A status page on loopback: every request measures the flag's exposure in
/// Unleash and records it; it answers 500 once `fail_at` percent or more of
/// the users are exposed (the new code is broken for them), else 200.
fn status_page(unleash: &'static Unleash, flag: &'static str, fail_at: Option<f64>) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let enabled = unleash.enabled_users(flag, "production", USERS);
            let share = enabled.len() as f64 * 100.0 / USERS as f64;
            record.lock().unwrap().push(enabled);
            let status = match fail_at {
                Some(limit) if share >= limit => "500 Internal Server Error",
                _ => "200 OK",
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    (port, seen)
}

/// A configuration in `dir` named `name`, whose production canary takes
/// `steps`; every configuration of a test shares the run database.
fn config(
    dir: &Path,
    name: &str,
    unleash: &Unleash,
    flag: &str,
    status_port: u16,
    steps: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://{db}"

[plugins.flags]
component = "builtin:unleash"
allow_hosts = ["127.0.0.1:{unleash_port}"]
secrets = ["UNLEASH_ADMIN_TOKEN"]
config = {{ url = "{unleash_url}", token_secret = "UNLEASH_ADMIN_TOKEN" }}

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:{status_port}"]

[checks.new-code]
plugin = "probe"
config = {{ url = "http://127.0.0.1:{status_port}/status?instance={{endpoint}}", expect_status = [200] }}

[environments.production]
provider = "local"
exposure = "flags"
settle = "1s"
strategy = {{ plugin = "canary", flag = "{flag}", steps = {steps} }}
analysis = {{ checks = ["new-code"], interval = "1s", count = 1 }}
replicas = 1
progress_deadline = "30s"

[pipelines.checkout]
stages = ["production"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}" }} }}
"#,
            unleash_port = unleash.port,
            unleash_url = unleash.url,
            db = dir.join("runs.db").display(),
        ),
    )
    .unwrap();
    path
}

/// The log of the newest run, as `runs show` prints it.
fn last_run_log(cfg: &Path, cache: &Path) -> String {
    let cfg = cfg.to_str().unwrap();
    let out = rollcage(&["runs", "list", "-c", cfg, "--output", "json"], cache);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    text(&rollcage(&["runs", "show", &id, "-c", cfg], cache).stdout)
}

fn share(users: &BTreeSet<u32>) -> f64 {
    users.len() as f64 * 100.0 / USERS as f64
}

fn run(cfg: &Path, release: &str, cache: &Path) -> std::process::Output {
    let mut command = common::command(cache);
    command.env("UNLEASH_ADMIN_TOKEN", ADMIN_TOKEN).args([
        "run",
        "checkout",
        "-c",
        cfg.to_str().unwrap(),
        "--release",
        release,
    ]);
    command.output().unwrap()
}

/// The first release: all traffic at once, the flag untouched (a first
/// deployment has nothing to canary against).
const FIRST: &str = "[100]";

/// Steps that expose the flag 10 → 50 → 100, analysed after each.
const STEPS: &str = r#"[{ weight = 100 }, { expose = 10 }, { analysis = ["new-code"] }, { expose = 50 }, { analysis = ["new-code"] }, { expose = 100 }, { analysis = ["new-code"] }]"#;

#[test]
fn a_canary_exposes_a_flag_step_by_step_keeping_its_users() {
    let Some(unleash) = Unleash::shared() else {
        return;
    };
    let flag = "checkout-v2";
    unleash.create_flag("default", flag);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = status_page(unleash, flag, None);
    let first = config(dir.path(), "first.toml", unleash, flag, port, FIRST);
    let cfg = config(dir.path(), "rollcage.toml", unleash, flag, port, STEPS);
    // The first deployment of a service has nothing to canary against;
    // the second release goes through every step.
    let mut probes_before = Vec::new();
    for (cfg, release) in [(&first, "1.0.0"), (&cfg, "1.1.0")] {
        probes_before.push(seen.lock().unwrap().len());
        let out = run(cfg, release, cache.path());
        assert!(
            out.status.success(),
            "{release}:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    // What the second run's analyses measured, one entry per exposure
    // level: the analysis after the traffic step saw nobody exposed, then
    // one level per expose step.
    let mut levels: Vec<BTreeSet<u32>> = Vec::new();
    for users in seen.lock().unwrap()[probes_before[1]..].iter() {
        if !users.is_empty() && levels.last() != Some(users) {
            levels.push(users.clone());
        }
    }
    assert_eq!(
        levels.len(),
        3,
        "three exposure levels measured: {:?}",
        levels.iter().map(share).collect::<Vec<_>>()
    );
    let last = &levels[..];
    for (users, percent) in last.iter().zip([10.0, 50.0, 100.0]) {
        eprintln!(
            "expose {percent}: {}% of {USERS} users enabled",
            share(users)
        );
        assert!(
            (share(users) - percent).abs() <= 5.0,
            "{}% of users enabled at {percent}%",
            share(users)
        );
    }
    assert!(last[0].is_subset(&last[1]) && last[1].is_subset(&last[2]));
    let log = last_run_log(&cfg, cache.path());
    for line in [
        "flag checkout-v2 was at 0% before the run (control flags)",
        "ok   expose checkout-v2 10%",
        "ok   expose checkout-v2 50%",
        "ok   expose checkout-v2 100%",
    ] {
        assert!(log.contains(line), "{line}:\n{log}");
    }
    assert_eq!(
        unleash.enabled_users(flag, "production", USERS).len(),
        USERS as usize
    );
}

#[test]
fn a_failed_analysis_after_exposing_puts_the_exposure_back() {
    let Some(unleash) = Unleash::shared() else {
        return;
    };
    let flag = "checkout-v3";
    unleash.create_flag("default", flag);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The new code is broken: the page fails once half the users see it.
    let (port, seen) = status_page(unleash, flag, Some(45.0));
    let first = config(dir.path(), "first.toml", unleash, flag, port, FIRST);
    let cfg = config(dir.path(), "rollcage.toml", unleash, flag, port, STEPS);
    let out = run(&first, "1.0.0", cache.path());
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = run(&cfg, "1.1.0", cache.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let log = last_run_log(&cfg, cache.path());
    for line in [
        "flag checkout-v3 was at 0% before the run (control flags)",
        "ok   expose checkout-v3 10%",
        "ok   expose checkout-v3 50%",
        "analysis failed: check `new-code`",
        "back flag checkout-v3 restored to 0%",
    ] {
        assert!(log.contains(line), "{line}:\n{log}");
    }
    // The analysis did see half the users exposed before it failed...
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|users| (share(users) - 50.0).abs() <= 5.0),
        "{:?}",
        seen.iter().map(share).collect::<Vec<_>>()
    );
    // ...and the exposure is back to before the run: nobody.
    assert!(unleash.enabled_users(flag, "production", USERS).is_empty());
}

/// The example configuration is valid: `config check` loads builtin:unleash
/// as the environments' exposure and accepts the expose steps.
#[test]
fn the_unleash_example_passes_config_check() {
    let cache = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/unleash/rollcage.toml");
    let out = common::command(cache.path())
        .env("UNLEASH_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["config", "check", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
