//! A secret's value never leaves the host in text. A canary secret is
//! granted to plugins misconfigured so that they echo it (its value where
//! the webhook notifier takes a secret's *name*; in a health check's URL,
//! which the check quotes in its error), real runs go through a real
//! `rollcage serve` and a one-off `rollcage run`, and the value is looked
//! for everywhere it could surface: the API's answers and live stream, the
//! server's log (text) and the command's (JSON), the database and its WAL,
//! and the CLI's output. It is found nowhere, and `[secret CANARY]` is
//! found where it was echoed (so the test sees the paths taken). The same
//! run checks that the files the host made are its owner's only, and that
//! a clean stop leaves the WAL empty.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{Server, http, json, rollcage, text};

const CANARY: &str = "canary-Zq8xT3vN9pLw";

fn token(name: &str, cache: &Path) -> (String, String) {
    let out = rollcage(&["token", "new", name, "--role", "admin"], cache);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = text(&out.stderr);
    (
        text(&out.stdout).trim().to_string(),
        lines[lines.find("[server.tokens").unwrap()..].to_string(),
    )
}

/// A configuration whose plugins echo the secret; `log` is `text` or `json`.
fn config(dir: &Path, tokens: &str, log: &str) -> PathBuf {
    let secrets = dir.join("secrets.toml");
    std::fs::write(&secrets, format!("CANARY = \"{CANARY}\"\n")).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join(format!("rollcage-{log}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"
secrets_file = "secrets.toml"
log = {{ format = "{log}", level = "debug" }}

{tokens}

# Misconfigured: `signing_secret` takes the secret's name, not its value.
[plugins.hook]
component = "builtin:webhook"
allow_hosts = ["127.0.0.1:*"]
secrets = ["CANARY"]
config = {{ url = "http://127.0.0.1:9/hook", signing_secret = "${{secret:CANARY}}" }}

# Misconfigured: the URL lacks `{{endpoint}}`, and the check quotes it.
[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]
secrets = ["CANARY"]
config = {{ url = "http://127.0.0.1:1/status?key=${{secret:CANARY}}" }}

[checks.leaky]
plugin = "probe"

[environments.staging]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
analysis = {{ checks = ["leaky"], interval = "200ms", count = 1 }}
replicas = 1
progress_deadline = "30s"
notify = ["hook"]

[pipelines.web]
stages = ["staging"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}" }} }}
"#
        ),
    )
    .unwrap();
    path
}

/// Wait (60 s at most) until run `id` is finished; its detail.
fn finished(port: u16, token: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http(
            port,
            "GET",
            &format!("/v1/runs/{id}"),
            Some(token),
            &[],
            None,
        );
        let v = json(&body);
        if matches!(
            v["run"]["status"].as_str(),
            Some("succeeded" | "failed" | "rolled_back")
        ) {
            return v;
        }
        assert!(Instant::now() < deadline, "run {id} did not finish: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The database and its WAL, as bytes made text.
fn database_files(dir: &Path) -> String {
    ["runs.db", "runs.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(dir.join(f)).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

#[test]
fn a_secret_echoed_by_misconfigured_plugins_is_redacted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (token, lines) = token("alice", cache.path());
    let cfg = config(dir.path(), &lines, "text");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Server::start_with(&cfg, cache.path(), "127.0.0.1:0", Stdio::from(log), &[]);
    let port = server.port;
    let mut seen = Vec::new();
    // The first release goes all at once (the webhook echoes on every
    // event); the second is analysed (the check echoes) and rolled back.
    let mut ids = Vec::new();
    for release in ["1.0.0", "1.1.0"] {
        let body = format!(r#"{{"pipeline": "web", "release": "{release}"}}"#);
        let (status, answer) = http(port, "POST", "/v1/runs", Some(&token), &[], Some(&body));
        assert_eq!(status, 202, "{answer}");
        let id = json(&answer)["id"].as_str().unwrap().to_string();
        seen.push(finished(port, &token, &id).to_string());
        ids.push(id);
    }
    let rolled = seen[1].clone();
    assert!(rolled.contains("\"rolled_back\""), "{rolled}");
    for id in &ids {
        for (path, headers) in [
            (format!("/v1/runs/{id}"), vec![]),
            (format!("/v1/runs/{id}/events"), vec![]),
            (
                format!("/v1/runs/{id}/events"),
                vec![("Accept", "text/event-stream")],
            ),
        ] {
            let (status, body) = http(port, "GET", &path, Some(&token), &headers, None);
            assert_eq!(status, 200, "{path}: {body}");
            seen.push(body);
        }
    }
    for path in ["/v1/runs", "/v1/audit", "/v1/plugins", "/v1/environments"] {
        seen.push(http(port, "GET", path, Some(&token), &[], None).1);
    }
    // The CLI, reading the same database while the server runs.
    for id in &ids {
        for extra in [&[][..], &["--output", "json"][..]] {
            let mut args = vec!["runs", "show", id, "-c", cfg.to_str().unwrap()];
            args.extend(extra);
            let out = rollcage(&args, cache.path());
            seen.push(text(&out.stdout) + &text(&out.stderr));
        }
    }
    seen.push(database_files(dir.path()));
    // While it runs: what the host created is its owner's only.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let local = dir.path().join(".rollcage-local");
    for (path, want) in [
        (dir.path().join("runs.db"), 0o600),
        (dir.path().join("runs.db-wal"), 0o600),
        (dir.path().join("runs.db-shm"), 0o600),
        (local.clone(), 0o700),
        (local.join("logs"), 0o700),
        (local.join("state.json"), 0o600),
        (cache.path().join("rollcage/components"), 0o700),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    let logs: Vec<_> = std::fs::read_dir(local.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!logs.is_empty());
    for log in logs.iter().filter(|p| p.is_file()) {
        assert_eq!(mode(log), 0o600, "{}", log.display());
    }
    assert_eq!(server.stop(), Some(0));
    // A clean stop leaves the WAL empty: everything is in the database.
    assert_eq!(
        std::fs::metadata(dir.path().join("runs.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0),
        0
    );
    seen.push(database_files(dir.path()));
    let server_log = std::fs::read_to_string(&log_path).unwrap();
    seen.push(server_log.clone());

    // Loading every plugin the configuration uses.
    let out = rollcage(&["config", "check", cfg.to_str().unwrap()], cache.path());
    seen.push(text(&out.stdout) + &text(&out.stderr));

    // A one-off run with JSON logs, through the same plugins.
    let cfg_json = config(dir.path(), &lines, "json");
    let out = rollcage(
        &[
            "run",
            "web",
            "--release",
            "1.2.0",
            "-c",
            cfg_json.to_str().unwrap(),
            "-vv",
        ],
        cache.path(),
    );
    let json_log = text(&out.stderr);
    assert!(json_log.contains("{\""), "not JSON lines: {json_log}");
    seen.push(text(&out.stdout) + &json_log);
    seen.push(database_files(dir.path()));

    let all = seen.join("\n");
    assert_eq!(
        all.matches(CANARY).count(),
        0,
        "the canary leaked: {}",
        &all[all.find(CANARY).unwrap().saturating_sub(300)..]
    );
    // Where it was echoed, its name stands in: in the run's record (the
    // webhook's and the check's errors), in both logs.
    for (what, text) in [
        ("rolled-back run", rolled.as_str()),
        ("server log", server_log.as_str()),
        ("JSON log", json_log.as_str()),
    ] {
        assert!(text.contains("[secret CANARY]"), "{what}: {text}");
    }
    assert!(
        rolled.contains("status?key=[secret CANARY]"),
        "the check's error: {rolled}"
    );
}
