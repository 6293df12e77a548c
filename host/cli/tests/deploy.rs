//! Deployments end to end: the real binary, the real local runtime running
//! real processes of the demo service, real HTTP through its router, real
//! wasm plugins and a real SQLite file.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{live, recorded_pids, rollcage, text};

/// `rollcage args`, killed and failed if it takes longer than `limit`: a
/// run waiting for a person would otherwise hang the suite.
fn rollcage_within(args: &[&str], cache: &Path, limit: Duration) -> Output {
    let mut child = common::command(cache)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`rollcage {}` took over {limit:?}:\n{}{}",
                args.join(" "),
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A configuration with one `staging` environment of the demo service,
/// analysed by an HTTP check of `/` on every instance: release 1.2.0 fails
/// every request, so its analysis fails at once.
fn config(dir: &Path, approval: bool) -> std::path::PathBuf {
    let path = dir.join("rollcage.toml");
    let approval = if approval {
        "approval = \"manual\"\nrequire_different_approver = true"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.root]
plugin = "probe"
config = {{ url = "http://{{endpoint}}/", expect_status = [200] }}

[environments.staging]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
analysis = {{ checks = ["root"], interval = "1s", count = 2 }}
replicas = 2
progress_deadline = "30s"
{approval}

[pipelines.web]
stages = ["staging"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}", RELEASE_ERROR_RATES = "1.2.0=1" }} }}
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn runs_promote_a_good_release_and_roll_back_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), false);
    let cfg = cfg.to_str().unwrap();

    // Bad input: exit 2, nothing recorded.
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "banana"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--release"),
        "{}",
        text(&out.stderr)
    );
    let out = rollcage(
        &["run", "api", "-c", cfg, "--release", "1.0.0"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown pipeline `api`; the pipelines are: web"));

    // A first deployment, then a canary that is promoted.
    for release in ["1.0.0", "1.1.0"] {
        let out = rollcage(
            &["run", "web", "-c", cfg, "--release", release],
            cache.path(),
        );
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{release}:\n{stdout}\n{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("web {release} succeeded")),
            "{stdout}"
        );
    }
    // The second run found the first's release running: a real canary.
    let out = rollcage(
        &["runs", "list", "-c", cfg, "--output", "json"],
        cache.path(),
    );
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let second = runs[0]["id"].as_str().unwrap().to_string();
    let out = rollcage(&["runs", "show", &second, "-c", cfg], cache.path());
    let shown = text(&out.stdout);
    assert!(shown.contains("stable release 1.0.0"), "{shown}");
    assert!(shown.contains("route 1.1.0=50% 1.0.0=50%"), "{shown}");
    assert!(shown.contains("root: "), "measurements are shown: {shown}");

    // A dry run prints the plan and touches nothing.
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.2.0", "--dry-run"],
        cache.path(),
    );
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{plan}{}", text(&out.stderr));
    assert!(plan.contains("[staging] 1.1.0 -> 1.2.0"), "{plan}");
    assert!(plan.contains("route 1.2.0=50% 1.1.0=50%"), "{plan}");
    assert!(plan.contains("the rollback would be"), "{plan}");
    assert!(plan.contains("route 1.1.0=100%"), "{plan}");

    // The bad release: analysis fails, the engine rolls back, exit 1.
    let out = rollcage(
        &[
            "run",
            "web",
            "-c",
            cfg,
            "--release",
            "1.2.0",
            "--output",
            "json",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["run"]["status"], "rolled_back", "{stdout}");
    assert!(stdout.contains("\"kind\":\"rolling-back\""), "{stdout}");

    // Two good runs and a rolled back one; the dry run recorded nothing.
    let out = rollcage(&["runs", "list", "-c", cfg], cache.path());
    let listed = text(&out.stdout);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(listed.contains("rolled_back"), "{listed}");
    // The services' record stays for the next command; their processes
    // end with the command that ran them.
    assert!(dir.path().join(".rollcage-local/state.json").exists());
    assert_eq!(live(&recorded_pids(dir.path())), Vec::<u32>::new());
}

