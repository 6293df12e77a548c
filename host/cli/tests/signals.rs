//! Stopping a one-off command with a signal, as a terminal (SIGINT), CI
//! systems and `timeout` (SIGTERM) or a closed terminal (SIGHUP) do: the
//! real binary, the real local runtime and real processes of the demo
//! service. Whatever the signal, the command exits with 128 + its number,
//! every instance it started is gone, and the run it drove is left
//! unfinished for `runs resume`, which drives it to its end. A host killed
//! outright (SIGKILL) takes its instances with it too.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{live, recorded_pids, rollcage, text};

/// One `staging` environment of the demo service: two instances per slot,
/// a canary that pauses half way, so that a run is stopped with two slots
/// (four instances) running. A short lease, so that a run whose host was
/// killed is taken over soon.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        r#"
[server]
database = "sqlite://runs.db"
lease = "2s"

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.root]
plugin = "probe"
config = { url = "http://{endpoint}/", expect_status = [200] }

[environments.staging]
provider = "local"
strategy = { plugin = "canary", steps = [50, { pause = "3s" }, 100] }
analysis = { checks = ["root"], interval = "1s", count = 1 }
replicas = 2
progress_deadline = "30s"

[pipelines.web]
stages = ["staging"]
service = { command = ["${ROLLCAGE_EXE}", "demo-service", "--port", "{port}"], env = { VERSION = "{release}" } }
"#,
    )
    .unwrap();
    path
}

/// The live instances recorded under `dir`, once there are at least `n`.
fn wait_for_instances(dir: &Path, n: usize, child: &mut Child, what: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pids = live(&recorded_pids(dir));
        if pids.len() >= n {
            return pids;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} ended ({status}) before {n} instances ran");
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n} instances never ran (live: {pids:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(child: &Child, signal: i32) {
    // SAFETY: kill has no memory effects; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// The child's output once it has exited, within `limit`.
fn exited_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not end within {limit:?}:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `pids` are all gone within a few seconds (a killed group's members may
/// take a moment to be collected).
fn assert_gone(pids: &[u32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live(pids).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(live(pids), Vec::<u32>::new(), "{what}: left running");
}

/// `runs resume`, which must finish every unfinished run successfully.
fn resume_to_the_end(cfg: &str, cache: &Path, what: &str) {
    let child = common::command(cache)
        .args(["runs", "resume", "-c", cfg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = exited_within(child, Duration::from_secs(120), what);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: runs resume failed:\n{stdout}{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("succeeded"), "{what}: {stdout}");
}

/// The status of the run of `release`.
fn status_of(cfg: &str, cache: &Path, release: &str) -> String {
    let out = rollcage(&["runs", "list", "-c", cfg, "--output", "json"], cache);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    runs.as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"]["release"] == release)
        .map(|r| r["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no run of {release}: {runs}"))
}

const SIGNALS: [(i32, &str); 3] = [
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
];

#[test]
fn a_run_stopped_by_a_signal_leaves_no_process_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.0.0"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    for (i, (signal, name)) in SIGNALS.into_iter().enumerate() {
        let release = format!("1.{}.0", i + 1);
        let mut run = common::command(cache.path())
            .args(["run", "web", "-c", cfg, "--release", &release])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Mid-canary: the stable slot and the new one, two instances each.
        let pids = wait_for_instances(dir.path(), 4, &mut run, name);
        send(&run, signal);
        let out = exited_within(run, Duration::from_secs(30), name);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(128 + signal),
            "{name}: {}{stderr}",
            text(&out.stdout)
        );
        assert!(
            stderr.contains("`rollcage runs resume` continues it"),
            "{name}: {stderr}"
        );
        assert_gone(&pids, name);
        assert_gone(&recorded_pids(dir.path()), name);
        assert_ne!(status_of(cfg, cache.path(), &release), "succeeded");

        resume_to_the_end(cfg, cache.path(), name);
        assert_eq!(
            status_of(cfg, cache.path(), &release),
            "succeeded",
            "{name}"
        );
        assert_gone(&recorded_pids(dir.path()), name);
    }
}

#[test]
fn a_resume_stopped_by_a_signal_and_a_host_killed_outright_leave_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.0.0"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    for (i, (signal, name)) in SIGNALS.into_iter().enumerate() {
        let release = format!("2.{}.0", i + 1);
        let mut run = common::command(cache.path())
            .args(["run", "web", "-c", cfg, "--release", &release])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pids = wait_for_instances(dir.path(), 4, &mut run, "run");
        // Killed outright: it cannot stop anything itself, yet its
        // instances end with it.
        run.kill().unwrap();
        run.wait().unwrap();
        assert_gone(&pids, "SIGKILL of the host");

        // A resume takes the run over (once the dead host's lease has run
        // out), starts the instances again, and is stopped in turn.
        let mut resume = common::command(cache.path())
            .args(["runs", "resume", "-c", cfg])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pids = wait_for_instances(dir.path(), 4, &mut resume, "runs resume");
        send(&resume, signal);
        let out = exited_within(resume, Duration::from_secs(30), name);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(128 + signal),
            "{name}: {}{stderr}",
            text(&out.stdout)
        );
        assert!(
            stderr.contains("`rollcage runs resume` continues them"),
            "{name}: {stderr}"
        );
        assert_gone(&pids, name);
        assert_gone(&recorded_pids(dir.path()), name);

        resume_to_the_end(cfg, cache.path(), name);
        assert_eq!(
            status_of(cfg, cache.path(), &release),
            "succeeded",
            "{name}"
        );
        assert_gone(&recorded_pids(dir.path()), name);
    }
}

/// `rollcage demo` in `dir`, its output piped, once its first two
/// instances run; and their pids.
fn demo_running(cache: &Path, dir: &Path, what: &str) -> (Child, Vec<u32>) {
    let mut demo = common::command(cache)
        .args(["demo", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = wait_for_instances(dir, 2, &mut demo, what);
    (demo, pids)
}

#[test]
fn the_demo_stopped_by_a_signal_leaves_no_process() {
    let cache = tempfile::tempdir().unwrap();
    for (signal, name) in SIGNALS {
        let dir = tempfile::tempdir().unwrap();
        let (demo, pids) = demo_running(cache.path(), dir.path(), name);
        send(&demo, signal);
        let out = exited_within(demo, Duration::from_secs(30), name);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + signal), "{name}: {stderr}");
        assert!(
            stderr.contains("everything the demo started is stopped"),
            "{name}: {stderr}"
        );
        assert_gone(&pids, name);
    }
}

/// `rollcage demo | head -1`: the reader takes a line and goes. The demo
/// stops as on a signal (SIGPIPE's exit code), says so on standard error,
/// leaves no instance running, and does not panic on its next line.
#[test]
fn the_demo_whose_output_is_closed_stops_like_a_signal() {
    use std::io::BufRead;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut demo, pids) = demo_running(cache.path(), dir.path(), "demo | head -1");
    let mut first = String::new();
    let mut stdout = std::io::BufReader::new(demo.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("rollcage demo"), "{first}");
    drop(stdout);
    let out = exited_within(demo, Duration::from_secs(60), "demo | head -1");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(128 + libc::SIGPIPE), "{stderr}");
    assert!(
        stderr.contains("everything the demo started is stopped"),
        "{stderr}"
    );
    assert_gone(&pids, "demo | head -1");
    assert_gone(&recorded_pids(dir.path()), "demo | head -1");
}
