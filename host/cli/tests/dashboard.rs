//! The dashboard in a real browser: Debian's Chromium driven through
//! chromedriver with fantoccini, against a real `rollcage serve` with the
//! local runtime. One host, one browser, the scenarios in order: sign in
//! (and land on the page a link pointed at), approve as an approver, watch
//! a canary move without reloading, a viewer sees no enabled action, the
//! live connection cut (through a relay) and the page saying so until it
//! reconnects, a cross-site POST is refused, a bad release's page shows
//! its failing measurement above the threshold and the rollback first, and
//! a session that sat idle asks to sign in again. On every page axe-core (a test
//! fixture, `tests/fixtures/axe`, installed by `npm ci`) must find no
//! serious or critical WCAG 2 A/AA violation, and each page is saved as a
//! screenshot at desktop and phone width under `target/screenshots/`.
//!
//! Without chromium, chromedriver or the axe fixture the test prints
//! SKIPPED; with `CI=true` (where `.ci/run` installs them) it fails.
//! chromedriver runs in a process group of its own, killed with the
//! browser in it when the test ends, however it ends.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, http, json, token};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push("chromium (apt-get install chromium)".to_string());
    }
    if Command::new("chromedriver")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        missing.push("chromedriver (apt-get install chromium-driver)".to_string());
    }
    if !axe_script().exists() {
        missing.push(format!(
            "axe-core ({}; npm ci --prefix host/cli/tests/fixtures/axe)",
            axe_script().display()
        ));
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn axe_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/axe/node_modules/axe-core/axe.min.js")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("screenshots")
}

/// chromedriver in its own process group; dropping it kills the group
/// (chromedriver and every browser process it started).
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        unsafe { kill(-group, 9) };
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A TCP relay in front of the host, which can cut every connection
/// through it and refuse new ones for a while: the browser's live stream
/// really drops, and comes back once the relay takes connections again.
struct Relay {
    port: u16,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let (o, r) = (open.clone(), refusing.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if r.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut list = o.lock().unwrap();
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        list.push(c);
                    }
                }
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay {
            port,
            open,
            refusing,
        }
    }

    /// Cut every connection, and refuse new ones until [`Relay::resume`].
    fn cut(&self) {
        self.refusing.store(true, Ordering::Relaxed);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn resume(&self) {
        self.refusing.store(false, Ordering::Relaxed);
    }
}

