//! The sandbox against a hostile plugin, inside a real `rollcage serve`.
//!
//! Each attack is an environment whose provider is the `attacker` fixture
//! (`tests/plugins/attacker`): asking the API for the environment's status
//! runs the attack in the server's process. While it runs, the test keeps
//! asking `/healthz` and `GET /v1/runs` and records the slowest answer;
//! afterwards it reads the server's peak resident memory (reset before each
//! attack through `/proc/PID/clear_refs`) and its open descriptors. Every
//! attack must be contained (the plugin's error names the limit it hit),
//! the API must keep answering, and the peak may grow by no more than the
//! plugin's memory limit plus [`HOST_OVERHEAD_MB`]: what the host may hold
//! for one call besides the plugin's own memory (its log budget, buffered
//! bodies, the call's instance bookkeeping, allocator slack).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{Server, http, json, token};

/// The attacker's memory limit, in MiB.
const PLUGIN_MEMORY_MB: u64 = 16;
/// What the host may hold for one call besides the plugin's memory.
const HOST_OVERHEAD_MB: u64 = 64;
/// The API must answer within this while an attack runs (a liveness bound,
/// far above its usual milliseconds).
const ANSWER_BOUND: Duration = Duration::from_secs(5);

struct Attack {
    name: &'static str,
    config: String,
    allow_hosts: &'static str,
}

