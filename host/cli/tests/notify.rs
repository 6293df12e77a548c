//! Notifications through the real binary: a notifier whose endpoint never
//! answers holds no run, `rollcage run` says what it leaves queued, and the
//! next command started on the database delivers it, in order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{rollcage, text};

/// An HTTP endpoint that holds every connection unanswered until told to
/// answer; then it answers 200 and keeps the `kind` of each event posted.
struct Endpoint {
    port: u16,
    answer: Arc<AtomicBool>,
    kinds: Arc<Mutex<Vec<String>>>,
}

impl Endpoint {
    fn start() -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(AtomicBool::new(false));
        let kinds = Arc::new(Mutex::new(Vec::new()));
        let (a, k) = (answer.clone(), kinds.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                if a.load(Ordering::SeqCst) {
                    if let Some(kind) = serve(conn) {
                        k.lock().unwrap().push(kind);
                    }
                } else {
                    held.push(conn);
                }
            }
        });
        Endpoint {
            port,
            answer,
            kinds,
        }
    }
}

/// Read one request, answer 200; the event's kind.
fn serve(conn: TcpStream) -> Option<String> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    (&conn)
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    let event: serde_json::Value = serde_json::from_slice(&body).ok()?;
    event["kind"].as_str().map(str::to_string)
}

fn config(dir: &Path, port: u16) -> String {
    let provider = rollcage_tests::fixture("static-provider");
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://rollcage.db"

[plugins.platform]
component = {provider:?}
config = {{ slot = "1.0.0", release = "1.0.0", endpoint = "127.0.0.1:1" }}

[plugins.hook]
component = "builtin:webhook"
allow_hosts = ["127.0.0.1:{port}"]
config = {{ url = "http://127.0.0.1:{port}/" }}
limits = {{ timeout_ms = 1000 }}

[environments.staging]
provider = "platform"
replicas = 1
strategy = {{ plugin = "canary", steps = [50, 100] }}

[pipelines.api]
stages = ["staging"]
notify = ["hook"]
"#,
            provider = provider.display().to_string()
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_notifier_that_never_answers_holds_no_run_and_the_next_start_delivers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start();
    let cfg = config(dir.path(), endpoint.port);
    // Compile every plugin into the cache first: the run below is timed.
    let out = rollcage(&["config", "check", &cfg], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));

    let started = Instant::now();
    let out = rollcage(
        &["run", "api", "-c", &cfg, "--release", "1.0.0"],
        dir.path(),
    );
    let took = started.elapsed();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("api 1.0.0 succeeded"), "{stdout}");
    // Delivered inline, the first event alone would take 5 tries of 1 s and
    // 15 s of backoff.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert!(
        stderr.contains("4 notification(s) not delivered yet (hook: 4)"),
        "{stderr}"
    );

    endpoint.answer.store(true, Ordering::SeqCst);
    let out = rollcage(&["runs", "resume", "-c", &cfg], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("not delivered yet"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        *endpoint.kinds.lock().unwrap(),
        ["run-started", "stage-started", "step", "succeeded"]
    );
}

/// `METHOD path`, the `Authorization` header and the body of a request.
type Seen = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

/// A ClickUp stand-in for the binary: answers every request as ClickUp
/// does when it goes through, and keeps what it was sent.
fn clickup_standin() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let (mut length, mut auth) = (0, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    } else if k.eq_ignore_ascii_case("authorization") {
                        auth = v.trim().to_string();
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let request: Vec<&str> = first.split_whitespace().take(2).collect();
            log.lock().unwrap().push((
                request.join(" "),
                auth,
                serde_json::from_slice(&body).unwrap_or_default(),
            ));
            let answer =
                r#"{"id":"86abc123","name":"Release api 1.0.0","status":{"status":"deployed"}}"#;
            let _ = (&conn).write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, seen)
}

#[test]
fn clickup_comments_on_and_moves_the_release_task_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = clickup_standin();
    let provider = rollcage_tests::fixture("static-provider");
    let cfg = dir.path().join("rollcage.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
database = "sqlite://rollcage.db"

[plugins.platform]
component = {provider:?}
config = {{ slot = "1.0.0", release = "1.0.0", endpoint = "127.0.0.1:1" }}

[plugins.clickup]
component = "builtin:clickup"
allow_hosts = ["127.0.0.1:{port}"]
secrets = ["CLICKUP_TOKEN"]
config = {{ api_url = "http://127.0.0.1:{port}/api/v2", token_secret = "CLICKUP_TOKEN", list_id = "900", success_status = "deployed" }}

[environments.staging]
provider = "platform"
replicas = 1
strategy = {{ plugin = "canary", steps = [100] }}

[pipelines.api]
stages = ["staging"]
notify = ["clickup"]
"#,
            provider = provider.display().to_string()
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let out = common::command(dir.path())
        .env("CLICKUP_TOKEN", "pk_4242_TESTTOKEN")
        .args([
            "run",
            "api",
            "-c",
            &cfg,
            "--release",
            "1.0.0",
            "--param",
            "clickup_task=86abc123",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("not delivered"), "{stderr}");
    let seen = seen.lock().unwrap().clone();
    let requests: Vec<&str> = seen.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        requests,
        [
            "POST /api/v2/task/86abc123/comment",
            "PUT /api/v2/task/86abc123"
        ],
        "{seen:?}"
    );
    // The bare token from the granted secret, as ClickUp takes it.
    assert!(seen.iter().all(|(_, auth, _)| auth == "pk_4242_TESTTOKEN"));
    assert!(
        seen[0].2["comment_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Release 1.0.0 of api deployed (run ")),
        "{seen:?}"
    );
    assert_eq!(seen[1].2, serde_json::json!({"status": "deployed"}));
}

