//! Expose steps end to end: the real binary, the real local runtime running
//! the demo service, the canary's `{ expose = N }` steps moving a feature
//! flag through a real wasm exposure plugin (the `remote-flags` fixture),
//! whose flags live in this test's HTTP server. A second check reads the
//! server's `/health` (once per instance of the slot), which fails once the flag reaches a share the test
//! sets: the new code path breaking when more users get it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

mod common;
use common::{rollcage, text};

/// The flag service: each (flag, environment)'s `{percent, enabled}`,
/// every PUT in order, and the share at which `/health` starts failing.
#[derive(Default)]
struct Flags {
    flags: BTreeMap<String, Value>,
    puts: Vec<(String, u32)>,
    fail_at: u32,
}

fn serve(listener: TcpListener, state: Arc<Mutex<Flags>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let state = state.clone();
        std::thread::spawn(move || answer(stream, &state));
    }
}

fn answer(mut stream: TcpStream, state: &Mutex<Flags>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let mut s = state.lock().unwrap();
    let (status, reply) = match (method.as_str(), path.strip_prefix("/flags/")) {
        ("PUT", Some(key)) => {
            let percent = serde_json::from_slice::<Value>(&body).unwrap()["percent"]
                .as_u64()
                .unwrap() as u32;
            s.puts.push((key.to_string(), percent));
            let revision = s.puts.len().to_string();
            s.flags.insert(
                key.to_string(),
                json!({"percent": percent, "enabled": true, "revision": revision}),
            );
            (200, json!({}))
        }
        ("GET", Some(key)) => match s.flags.get(key) {
            Some(f) => (200, f.clone()),
            None => (404, json!({"error": "no such flag"})),
        },
        ("GET", None) if path.starts_with("/health") => {
            let exposed = s
                .flags
                .values()
                .filter(|f| f["enabled"] == true)
                .filter_map(|f| f["percent"].as_u64())
                .max()
                .unwrap_or(0) as u32;
            if exposed >= s.fail_at {
                (500, json!({"error": "checkout fails"}))
            } else {
                (200, json!({"ok": true}))
            }
        }
        _ => (404, json!({})),
    };
    drop(s);
    let body = reply.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let wasm = rollcage_tests::fixture("remote-flags");
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.flags]
component = "{wasm}"
kind = "exposure"
allow_hosts = ["127.0.0.1:{port}"]
config = {{ url = "http://127.0.0.1:{port}" }}

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.root]
plugin = "probe"
config = {{ url = "http://{{endpoint}}/", expect_status = [200] }}

[checks.checkout]
plugin = "probe"
config = {{ url = "http://127.0.0.1:{port}/health?instance={{endpoint}}", expect_status = [200] }}

[environments.staging]
provider = "local"
strategy = {{ plugin = "canary", flag = "checkout-v2", steps = [50, 100, {{ expose = 10 }}, {{ expose = 50 }}, {{ expose = 100 }}] }}
analysis = {{ checks = ["root", "checkout"], interval = "1s", count = 1 }}
exposure = "flags"
settle = "1s"
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
    path
}

/// The log of the newest run, as `runs show` prints it.
fn last_run_log(cfg: &str, cache: &Path) -> String {
    let out = rollcage(&["runs", "list", "-c", cfg, "--output", "json"], cache);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    text(&rollcage(&["runs", "show", &id, "-c", cfg], cache).stdout)
}

#[test]
fn expose_steps_move_the_flag_and_a_rollback_restores_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(Flags {
        fail_at: 101,
        ..Flags::default()
    }));
    let served = state.clone();
    std::thread::spawn(move || serve(listener, served));
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), port);
    let cfg = cfg.to_str().unwrap();
    let key = "checkout-v2/staging".to_string();

    // The dry run shows the expose steps and the restore.
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.0.0", "--dry-run"],
        cache.path(),
    );
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{plan}{}", text(&out.stderr));
    for step in [
        "expose checkout-v2 10%",
        "expose checkout-v2 50%",
        "expose checkout-v2 100%",
    ] {
        assert!(plan.contains(step), "{plan}");
    }
    assert!(
        plan.contains("restore flag checkout-v2 to its exposure before the run"),
        "{plan}"
    );
    assert!(
        state.lock().unwrap().puts.is_empty(),
        "a dry run moves no flag"
    );

    // A first deployment, then a canary promoted with the flag moved 10,
    // 50 and 100%.
    for release in ["1.0.0", "1.1.0"] {
        state.lock().unwrap().flags.clear();
        state.lock().unwrap().puts.clear();
        let out = rollcage(
            &["run", "web", "-c", cfg, "--release", release],
            cache.path(),
        );
        assert!(
            out.status.success(),
            "{release}:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let puts = state.lock().unwrap().puts.clone();
        assert_eq!(
            puts,
            [(key.clone(), 10), (key.clone(), 50), (key.clone(), 100)],
            "{release}"
        );
    }
    let log = last_run_log(cfg, cache.path());
    for line in [
        "flag checkout-v2 was at 0% before the run (control flags)",
        "ok   expose checkout-v2 10%",
        "ok   expose checkout-v2 100%",
    ] {
        assert!(log.contains(line), "{line}:\n{log}");
    }

    // The flag at 20% before the run; checkout breaks at 50%: the analysis
    // after the 50% step fails and the flag is back at 20%.
    {
        let mut s = state.lock().unwrap();
        s.flags.insert(
            key.clone(),
            json!({"percent": 20, "enabled": true, "revision": "7"}),
        );
        s.puts.clear();
        s.fail_at = 50;
    }
    let out = rollcage(
        &["run", "web", "-c", cfg, "--release", "1.2.0"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let s = state.lock().unwrap();
    assert_eq!(
        s.puts,
        [(key.clone(), 10), (key.clone(), 50), (key.clone(), 20)]
    );
    assert_eq!(s.flags[&key]["percent"], 20);
    drop(s);
    let log = last_run_log(cfg, cache.path());
    for line in [
        "flag checkout-v2 was at 20% before the run (control flags)",
        "ok   expose checkout-v2 10%",
        "ok   expose checkout-v2 50%",
        "analysis failed: check `checkout`",
        "back flag checkout-v2 restored to 20%",
    ] {
        assert!(log.contains(line), "{line}:\n{log}");
    }
}
