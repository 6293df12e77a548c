//! After promotion, end to end through the real binary on the local
//! runtime: a bake that fails, and a smoke test that fails, take the
//! service back to the release live before, through the strategy's steps
//! and without the slot the promotion removed; a host killed during that
//! rollback leaves it for `runs resume` to finish.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{rollcage, text};

/// One `staging` environment of the demo service. The canary's analysis
/// looks at `/healthz`, which every release answers, so a bad release is
/// promoted; the bake then measures `/`, which release 1.2.0 fails every
/// time. The smoke test run after promotion fails for release 1.3.0.
fn config(dir: &Path) -> String {
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        r#"
[server]
database = "sqlite://runs.db"

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.healthz]
plugin = "probe"
config = { url = "http://{endpoint}/healthz", expect_status = [200] }

[checks.root]
plugin = "probe"
config = { url = "http://{endpoint}/", expect_status = [200] }

[environments.staging]
provider = "local"
strategy = { plugin = "canary", steps = [50, 100] }
analysis = { checks = ["healthz"], interval = "1s" }
bake = { duration = "3s", interval = "1s", checks = ["root"] }
replicas = 2
progress_deadline = "30s"
jobs = { post = [{ name = "smoke", command = ["sh", "-c", "test \"$ROLLCAGE_RELEASE\" != 1.3.0"] }] }

[pipelines.web]
stages = ["staging"]
service = { command = ["${ROLLCAGE_EXE}", "demo-service", "--port", "{port}"], env = { VERSION = "{release}", RELEASE_ERROR_RATES = "1.2.0=1" } }
"#,
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// `(slot, release, weight)` of the service as the local runtime recorded it.
fn live(dir: &Path) -> Vec<(String, String, u64)> {
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(".rollcage-local/state.json")).unwrap(),
    )
    .unwrap();
    let service = &state["services"][0];
    let weight = |slot: &str| {
        service["weights"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["slot"] == slot)
            .and_then(|w| w["weight"].as_u64())
            .unwrap_or(0)
    };
    service["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap().to_string();
            let w = weight(&name);
            (name, s["release"].as_str().unwrap().to_string(), w)
        })
        .collect()
}

/// Every entry of a run's log, as `runs show --output json` prints it.
fn log_of(cfg: &str, id: &str, cache: &Path) -> Vec<serde_json::Value> {
    let out = rollcage(&["runs", "show", id, "-c", cfg, "--output", "json"], cache);
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("seq").is_some())
        .collect()
}

fn newest_run(cfg: &str, cache: &Path) -> serde_json::Value {
    let out = rollcage(&["runs", "list", "-c", cfg, "--output", "json"], cache);
    let runs: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
    runs[0].clone()
}

fn one_0_0() -> Vec<(String, String, u64)> {
    vec![("1.0.0".into(), "1.0.0".into(), 100)]
}

#[test]
fn a_failing_bake_or_smoke_test_after_promotion_rolls_back_to_the_previous_release() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cfg = cfg.as_str();

    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.0.0"],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("[staging] bake passed"), "{stdout}");

    // 1.2.0 is promoted (its /healthz is fine), then fails its bake.
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.2.0"],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("ok   route 1.2.0=100%"), "{stdout}");
    assert!(
        stdout.contains(
            "[staging] rolling back to 1.0.0 after promotion: bake: check `root` failed 1 time(s)"
        ),
        "{stdout}"
    );
    // The way back is the canary's: half, then all of the traffic.
    let half = stdout
        .find("back route 1.0.0=50% 1.2.0=50%")
        .expect(&stdout);
    let all = stdout.find("back route 1.0.0=100%").expect(&stdout);
    assert!(half < all, "{stdout}");
    assert!(stdout.contains("back remove slot 1.2.0"), "{stdout}");
    assert!(stdout.contains("web 1.2.0 rolled back"), "{stdout}");
    assert_eq!(live(dir.path()), one_0_0());
    let run = newest_run(cfg, cache.path());
    assert_eq!(run["status"], "rolled_back");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .starts_with("bake: check `root` failed"),
        "{run}"
    );

    // 1.3.0 passes its bake but not its smoke test.
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.3.0"],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("[staging] bake passed"), "{stdout}");
    assert!(
        stdout.contains(
            "rolling back to 1.0.0 after promotion: after promotion, job `smoke` exited with 1"
        ),
        "{stdout}"
    );
    assert_eq!(live(dir.path()), one_0_0());
    // `runs show` tells it like any rollback.
    let id = newest_run(cfg, cache.path())["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = rollcage(&["runs", "show", &id, "-c", cfg], cache.path());
    let shown = text(&out.stdout);
    assert!(shown.contains("back route 1.0.0=100%"), "{shown}");
    assert!(shown.contains("rolled_back"), "{shown}");
}

#[test]
fn a_host_killed_during_a_rollback_after_promotion_is_resumed_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cfg = cfg.as_str();
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.0.0"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Kill the host as the rollback begins, and during the bake.
    for (release, kill_at) in [("1.2.0", "rolling-back"), ("1.2.0", "bake-started")] {
        let mut host = common::command(cache.path())
            .args(["run", "web", "-c", cfg, "--release", release])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        let id = loop {
            assert!(Instant::now() < deadline, "no run appeared");
            let run = newest_run(cfg, cache.path());
            if run["run"]["release"] == release
                && !run["status"].as_str().unwrap().contains("rolled")
            {
                break run["id"].as_str().unwrap().to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while !log_of(cfg, &id, cache.path())
            .iter()
            .any(|e| e["kind"] == kill_at)
        {
            assert!(Instant::now() < deadline, "{kill_at} never came");
            std::thread::sleep(Duration::from_millis(20));
        }
        host.kill().unwrap(); // SIGKILL
        host.wait().unwrap();

        let out = rollcage(&["runs", "resume", "-c", cfg], cache.path());
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let log = log_of(cfg, &id, cache.path());
        let kinds: Vec<&str> = log.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        for (n, e) in log.iter().enumerate() {
            assert_eq!(e["seq"], n as u64 + 1, "{kill_at}: {kinds:?}");
        }
        for once in ["bake-started", "rolling-back", "stage-finished"] {
            assert_eq!(
                kinds.iter().filter(|k| **k == once).count(),
                1,
                "{kill_at}: {once} in {kinds:?}"
            );
        }
        // Every step of the way back once, each after its intent.
        let mut last_intent = None;
        let mut steps = Vec::new();
        for e in &log {
            match e["kind"].as_str().unwrap() {
                "restore-intent" => last_intent = Some(e["data"].clone()),
                "restore-step" => {
                    let action = &e["data"]["action"];
                    // Pauses and analyses are recorded, not carried out.
                    if !matches!(action["type"].as_str(), Some("pause" | "analyze")) {
                        assert_eq!(last_intent.take().as_ref(), Some(action), "{kinds:?}");
                        assert!(!steps.contains(action), "{action} twice in {kinds:?}");
                        steps.push(action.clone());
                    }
                }
                _ => {}
            }
        }
        assert!(!steps.is_empty(), "{kinds:?}");
        assert_eq!(
            newest_run(cfg, cache.path())["status"],
            "rolled_back",
            "{said}"
        );
        assert_eq!(live(dir.path()), one_0_0(), "{kill_at}: {said}");
    }
}