#[test]
fn an_approval_waits_for_a_second_person() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true);
    let cfg = cfg.to_str().unwrap();
    let mut run = common::command(cache.path())
        .args(["run", "web", "-c", cfg, "--release", "1.0.0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        assert!(
            Instant::now() < deadline,
            "the run never asked for approval"
        );
        if let Ok(Some(_)) = run.try_wait() {
            let out = run.wait_with_output().unwrap();
            panic!("the run ended: {}{}", text(&out.stdout), text(&out.stderr));
        }
        let out = rollcage(
            &[
                "runs",
                "list",
                "-c",
                cfg,
                "--status",
                "awaiting_approval",
                "--output",
                "json",
            ],
            cache.path(),
        );
        let runs: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
        if let Some(id) = runs[0]["id"].as_str() {
            break id.to_string();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // alice started it: she may not approve it.
    let out = rollcage(&["runs", "approve", &id, "-c", cfg], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("needs an approver other than the one who started the run (alice)"),
        "{}",
        text(&out.stderr)
    );
    let out = rollcage(
        &["runs", "approve", &id, "-c", cfg, "--as", "bob"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("approve asked by bob"), "{stdout}");
    assert!(stdout.contains("web 1.0.0 succeeded"), "{stdout}");
}

#[test]
fn the_demo_promotes_a_good_release_and_rolls_back_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = rollcage(
        &["demo", "--dir", dir.path().to_str().unwrap()],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("demo finished as expected"), "{stdout}");
    assert!(
        stdout.contains("1.2.0    rolled_back  rolled_back"),
        "{stdout}"
    );
    assert!(stdout.contains("connection errors 0"), "{stdout}");
    // The dashboard's address and a token to sign in with, for a browser.
    assert!(
        stdout.contains("dashboard: http://127.0.0.1:")
            && stdout.contains("/ui/runs (sign in with the token rc_"),
        "{stdout}"
    );
    assert!(
        !dir.path().join(".rollcage-local/state.json").exists(),
        "the demo forgets its services"
    );
    // Every instance wrote its pid to its log; none is alive.
    let mut pids = Vec::new();
    for service in std::fs::read_dir(dir.path().join(".rollcage-local/logs")).unwrap() {
        for log in std::fs::read_dir(service.unwrap().path()).unwrap() {
            let text = std::fs::read_to_string(log.unwrap().path()).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.split("(pid ").nth(1)
                    && let Some(pid) = rest.split(')').next()
                {
                    pids.push(pid.to_string());
                }
            }
        }
    }
    assert!(pids.len() >= 10, "instances seen: {pids:?}");
    let alive: Vec<&String> = pids
        .iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(alive.is_empty(), "left running: {alive:?}");
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

#[test]
fn a_host_killed_anywhere_in_a_canary_resumes_it_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), false);
    let cfg = cfg.to_str().unwrap();
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "2.0.0"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Kill the host after the run's log has this many entries: before the
    // stage, mid-way through the steps, during analysis, near the end.
    for (i, kill_after) in [2usize, 6, 9, 13, 17].into_iter().enumerate() {
        let release = format!("2.{}.0", i + 1);
        let mut host = common::command(cache.path())
            .args(["run", "web", "-c", cfg, "--release", &release])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let id = loop {
            assert!(Instant::now() < deadline, "{release}: no run appeared");
            let out = rollcage(
                &["runs", "list", "-c", cfg, "--output", "json"],
                cache.path(),
            );
            let runs: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
            if runs[0]["run"]["release"] == release.as_str() {
                break runs[0]["id"].as_str().unwrap().to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while log_of(cfg, &id, cache.path()).len() < kill_after {
            assert!(Instant::now() < deadline, "{release}: the log never grew");
            std::thread::sleep(Duration::from_millis(20));
        }
        host.kill().unwrap(); // SIGKILL
        host.wait().unwrap();

        // A new host takes the run over and drives it to its end.
        let out = rollcage_within(
            &["runs", "resume", "-c", cfg],
            cache.path(),
            Duration::from_secs(90),
        );
        assert!(
            out.status.success(),
            "{release} (killed after {kill_after} entries): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let log = log_of(cfg, &id, cache.path());
        let kinds: Vec<&str> = log.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        // Nothing lost: sequence numbers without a gap.
        for (n, e) in log.iter().enumerate() {
            assert_eq!(e["seq"], n as u64 + 1, "{release}: {kinds:?}");
        }
        // Nothing twice: each milestone once, and every step preceded by
        // the intent of the same action (an intent may repeat after a
        // crash; its step is recorded once).
        for once in [
            "run-started",
            "stage-started",
            "stage-finished",
            "run-finished",
        ] {
            assert_eq!(
                kinds.iter().filter(|k| **k == once).count(),
                1,
                "{release}: {once} in {kinds:?}"
            );
        }
        let mut last_intent = None;
        for e in &log {
            match e["kind"].as_str().unwrap() {
                "intent" => last_intent = Some(e["data"].clone()),
                "step" => {
                    assert_eq!(
                        last_intent.take().as_ref(),
                        Some(&e["data"]["action"]),
                        "{release}: a step without its intent in {kinds:?}"
                    );
                }
                _ => {}
            }
        }
        let out = rollcage(
            &["runs", "list", "-c", cfg, "--output", "json"],
            cache.path(),
        );
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(runs[0]["status"], "succeeded", "{release}: {kinds:?}");
    }
    assert_eq!(live(&recorded_pids(dir.path())), Vec::<u32>::new());
}

/// The run of `release` in `rollcage runs list --output json`, once it has
/// `status`.
fn wait_for_run(cfg: &str, cache: &Path, release: &str, status: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "run of {release} never became {status}"
        );
        let out = rollcage(&["runs", "list", "-c", cfg, "--output", "json"], cache);
        let runs: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
        let found = runs
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["run"]["release"] == release && r["status"] == status);
        if let Some(run) = found {
            return run.clone();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_second_run_in_another_terminal_waits_for_the_environment_the_first_holds() {
    // Two `rollcage run` in two terminals on one configuration: the first
    // waits for an approval in staging; the second is queued behind it,
    // touches nothing, and goes once the first is done.
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true);
    let cfg = cfg.to_str().unwrap();
    let spawn = |release: &str| {
        common::command(cache.path())
            .args(["run", "web", "-c", cfg, "--release", release])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let approve = |id: &str| {
        let out = rollcage(
            &["runs", "approve", id, "-c", cfg, "--as", "bob"],
            cache.path(),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let first = spawn("1.1.0");
    let a = wait_for_run(cfg, cache.path(), "1.1.0", "awaiting_approval");
    let a_id = a["id"].as_str().unwrap().to_string();
    let second = spawn("1.3.0");
    let b = wait_for_run(cfg, cache.path(), "1.3.0", "queued");
    let b_id = b["id"].as_str().unwrap().to_string();
    // Still queued a while later, with nothing done.
    std::thread::sleep(Duration::from_secs(2));
    let b = wait_for_run(cfg, cache.path(), "1.3.0", "queued");
    assert_eq!(b["id"], b_id.as_str());
    assert!(log_of(cfg, &b_id, cache.path()).is_empty());

    approve(&a_id);
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_for_run(cfg, cache.path(), "1.3.0", "awaiting_approval");
    approve(&b_id);
    let out = second.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("run {b_id} is queued"))
            && stderr.contains(&format!("`staging` is held by run {a_id}")),
        "{stderr}"
    );
    assert!(stdout.contains("web 1.3.0 succeeded"), "{stdout}");
    // It started from what the first one left: 1.1.0 live, alone.
    let log = log_of(cfg, &b_id, cache.path());
    let started = log.iter().find(|e| e["kind"] == "stage-started").unwrap();
    assert_eq!(started["data"]["stable"], "1.1.0", "{log:?}");
}