/// The browser, a page at a time.
struct Browser {
    client: Client,
    base: String,
    axe: String,
    shots: PathBuf,
    /// Serious or critical accessibility violations, by page.
    violations: Vec<String>,
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Until `css` matches, for at most `secs`.
    async fn wait_for(&self, css: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.count(css).await == 0 {
            if Instant::now() > deadline {
                let source = self.client.source().await.unwrap_or_default();
                panic!(
                    "`{css}` did not appear within {secs} s on {}:\n{source}",
                    self.path().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the browser is at `want` (path and query): a page's
    /// own elements are no proof, since the sign-in page has them too.
    async fn wait_path(&self, want: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let at = self.path().await;
            if at == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the browser is at {at}, not {want}, after {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Check the page with axe-core and save it at both widths.
    async fn check_page(&mut self, name: &str) {
        self.client.execute(&self.axe, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
                  .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
                  .catch(e => done(['axe failed: ' + e]));"#,
                vec![],
            )
            .await
            .unwrap();
        for v in found.as_array().cloned().unwrap_or_default() {
            self.violations
                .push(format!("{name}: {}", v.as_str().unwrap_or("?")));
        }
        for (width, height, label) in [(1280, 900, "desktop"), (390, 844, "phone")] {
            self.client.set_window_size(width, height).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            // The whole page: the window as tall as the page at this width
            // (the browser's screen is made tall enough for it).
            let tall = self
                .client
                .execute("return document.documentElement.scrollHeight", vec![])
                .await
                .unwrap()
                .as_u64()
                .unwrap_or(0) as u32;
            if tall > height {
                self.client
                    .set_window_size(width, (tall + 200).min(8000))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let png = self
                .client
                .find(Locator::Css("body"))
                .await
                .unwrap()
                .screenshot()
                .await
                .unwrap();
            std::fs::write(self.shots.join(format!("{name}-{label}.png")), png).unwrap();
        }
        self.client.set_window_size(1280, 900).await.unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.wait_for("#token", 10).await;
        self.client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.click("form.stack button[type=submit]").await;
    }

    async fn sign_out(&self) {
        self.click("header .who button").await;
        self.wait_for("#token", 10).await;
    }
}

/// A host with the local runtime: `staging` is a canary analysed by the
/// router's error ratio (pass if < 0.05), `production` needs an approver.
/// Release 1.2.0 fails every request.
fn config(dir: &Path, tokens: &str) -> PathBuf {
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[server.api]
session_idle = "30s"
requests_per_second = 1000
burst = 1000

[checks.error-rate]
plugin = "router-metrics"
config = {{ service = "{{environment}}-web", metric = "error_ratio", window = "2s", pass_if = "< 0.05", min_requests = 3 }}

[environments.staging]
provider = "local"
strategy = {{ plugin = "canary", steps = [25, {{ pause = "3s" }}, 50, {{ pause = "3s" }}, 100] }}
analysis = {{ checks = ["error-rate"], initial_delay = "2s", interval = "1s", count = 2 }}
replicas = 2
progress_deadline = "30s"

[environments.production]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
replicas = 1
progress_deadline = "30s"
approval = "manual"

[pipelines.web]
stages = ["staging", "production"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}", RELEASE_ERROR_RATES = "1.2.0=1" }}, health_path = "/healthz" }}

{tokens}
"#
        ),
    )
    .unwrap();
    path
}

/// Steady requests at every service's front port (read from the local
/// runtime's state file), so that the router has an error ratio to judge.
fn traffic(dir: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let state =
                std::fs::read_to_string(dir.join(".rollcage-local/state.json")).unwrap_or_default();
            let fronts: Vec<u16> = serde_json::from_str::<Value>(&state)
                .ok()
                .and_then(|v| v.get("services").cloned())
                .and_then(|s| s.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s["front"].as_str()?.rsplit(':').next()?.parse().ok())
                .collect();
            for port in fronts {
                if let Ok(mut sock) = TcpStream::connect(("127.0.0.1", port)) {
                    use std::io::{Read, Write};
                    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = sock.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n");
                    let _ = sock.read_to_end(&mut Vec::new());
                }
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    })
}

fn start_run(server: &Server, admin: &str, release: &str) -> String {
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/runs",
        Some(admin),
        &[],
        Some(&format!(r#"{{"pipeline": "web", "release": "{release}"}}"#)),
    );
    assert_eq!(status, 202, "{body}");
    json(&body)["id"].as_str().unwrap().to_string()
}

fn status_of(server: &Server, admin: &str, id: &str) -> String {
    let (_, body) = http(
        server.port,
        "GET",
        &format!("/v1/runs/{id}"),
        Some(admin),
        &[],
        None,
    );
    json(&body)["run"]["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn until_status(server: &Server, admin: &str, id: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status_of(server, admin, id);
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} is {s}, not {want}, after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_browser() {
    if let Some(why) = missing_tools() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the dashboard's browser test needs {why}; .ci/run installs them");
        }
        eprintln!("SKIPPED the dashboard's browser test: no {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (admin, a) = token("alice", "admin", &[], cache.path());
    let (approver, b) = token("bob", "approver", &[], cache.path());
    let (viewer, v) = token("vic", "viewer", &[], cache.path());
    let cfg = config(dir.path(), &format!("{a}\n{b}\n{v}"));
    let server = Server::start_with(&cfg, cache.path(), "127.0.0.1:0", Stdio::null(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(dir.path().to_path_buf(), stop.clone());

    let driver = Driver::start();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900", "--screen-info={0,0 1280x8000}"]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session");
    let shots = screenshots_dir();
    std::fs::create_dir_all(&shots).unwrap();
    let mut b = Browser {
        client,
        base: server.url(),
        axe: std::fs::read_to_string(axe_script()).unwrap(),
        shots,
        violations: Vec::new(),
    };

    // A first release waits for an approver before production. A link to
    // its page asks to sign in, then lands on it.
    let first = start_run(&server, &admin, "1.0.0");
    until_status(&server, &admin, &first, "awaiting_approval", 60).await;
    b.goto(&format!("/ui/runs/{first}")).await;
    assert!(
        b.path().await.starts_with("/ui/login?next=/ui/runs/"),
        "{}",
        b.path().await
    );
    b.check_page("login").await;
    b.sign_in(&approver).await;
    b.wait_for("#run-status", 10).await;
    assert_eq!(b.path().await, format!("/ui/runs/{first}"));
    assert_eq!(b.text_of("#who").await, "bob (approver)");

    // Approve as an approver: the button, what will happen, the run goes on
    // and the page follows it live to its end.
    b.wait_for(r#"a[data-action="approve"]"#, 10).await;
    b.click(r#"a[data-action="approve"]"#).await;
    b.wait_for("#confirm", 10).await;
    assert!(
        b.text_of("#what-happens")
            .await
            .contains("goes on in stage production")
    );
    b.check_page("confirm-approve").await;
    b.click("#confirm").await;
    b.wait_for(r#"#run-status[data-status="succeeded"]"#, 60)
        .await;
    assert_eq!(status_of(&server, &admin, &first), "succeeded");
    b.check_page("run-succeeded").await;
    b.sign_out().await;

    // A viewer watches a canary move, live: the page is loaded once, and
    // the traffic bars of its steps appear as they are taken.
    b.goto("/ui/runs").await;
    b.sign_in(&viewer).await;
    b.wait_for("#runs-table", 10).await;
    let canary = start_run(&server, &admin, "1.1.0");
    // The runs list gets it without a reload.
    b.wait_for(&format!(r#"tr[data-run="{canary}"]"#), 15).await;
    b.wait_for(r#"#live-status[data-state="live"]"#, 10).await;
    b.check_page("runs").await;
    b.goto(&format!("/ui/runs/{canary}")).await;
    b.wait_for(r#"#live-status[data-state="live"]"#, 10).await;
    b.client
        .execute(
            "document.body.setAttribute('data-loaded-once', 'yes')",
            vec![],
        )
        .await
        .unwrap();
    b.wait_for(r#"svg.split[aria-label*="1.1.0 25%"]"#, 60)
        .await;
    b.check_page("run-live").await;
    b.wait_for(r#"svg.split[aria-label*="1.1.0 50%"]"#, 60)
        .await;
    b.wait_for(r#"figure.analysis svg.chart circle.point.pass"#, 60)
        .await;
    assert_eq!(
        b.count("body[data-loaded-once=yes]").await,
        1,
        "the page was not reloaded"
    );
    // A viewer sees every action there, none enabled, each naming the role.
    b.wait_for(r#"#run-status[data-status="awaiting_approval"]"#, 90)
        .await;
    let actions = b
        .client
        .find_all(Locator::Css("#actions [data-action]"))
        .await
        .unwrap();
    assert!(!actions.is_empty());
    for a in &actions {
        assert_eq!(
            a.attr("disabled").await.unwrap().as_deref(),
            Some("true"),
            "{}",
            a.html(false).await.unwrap()
        );
        assert!(a.text().await.unwrap().contains("needs approver or admin"));
    }
    assert_eq!(b.count(r#"#actions a[data-action]"#).await, 0);
    b.check_page("run-viewer").await;

    // The live connection drops (through a relay that cuts it): the page
    // says so; it reconnects by itself, and the page says that too. The
    // session's cookie goes to the relay's port as well (cookies are per
    // host, not per port).
    let relay = Relay::start(server.port);
    b.client
        .goto(&format!("http://127.0.0.1:{}/ui/runs/{canary}", relay.port))
        .await
        .unwrap();
    b.wait_for(r#"#live-status[data-state="live"]"#, 10).await;
    relay.cut();
    b.wait_for(r#"#live-status[data-state="lost"]"#, 20).await;
    assert!(b.text_of("#live-status").await.contains("reconnecting"));
    b.check_page("run-reconnecting").await;
    relay.resume();
    b.wait_for(r#"#live-status[data-state="live"]"#, 30).await;

    // Another site's form posting an approval: refused, and the run still
    // waits.
    let attack = format!(
        "data:text/html,<form method=post action='{}/ui/runs/{canary}/actions/approve'><input name=csrf value=x></form><script>document.forms[0].submit()</script>",
        server.url()
    );
    b.client.goto(&attack).await.unwrap();
    b.wait_for("#problem", 10).await;
    assert!(
        b.text_of("#problem").await.contains("another site"),
        "{}",
        b.text_of("#problem").await
    );
    assert_eq!(status_of(&server, &admin, &canary), "awaiting_approval");
    let (s, body) = http(
        server.port,
        "POST",
        &format!("/v1/runs/{canary}/approve"),
        Some(&approver),
        &[],
        None,
    );
    assert_eq!(s, 202, "{body}");
    until_status(&server, &admin, &canary, "succeeded", 60).await;

    // A bad release: the page shows the rollback first, with its reason,
    // and the failing measurement drawn above its threshold.
    let bad = start_run(&server, &admin, "1.2.0");
    until_status(&server, &admin, &bad, "rolled_back", 90).await;
    b.goto(&format!("/ui/runs/{bad}")).await;
    b.wait_for("section.rollback", 10).await;
    let order: Value = b
        .client
        .execute(
            r#"const rb = document.querySelector('section.rollback');
               const strip = document.querySelector('ol.strip');
               const line = document.querySelector('svg.chart line.threshold');
               const fails = [...document.querySelectorAll('svg.chart circle.point.fail')];
               return {rollback_first: !!(rb.compareDocumentPosition(strip) & Node.DOCUMENT_POSITION_FOLLOWING),
                       reason: rb.textContent,
                       line_y: line ? Number(line.getAttribute('y1')) : null,
                       threshold: line ? Number(line.dataset.value) : null,
                       fails: fails.map(c => [Number(c.getAttribute('cy')), Number(c.dataset.value)])};"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(order["rollback_first"], true, "{order}");
    assert!(
        order["reason"]
            .as_str()
            .unwrap()
            .contains("check `error-rate` failed"),
        "{order}"
    );
    assert_eq!(order["threshold"], 0.05, "{order}");
    let line_y = order["line_y"].as_f64().unwrap();
    let fails = order["fails"].as_array().unwrap();
    assert!(!fails.is_empty(), "{order}");
    for f in fails {
        assert!(
            f[1].as_f64().unwrap() > 0.05 && f[0].as_f64().unwrap() < line_y,
            "a failing point above the line: {order}"
        );
    }
    b.check_page("run-rolled-back").await;

    // The other pages, and a run that does not exist.
    for (path, name) in [
        ("/ui/environments", "environments"),
        ("/ui/plugins", "plugins"),
        ("/ui/audit", "audit"),
        ("/ui/start", "start"),
        ("/ui/runs/r-nope", "not-found"),
    ] {
        b.goto(path).await;
        b.wait_for("main h1", 10).await;
        b.check_page(name).await;
    }
    assert!(b.text_of("main").await.contains("r-nope"));
    b.goto("/ui/audit").await;
    let audit = b.text_of("main").await;
    assert!(
        audit.contains("vic") && audit.contains("login") && audit.contains("logout"),
        "{audit}"
    );

    // Left idle past `session_idle`, the next click asks to sign in again
    // and then goes where it was going. (30 s, not 10: a page watching a
    // run refreshes its session at each change of the run, and in one full
    // run of the suite more than 10 s passed between two, so the live page
    // was sent to sign in.)
    b.goto("/ui/plugins").await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    b.click(r#"nav a[href="/ui/audit"]"#).await;
    b.wait_for("#notice", 10).await;
    assert!(b.text_of("#notice").await.contains("session ended"));
    assert_eq!(b.path().await, "/ui/login?next=/ui/audit&expired=1");
    b.check_page("session-expired").await;
    b.sign_in(&viewer).await;
    b.wait_path("/ui/audit", 10).await;
    b.wait_for("main h1", 10).await;

    let violations = std::mem::take(&mut b.violations);
    b.client.close().await.unwrap();
    drop(driver);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        violations.is_empty(),
        "accessibility:\n{}",
        violations.join("\n")
    );
}
