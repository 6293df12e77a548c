//! A real Unleash server (npm `unleash-server`, pinned in
//! `tests/fixtures/unleash/`) on loopback for tests, on a database of the
//! test binary's throwaway PostgreSQL cluster
//! ([`rollcage_store::pgtest::Cluster`]). Unleash takes seconds to start
//! and migrate its schema, so a test binary starts it once
//! ([`Unleash::shared`]) and its tests use flags of their own.
//!
//! The server is seeded with an admin API token and a backend (client)
//! token for `development`. [`Unleash::enabled_users`] asks the server
//! itself which of a set of user ids a flag is enabled for (the Admin
//! playground API evaluates a context with Unleash's own strategy code),
//! so that a test measures exposure as Unleash's SDKs would see it.
//!
//! Without `node`, the fixture's `node_modules` (`npm ci --prefix
//! tests/fixtures/unleash`) or PostgreSQL a test prints `SKIPPED: <why>`
//! and returns, except in CI (`CI=true`), where a missing tool fails it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rollcage_store::pgtest::Cluster;
use serde_json::{Value, json};

/// The admin token the server is seeded with (`<project>:<env>.<secret>`
/// is Unleash's token format; an admin token spans all of both).
pub const ADMIN_TOKEN: &str = "*:*.rollcage-test-admin";
/// A backend (client SDK) token for `development`: the wrong kind of token
/// for the Admin API.
pub const CLIENT_TOKEN: &str = "default:development.rollcage-test-client";

/// How long Unleash may take to migrate an empty database and listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running Unleash server, its process group killed on drop (and, for
/// the shared one, when the test binary exits).
pub struct Unleash {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

static SHARED: OnceLock<Option<Unleash>> = OnceLock::new();

/// The fixture folder holding `server.js` and its `node_modules`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/unleash")
}

/// Skip (printing why) outside CI, fail in CI.
fn missing(why: &str) -> Option<Unleash> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

impl Unleash {
    /// The server of this test binary, started on first use; `None` (after
    /// printing `SKIPPED: ...`) where node, the fixture or PostgreSQL is
    /// missing outside CI.
    pub fn shared() -> Option<&'static Unleash> {
        SHARED
            .get_or_init(|| {
                let server = Unleash::start()?;
                kill_shared_at_exit();
                Some(server)
            })
            .as_ref()
    }

    /// A server of its own, on a fresh database.
    pub fn start() -> Option<Unleash> {
        let node_runs = Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !node_runs {
            return missing("no `node` on PATH (Node 20 or later runs unleash-server)");
        }
        let dir = fixture_dir();
        if !dir
            .join("node_modules/unleash-server/package.json")
            .is_file()
        {
            return missing(&format!(
                "unleash-server is not installed in {}: npm ci --prefix tests/fixtures/unleash --no-audit --no-fund",
                dir.display()
            ));
        }
        let cluster = Cluster::shared()?;
        // The cluster's helper is async (tokio-postgres); a thread of its
        // own keeps this usable from inside a test's runtime too.
        let database = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cluster.database("unleash"))
        })
        .join()
        .expect("creating Unleash's database");
        Some(Unleash::spawn(&dir, &database))
    }

    fn spawn(fixture: &Path, database: &str) -> Unleash {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("rollcage-unleash-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("unleash.log");
        let mut child = Command::new("node")
            .arg(fixture.join("server.js"))
            .current_dir(fixture)
            .env("UNLEASH_TEST_DATABASE_URL", database)
            .env("UNLEASH_TEST_PORT", "0")
            .env("UNLEASH_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("UNLEASH_TEST_CLIENT_TOKEN", CLIENT_TOKEN)
            // Its own process group: it is killed as a whole, and a ^C to
            // the test's group does not race the cleanup.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting node server.js");
        kill_when_this_process_dies(child.id());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                panic!(
                    "Unleash did not start within {START_TIMEOUT:?}; its log:\n{}",
                    log_text()
                );
            }
        };
        let server = Unleash {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
            dir,
        };
        server.wait_healthy(log_text);
        server
    }

    fn wait_healthy(&self, log: impl Fn() -> String) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, body)) = self.request("GET", "/health", None, None)
                && body.contains("GOOD")
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("Unleash's /health never said GOOD; its log:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's log so far (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unleash.log")).unwrap_or_default()
    }

    /// One HTTP/1.1 request with `token` in `Authorization`; the status and
    /// body, or the connection error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, String)> {
        http(self.port, method, path, token, body)
    }

    /// An Admin API call with the admin token; its JSON answer (`null` for
    /// an empty body). Panics on a status other than 2xx.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, text) = self
            .request(method, path, Some(ADMIN_TOKEN), body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        }
    }

    /// Create the release flag `name` in `project`, off and without
    /// strategies in every environment (as a developer does before the
    /// code that reads it ships).
    pub fn create_flag(&self, project: &str, name: &str) {
        self.admin(
            "POST",
            &format!("/api/admin/projects/{project}/features"),
            Some(&json!({ "name": name, "type": "release" })),
        );
    }

    /// The flag as the Admin API shows it.
    pub fn flag(&self, project: &str, name: &str) -> Value {
        self.admin(
            "GET",
            &format!("/api/admin/projects/{project}/features/{name}"),
            None,
        )
    }

    /// Of user ids `0..users` (`userId` in the context), those for which
    /// Unleash evaluates `flag` as enabled in `environment`. One call to
    /// the advanced playground, which evaluates every combination of the
    /// comma-separated context values on the server.
    pub fn enabled_users(&self, flag: &str, environment: &str, users: u32) -> BTreeSet<u32> {
        let ids: Vec<String> = (0..users).map(|i| i.to_string()).collect();
        let answer = self.admin(
            "POST",
            "/api/admin/playground/advanced",
            Some(&json!({
                "environments": [environment],
                "projects": "*",
                "context": { "appName": "rollcage-test", "userId": ids.join(",") },
            })),
        );
        let feature = answer["features"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == flag))
            .unwrap_or_else(|| panic!("no flag `{flag}` in the playground's answer: {answer}"));
        let results = feature["environments"][environment]
            .as_array()
            .unwrap_or_else(|| panic!("no `{environment}` in the playground's answer: {feature}"));
        assert_eq!(
            results.len(),
            users as usize,
            "the playground evaluated every user id"
        );
        results
            .iter()
            .filter(|r| r["isEnabled"] == true)
            .map(|r| {
                r["context"]["userId"]
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .unwrap_or_else(|| panic!("playground result without a userId: {r}"))
            })
            .collect()
    }
}

impl Drop for Unleash {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// SIGKILL to the process group led by `pid`.
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A test binary killed outright runs no exit handler: a detached shell
/// kills the server's group once this process is gone.
fn kill_when_this_process_dies(server: u32) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -KILL -- -{server} 2>/dev/null",
        me = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A static is never dropped: kill the shared server when the process exits.
fn kill_shared_at_exit() {
    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> i32;
    }
    extern "C" fn kill_shared() {
        if let Some(Some(server)) = SHARED.get() {
            kill_group(server.child.id());
        }
    }
    // SAFETY: `atexit` is the C library's; `kill_shared` only runs `kill`.
    unsafe {
        atexit(kill_shared);
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for a
/// test's setup and measurements against a loopback server.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        head.push_str(&format!("Authorization: {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

/// The body of a chunked transfer.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(
            super::dechunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"),
            "Wikipedia"
        );
    }
}
