//! A real Prometheus (Debian's `prometheus`) on loopback for tests: scrapes
//! one target every second and evaluates the given rule files every
//! second. Without the binary a test says so and skips, except in CI
//! (`CI=true`), where a missing tool is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` (`prometheus`, `promtool`) if it runs here. `None` outside CI
/// (the caller skips, saying so); in CI a panic, since `.ci/run` installs
/// it.
pub fn tool(name: &str, test: &str) -> Option<String> {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match found {
        Ok(s) if s.success() => Some(name.into()),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("`{name}` is not installed; .ci/run installs it with apt-get")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: no `{name}` binary (apt-get install prometheus prometheus-alertmanager)"
            );
            None
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Start `bin` scraping `target` (`host:port`, path `/metrics`), with
    /// `rules` loaded.
    pub fn start(bin: &str, target: &str, rules: &[PathBuf]) -> Prometheus {
        let mut text = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: target\n    static_configs:\n      - targets: ['{target}']\n"
        );
        if !rules.is_empty() {
            text.push_str("rule_files:\n");
            for r in rules {
                text.push_str(&format!("  - '{}'\n", r.display()));
            }
        }
        Prometheus::start_with(bin, &text)
    }

    /// Start `bin` with this whole `prometheus.yml`.
    pub fn start_with(bin: &str, text: &str) -> Prometheus {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, text).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            // Its own process group: a signal to the test's group
            // (a terminal's Ctrl-C) does not race its cleanup.
            .process_group(0)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// `GET path` of its HTTP API: the body, or `None` while it is not up.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get(self.port, path)
    }

    /// The JSON answer of `GET path`, once `ready` accepts it (within 60 s).
    pub fn wait_for(
        &self,
        path: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(body) = self.get(path) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
                    && ready(&v)
                {
                    return v;
                }
                last = body;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("Prometheus never answered {path} as expected; last answer: {last}");
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, or `None`.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    sock.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    sock.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Run `promtool args`; its output, or a panic with it.
pub fn promtool(bin: &str, args: &[&str], stdin: Option<&str>, cwd: &Path) -> String {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
    text
}
