//! What the end-to-end tests of the `rollcage` binary share: running it as
//! a user would, with the test's own compiled-plugin cache, as `alice`, and
//! nothing from the developer's shell that points it at a server.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary, ready for arguments and standard streams.
pub fn command(cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rollcage"));
    command
        .env("XDG_CACHE_HOME", cache)
        .env("USER", "alice")
        .env_remove("ROLLCAGE_SERVER")
        .env_remove("ROLLCAGE_TOKEN");
    command
}

/// `rollcage args`, to the end.
pub fn rollcage(args: &[&str], cache: &Path) -> Output {
    command(cache).args(args).output().unwrap()
}

/// Output as text, for messages and searching.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A token from `rollcage token new`, and the configuration lines for it.
pub fn token(name: &str, role: &str, envs: &[&str], cache: &Path) -> (String, String) {
    let mut args = vec!["token", "new", name, "--role", role];
    for e in envs {
        args.extend(["-e", e]);
    }
    let out = rollcage(&args, cache);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let lines = text(&out.stderr);
    let block = lines[lines.find("[server.tokens").unwrap()..].to_string();
    assert!(
        !block.contains(&token),
        "the token itself must not be in the config lines"
    );
    (token, block)
}

/// A running `rollcage serve`, stopped with SIGTERM on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// The first line it printed.
    pub banner: String,
}

impl Server {
    /// Start on `listen` (port 0: any free port).
    pub fn start(config: &Path, cache: &Path, listen: &str) -> Server {
        Server::start_with(config, cache, listen, Stdio::inherit(), &[])
    }

    /// [`Server::start`] with its log going to `stderr` and variables
    /// `env` set.
    pub fn start_with(
        config: &Path,
        cache: &Path,
        listen: &str,
        stderr: Stdio,
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = command(cache)
            .args(["serve", "-c", config.to_str().unwrap(), "--listen", listen])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        out.read_line(&mut banner).unwrap();
        assert!(banner.starts_with("rollcage serving http://"), "{banner:?}");
        // Keep reading so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let port = banner
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        Server {
            child,
            port,
            banner,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, and its exit code once it has stopped (within 20 s).
    pub fn stop(&mut self) -> Option<i32> {
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// One HTTP/1.0 request; status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    sock.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    sock.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The port a stand-in started with `--port 0` prints as its first line
/// (its standard output piped); `what` names it if the line is not one.
pub fn port_on_first_line(child: &mut Child, what: &str) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its standard output piped"))
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what} printed {line:?}, not its port"))
}

/// Every pid recorded in a local runtime's `state.json` under `dir`.
pub fn recorded_pids(dir: &Path) -> Vec<u32> {
    fn pids(v: &serde_json::Value, out: &mut Vec<u32>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_u64()) {
                        ("pid", Some(p)) => out.push(p as u32),
                        _ => pids(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| pids(v, out)),
            _ => {}
        }
    }
    let Ok(text) = std::fs::read_to_string(dir.join(".rollcage-local/state.json")) else {
        return vec![];
    };
    let mut all = Vec::new();
    if let Ok(v) = serde_json::from_str(&text) {
        pids(&v, &mut all);
    }
    all
}

/// Whether `pid` is a live process (not a zombie waiting for its parent).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.split_whitespace().next() != Some("Z")),
        Err(_) => false,
    }
}

/// The pids of `pids` still alive.
pub fn live(pids: &[u32]) -> Vec<u32> {
    pids.iter().copied().filter(|p| alive(*p)).collect()
}