#[test]
fn the_console_notifier_does_not_repeat_the_progress_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // The demo service on the local runtime; releases 1.2.0 and 1.3.0
    // fail every request, so their analysis fails and they are rolled back.
    let cfg = dir.path().join("rollcage.toml");
    std::fs::write(
        &cfg,
        r#"
[server]
database = "sqlite://rollcage.db"

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.root]
plugin = "probe"
config = { url = "http://{endpoint}/", expect_status = [200] }

[environments.staging]
provider = "local"
strategy = { plugin = "canary", steps = [50, 100] }
analysis = { checks = ["root"], interval = "1s", count = 1 }
replicas = 1
progress_deadline = "30s"

[pipelines.api]
stages = ["staging"]
notify = ["console"]
service = { command = ["${ROLLCAGE_EXE}", "demo-service", "--port", "{port}"], env = { VERSION = "{release}", RELEASE_ERROR_RATES = "1.2.0=1, 1.3.0=1" } }
"#,
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();

    let out = rollcage(
        &["run", "api", "-c", &cfg, "--release", "1.0.0"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Not a terminal (CI's log): the console notifier's lines are there,
    // without colour codes.
    let out = rollcage(
        &["run", "api", "-c", &cfg, "--release", "1.2.0"],
        dir.path(),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("api 1.2.0 rolled back in staging"),
        "{stdout}"
    );
    assert!(
        stderr.contains("[rolled-back] api 1.2.0 in staging"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}') && !stdout.contains('\u{1b}'),
        "{stderr}"
    );

    // A person at a terminal (a pseudo-terminal from `script`): the
    // rollback is said once, by the progress.
    let script = std::process::Command::new("script")
        .arg("--version")
        .output();
    if !script.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`script` (util-linux) is missing"
        );
        eprintln!("SKIPPED: `script` (util-linux) is missing, the terminal half is not run");
        return;
    }
    let command = format!(
        "{} run api -c {cfg} --release 1.3.0",
        env!("CARGO_BIN_EXE_rollcage")
    );
    let out = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("XDG_CACHE_HOME", dir.path())
        .env("USER", "alice")
        .env_remove("ROLLCAGE_SERVER")
        .env_remove("ROLLCAGE_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert!(
        screen.contains("api 1.3.0 rolled back in staging"),
        "{screen}"
    );
    assert!(
        !screen.contains("[rolled-back]") && !screen.contains("[analysis-failed]"),
        "the console notifier repeated the progress:\n{screen}"
    );
}

#[test]
fn a_stop_signal_ends_the_wait_for_notifications_and_leaves_them_queued() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start();
    let cfg = config(dir.path(), endpoint.port);
    // A notifier given a minute per try: the run's end waits for it.
    let text_of = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text_of.replace("timeout_ms = 1000", "timeout_ms = 60000"),
    )
    .unwrap();
    let out = rollcage(&["config", "check", &cfg], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut run = common::command(dir.path())
        .args(["run", "api", "-c", &cfg, "--release", "1.0.0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let (out, lines) = (run.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    // The run's progress has shown its end; the command now waits for the
    // notifier (a minute), and is stopped a moment into that wait.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "[staging] succeeded")
    {
        assert!(Instant::now() < deadline, "the run never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill has no memory effects; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGTERM) }, 0);
    // Well within the minute the notifier was given.
    let deadline = Instant::now() + Duration::from_secs(20);
    while run.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not end the wait for notifications"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run.wait_with_output().unwrap();
    reader.join().unwrap();
    let stdout = lines.lock().unwrap().join("\n");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stdout}{stderr}");
    assert!(stdout.contains("api 1.0.0 succeeded"), "{stdout}{stderr}");
    assert!(stderr.contains("not delivered yet (hook: "), "{stderr}");
    assert!(
        stderr.contains("terminated (SIGTERM): stopped waiting for the notifications"),
        "{stderr}"
    );
}