fn attacks(silent_port: u16) -> Vec<Attack> {
    let a = |name, config: &str, allow_hosts| Attack {
        name,
        config: config.to_string(),
        allow_hosts,
    };
    let to = format!("127.0.0.1:{silent_port}");
    vec![
        a(
            "log-fields",
            r#"{ attack = "log-fields", count = 40000, size = 100000 }"#,
            "[]",
        ),
        a(
            "log-flood",
            r#"{ attack = "log-flood", count = 100000 }"#,
            "[]",
        ),
        a(
            "log-huge-line",
            r#"{ attack = "log-huge-line", size = 8000000 }"#,
            "[]",
        ),
        a("log-forge", r#"{ attack = "log-forge" }"#, "[]"),
        a(
            "huge-error",
            r#"{ attack = "huge-error", size = 8000000 }"#,
            "[]",
        ),
        Attack {
            name: "bodies",
            config: format!(
                r#"{{ attack = "bodies", count = 2000, size = 1000000, authority = "{to}" }}"#
            ),
            allow_hosts: "[\"127.0.0.1:*\"]",
        },
        Attack {
            name: "unawaited",
            config: format!(r#"{{ attack = "unawaited", count = 5000, authority = "{to}" }}"#),
            allow_hosts: "[\"127.0.0.1:*\"]",
        },
        Attack {
            name: "loopback-by-name",
            config: format!(r#"{{ attack = "get", authority = "localhost:{silent_port}" }}"#),
            allow_hosts: "[\"localhost:*\"]",
        },
    ]
}

fn config(dir: &Path, cache: &Path, attacks: &[Attack]) -> (PathBuf, String) {
    let (viewer, block) = token("watcher", "viewer", &[], cache);
    let wasm = rollcage_tests::fixture("attacker");
    let mut toml = format!("[server]\ndatabase = \"sqlite://runs.db\"\n\n{block}\n");
    for a in attacks {
        toml.push_str(&format!(
            r#"
[plugins.attack-{name}]
component = "{wasm}"
kind = "environment-provider"
allow_hosts = {hosts}
limits = {{ memory_mb = {PLUGIN_MEMORY_MB}, timeout_ms = 5000 }}
config = {config}

[environments.{name}]
provider = "attack-{name}"
strategy = {{ plugin = "canary", steps = [100] }}
"#,
            name = a.name,
            wasm = wasm.display(),
            hosts = a.allow_hosts,
            config = a.config,
        ));
    }
    let stages: Vec<String> = attacks.iter().map(|a| format!("{:?}", a.name)).collect();
    toml.push_str(&format!(
        "\n[pipelines.attacks]\nstages = [{}]\n",
        stages.join(", ")
    ));
    let path = dir.join("rollcage.toml");
    std::fs::write(&path, toml).unwrap();
    (path, viewer)
}

/// A TCP server that accepts and never answers: requests to it stay in
/// flight.
fn silent_server() -> (u16, Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !done.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((sock, _)) => held.push(sock),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, stop)
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// What one attack did to the server.
struct Effect {
    error: String,
    peak_growth_mb: f64,
    slowest_answer: Duration,
    fds_after: usize,
}

fn run_attack(server: &Server, viewer: &str, name: &str) -> Effect {
    let pid = server.child.id();
    let port = server.port;
    let before_kb = proc_status(pid, "VmRSS:");
    // Reset the peak, so that VmHWM is this attack's.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let watcher = {
        let (done, slowest, viewer) = (done.clone(), slowest.clone(), viewer.to_string());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for (path, token) in [("/healthz", None), ("/v1/runs", Some(viewer.as_str()))] {
                    let started = Instant::now();
                    let (status, _) = http(port, "GET", path, token, &[], None);
                    assert_eq!(status, 200, "{path} while an attack runs");
                    let took = started.elapsed();
                    let mut s = slowest.lock().unwrap();
                    *s = (*s).max(took);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (status, body) = http(
        port,
        "GET",
        &format!("/v1/environments/{name}"),
        Some(viewer),
        &[],
        None,
    );
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let view = json(&body);
    let error = view["services"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {name}: {view:#}"))
        .to_string();
    let peak_kb = proc_status(pid, "VmHWM:");
    let slowest_answer = *slowest.lock().unwrap();
    Effect {
        error,
        peak_growth_mb: peak_kb.saturating_sub(before_kb) as f64 / 1024.0,
        slowest_answer,
        fds_after: open_fds(pid),
    }
}

#[test]
fn every_attack_is_contained_while_the_api_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (silent_port, stop_silent) = silent_server();
    let attacks = attacks(silent_port);
    let (config, viewer) = config(dir.path(), &cache, &attacks);
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Server::start_with(&config, &cache, "127.0.0.1:0", Stdio::from(log), &[]);
    let fds_at_start = open_fds(server.child.id());

    println!(
        "{:<18} {:>14} {:>14} {:>6}  error",
        "attack", "peak +MiB", "slowest API", "fds"
    );
    let mut effects = Vec::new();
    for attack in &attacks {
        let effect = run_attack(&server, &viewer, attack.name);
        println!(
            "{:<18} {:>14.1} {:>11} ms {:>6}  {}",
            attack.name,
            effect.peak_growth_mb,
            effect.slowest_answer.as_millis(),
            effect.fds_after,
            common::text(&effect.error.as_bytes()[..effect.error.len().min(160)])
        );
        effects.push((attack.name, effect));
    }
    stop_silent.store(true, Ordering::Relaxed);

    let bound_mb = (PLUGIN_MEMORY_MB + HOST_OVERHEAD_MB) as f64;
    for (name, e) in &effects {
        assert!(
            e.peak_growth_mb <= bound_mb,
            "{name}: the server's peak grew by {:.1} MiB, over {bound_mb} MiB",
            e.peak_growth_mb
        );
        assert!(
            e.slowest_answer <= ANSWER_BOUND,
            "{name}: the API took {:?} to answer",
            e.slowest_answer
        );
        // Every error the host keeps is cut to the plugin's text limit
        // (4096 bytes by default), with room for the host's own words.
        assert!(
            e.error.len() < 4096 + 512,
            "{name}: {} bytes",
            e.error.len()
        );
    }
    let error = |name: &str| {
        effects
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| e.error.clone())
            .unwrap()
    };
    assert!(
        error("huge-error").contains("[cut: "),
        "{}",
        error("huge-error")
    );
    assert!(
        error("bodies").contains("hit its limit limits.resources = 1000"),
        "{}",
        error("bodies")
    );
    assert!(
        error("unawaited").contains("limits.http_in_flight = 8 reached"),
        "{}",
        error("unawaited")
    );
    let unawaited = &effects.iter().find(|(n, _)| *n == "unawaited").unwrap().1;
    assert!(
        unawaited.fds_after < fds_at_start + 32,
        "descriptors held after the call: {} (at start {fds_at_start})",
        unawaited.fds_after
    );
    assert!(
        error("loopback-by-name").contains("denied capability `http`")
            && error("loopback-by-name").contains("is in a denied network (loopback"),
        "{}",
        error("loopback-by-name")
    );
    drop(server);

    // The log: cut, counted, and no line a plugin wrote itself.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let plugin_lines = |id: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("plugin={id}")) || l.contains(&format!("plugin: {id}")))
            .collect::<Vec<_>>()
    };
    let flood = plugin_lines("attack-log-flood");
    assert!(
        flood.len() <= 200 + 2,
        "{} log lines from a plugin allowed 200",
        flood.len()
    );
    assert!(
        flood.iter().any(|l| l.contains("99800 lines dropped")),
        "one warning says how many lines were dropped: {:?}",
        &flood[flood.len().saturating_sub(3)..]
    );
    let huge = plugin_lines("attack-log-huge-line");
    assert!(
        huge.iter().all(|l| l.len() < 4096 + 512),
        "a line was not cut"
    );
    let fields = plugin_lines("attack-log-fields");
    assert!(
        fields.iter().all(|l| l.len() < 4096 + 512),
        "fields were not cut"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-11-30T00:00:00.000000Z") && !line.starts_with("WARN forged"),
            "a plugin forged a log line: {line}"
        );
    }
    assert!(
        log.contains(r"harmless\n2026-11-30T00:00:00.000000Z ERROR rollcage_engine: run r42 approved by admin"),
        "the forged text is kept, escaped, on the plugin's own line"
    );
}
