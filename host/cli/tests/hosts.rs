//! Several active hosts on one PostgreSQL database, tried with faults:
//! the owner of 20 runs killed (SIGKILL), a host paused past its lease
//! (SIGSTOP, then SIGCONT), every database connection killed again and
//! again, three hosts started at once on 100 queued runs, and an approval
//! through a host that does not drive the run. Each prints its figures,
//! and after each an SQL check finds no gap in any run's log and no epoch
//! going backwards.
//!
//! The environments live in a test server (`remote-provider` fixture), so
//! that every host acts on the same ones and the server sees each action.
//! The PostgreSQL cluster is started once for this binary
//! (`rollcage_store::pgtest`); without PostgreSQL the tests print SKIPPED
//! (and fail under `CI=true`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollcage_store::pgtest::Cluster;
use serde_json::{Value, json};

mod common;
use common::{Server, http, json, token};

/// Lease of the hosts here: a dead host's runs are taken over within it.
const LEASE: &str = "2s";
/// Lease of the hosts that share 100 runs.
const QUEUED_LEASE: &str = "6s";

/// A test's figures, on the process's standard error as they come: the
/// test harness keeps `println!` of a passing test to itself, and these
/// are meant for CI's log.
macro_rules! figures {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// One test at a time: each starts up to three hosts on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The environments' server: every environment's slots and weights, and
/// every action in the order it came.
struct EnvState {
    slots: BTreeMap<String, (String, u32)>,
    weights: Vec<(String, u32)>,
}

/// An environment runs 1.0.0 before the tests deploy: a canary then has a
/// stable release to split traffic with.
impl Default for EnvState {
    fn default() -> Self {
        EnvState {
            slots: BTreeMap::from([("1.0.0".to_string(), ("1.0.0".to_string(), 2))]),
            weights: vec![("1.0.0".to_string(), 100)],
        }
    }
}

struct Envs {
    port: u16,
    state: Arc<Mutex<HashMap<String, EnvState>>>,
    actions: Arc<Mutex<Vec<(String, String)>>>,
}

impl Envs {
    fn start() -> Envs {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<HashMap<String, EnvState>>> = Arc::default();
        let actions: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (s, a) = (state.clone(), actions.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let (s, a) = (s.clone(), a.clone());
                std::thread::spawn(move || serve(sock, port, &s, &a));
            }
        });
        Envs {
            port,
            state,
            actions,
        }
    }

    /// The traffic split of `env`, as the server holds it.
    fn weights(&self, env: &str) -> Vec<(String, u32)> {
        let state = self.state.lock().unwrap();
        state
            .get(env)
            .map(|e| e.weights.clone())
            .unwrap_or_default()
    }

    /// The slots of `env` and their releases.
    fn slots(&self, env: &str) -> Vec<(String, String)> {
        let state = self.state.lock().unwrap();
        state
            .get(env)
            .map(|e| {
                e.slots
                    .iter()
                    .map(|(k, (r, _))| (k.clone(), r.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One request on `sock`: the provider's `apply`, `route`, `remove` or
/// `status`.
fn serve(
    sock: TcpStream,
    port: u16,
    state: &Mutex<HashMap<String, EnvState>>,
    actions: &Mutex<Vec<(String, String)>>,
) {
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
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
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, answer) = {
        let mut envs = state.lock().unwrap();
        let env_name = |b: &Value| b["environment"].as_str().unwrap_or("").to_string();
        match path.split('?').next().unwrap() {
            "/apply" => {
                let e = envs.entry(env_name(&body)).or_default();
                e.slots.insert(
                    body["slot"].as_str().unwrap().into(),
                    (
                        body["release"].as_str().unwrap().into(),
                        body["replicas"].as_u64().unwrap() as u32,
                    ),
                );
                actions
                    .lock()
                    .unwrap()
                    .push(("apply".into(), env_name(&body)));
                (200, json!({}))
            }
            "/route" => {
                let e = envs.entry(env_name(&body)).or_default();
                let weights: Vec<(String, u32)> = body["weights"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| {
                        (
                            w["slot"].as_str().unwrap().to_string(),
                            w["weight"].as_u64().unwrap() as u32,
                        )
                    })
                    .collect();
                // Never weight on a slot that does not exist.
                let unknown: Vec<&String> = weights
                    .iter()
                    .filter(|(s, w)| *w > 0 && !e.slots.contains_key(s))
                    .map(|(s, _)| s)
                    .collect();
                if !unknown.is_empty() {
                    (409, json!({"error": format!("no slot {unknown:?}")}))
                } else {
                    e.weights = weights;
                    actions
                        .lock()
                        .unwrap()
                        .push(("route".into(), env_name(&body)));
                    (200, json!({}))
                }
            }
            "/remove" => {
                let e = envs.entry(env_name(&body)).or_default();
                let slot = body["slot"].as_str().unwrap().to_string();
                // Never remove a slot that still has weight.
                if e.weights.iter().any(|(s, w)| *s == slot && *w > 0) {
                    (
                        409,
                        json!({"error": format!("slot {slot} still has weight")}),
                    )
                } else {
                    e.slots.remove(&slot);
                    actions
                        .lock()
                        .unwrap()
                        .push(("remove".into(), env_name(&body)));
                    (200, json!({}))
                }
            }
            "/status" => {
                let env = path.split("environment=").nth(1).unwrap_or("").to_string();
                let e = envs.entry(env).or_default();
                let slots: Vec<Value> = e
                    .slots
                    .iter()
                    .map(|(name, (release, replicas))| {
                        json!({"name": name, "release": release, "desired": replicas, "ready": replicas, "endpoints": [format!("127.0.0.1:{port}")]})
                    })
                    .collect();
                let weights: Vec<Value> = e
                    .weights
                    .iter()
                    .map(|(s, w)| json!({"slot": s, "weight": w}))
                    .collect();
                (200, json!({"slots": slots, "weights": weights}))
            }
            _ => (404, json!({"error": "not found"})),
        }
    };
    let text = answer.to_string();
    let mut sock = sock;
    let _ = write!(
        sock,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// Everything one test runs against.
struct Setup {
    _dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    url: String,
    alice: String,
    bob: String,
    envs: Envs,
}

/// A fresh database, the environments' server and a configuration of
/// `n` environments (`env0`...) whose canary takes `steps`, with the
/// host-level lines `server` added.
fn setup(name: &str, n: usize, steps: &str, server: &str) -> Option<Setup> {
    let cluster = Cluster::shared()?;
    let url = runtime().block_on(cluster.database(name));
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let envs = Envs::start();
    let (alice, a_block) = token("alice", "admin", &[], cache.path());
    let (bob, b_block) = token("bob", "approver", &[], cache.path());
    let wasm = rollcage_tests::fixture("remote-provider");
    let mut toml = format!(
        r#"[server]
database = "{url}"
lease = "{LEASE}"
{server}

{a_block}
{b_block}

[plugins.remote]
component = "{wasm}"
kind = "environment-provider"
allow_hosts = ["127.0.0.1:{port}"]
config = {{ url = "http://127.0.0.1:{port}" }}
"#,
        wasm = wasm.display(),
        port = envs.port,
    );
    let mut stages = Vec::new();
    for i in 0..n {
        toml.push_str(&format!(
            "\n[environments.env{i}]\nprovider = \"remote\"\nstrategy = {{ plugin = \"canary\", steps = {steps} }}\n"
        ));
        stages.push(format!("\"env{i}\""));
    }
    toml.push_str(&format!(
        "\n[pipelines.svc]\nstages = [{}]\nservice = {{ image = \"svc:{{release}}\" }}\n",
        stages.join(", ")
    ));
    let config = dir.path().join("rollcage.toml");
    std::fs::write(&config, toml).unwrap();
    let out = common::rollcage(&["config", "check", config.to_str().unwrap()], cache.path());
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    Some(Setup {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        cache,
        config,
        url,
        alice,
        bob,
        envs,
    })
}

impl Setup {
    /// A `rollcage serve` on a free port, its log in `name.log`.
    fn host(&self, name: &str) -> Server {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        Server::start_with(
            &self.config,
            self.cache.path(),
            "127.0.0.1:0",
            Stdio::from(log),
            &[("ROLLCAGE_LOG", "info")],
        )
    }

    fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Start a run of release `release` through `env` on `host`; its id.
    fn start(&self, host: &Server, env: &str, release: &str) -> String {
        let body = json!({"pipeline": "svc", "release": release, "stages": [env]}).to_string();
        let (status, answer) = http(
            host.port,
            "POST",
            "/v1/runs",
            Some(&self.alice),
            &[],
            Some(&body),
        );
        assert_eq!(status, 202, "{answer}");
        json(&answer)["id"].as_str().unwrap().to_string()
    }

    /// One SQL query's rows as (text) columns.
    fn sql(&self, query: &str) -> Vec<Vec<String>> {
        runtime().block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let rows = client.simple_query(query).await.unwrap();
            rows.into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("").to_string())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
    }

    fn count(&self, query: &str) -> usize {
        self.sql(query)[0][0].parse().unwrap()
    }

    /// Until `query` counts `want`, at most `limit`; how long it took.
    fn until_count(&self, query: &str, want: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let n = self.count(query);
            if n == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "after {limit:?}: {n} (want {want}) for {query}\nruns: {:?}\nlast entries: {:?}",
                self.sql("SELECT id, status, reason, owner, epoch FROM runs ORDER BY id LIMIT 5"),
                self.sql("SELECT run_id, seq, kind, left(data, 200) FROM events ORDER BY run_id, seq DESC LIMIT 12")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The checks after every fault: no gap in any run's sequence, no
    /// entry under an older epoch than the one before it, every milestone
    /// at most once, and every run ended as `status`.
    fn check(&self, runs: usize, status: &str) {
        let gaps = self.count(
            "SELECT count(*) FROM (SELECT run_id FROM events GROUP BY run_id HAVING max(seq) <> count(*)) g",
        );
        assert_eq!(gaps, 0, "runs whose log has a gap");
        let backwards = self.count(
            "SELECT count(*) FROM (SELECT epoch < lag(epoch) OVER (PARTITION BY run_id ORDER BY seq) AS back FROM events) t WHERE back",
        );
        assert_eq!(backwards, 0, "entries written under an older epoch");
        let twice = self.count(
            "SELECT count(*) FROM (SELECT run_id, kind, stage FROM events WHERE kind IN ('run-started', 'stage-started', 'stage-finished', 'run-finished') GROUP BY run_id, kind, stage HAVING count(*) > 1) t",
        );
        assert_eq!(twice, 0, "milestones recorded twice");
        let ended = self.count(&format!(
            "SELECT count(*) FROM runs WHERE status = '{status}'"
        ));
        assert_eq!(ended, runs, "runs {status}");
    }
}

/// Send `signal` to `server`'s process.
fn signal(server: &Server, signal: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    unsafe { kill(server.child.id() as i32, signal) };
}

const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// Steps that hold a run in its stage a while, at half its traffic.
const PAUSED: &str =
    r#"[{ weight = 50, analysis = false }, { pause = "6s" }, { weight = 100, analysis = false }]"#;

/// A host name as the store knows it (`host/pid/...`): `server`'s prefix.
fn owner_prefix(server: &Server) -> String {
    format!("%/{}/%", server.child.id())
}

#[test]
fn the_runs_of_a_killed_host_are_taken_over_and_each_ends_once() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("killed", 20, PAUSED, "") else {
        return;
    };
    let mut a = s.host("a");
    let ids: Vec<String> = (0..20)
        .map(|i| s.start(&a, &format!("env{i}"), "2.0.0"))
        .collect();
    // All 20 driven by A, and half way (traffic split, pausing).
    s.until_count(
        &format!(
            "SELECT count(*) FROM runs WHERE owner LIKE '{}'",
            owner_prefix(&a)
        ),
        20,
        Duration::from_secs(60),
    );
    s.until_count(
        "SELECT count(DISTINCT run_id) FROM events WHERE kind = 'intent' AND data LIKE '%\"pause\"%'",
        20,
        Duration::from_secs(60),
    );
    let b = s.host("b");
    let c = s.host("c");
    let killed = Instant::now();
    signal(&a, SIGKILL);
    let _ = a.child.wait();
    // Taken over: every run held by B or C.
    let takeover = s.until_count(
        &format!(
            "SELECT count(*) FROM runs WHERE status IN ('succeeded', 'rolled_back', 'failed') OR (owner IS NOT NULL AND owner NOT LIKE '{}')",
            owner_prefix(&a)
        ),
        20,
        Duration::from_secs(30),
    );
    s.until_count(
        "SELECT count(*) FROM runs WHERE status = 'succeeded'",
        20,
        Duration::from_secs(120),
    );
    let all = killed.elapsed();
    s.check(20, "succeeded");
    // The environments agree: each at 100% on 2.0.0, nothing else left.
    for i in 0..20 {
        let env = format!("env{i}");
        let weights = s.envs.weights(&env);
        assert_eq!(
            weights.iter().map(|w| w.1).sum::<u32>(),
            100,
            "{env}: {weights:?}"
        );
        let slots = s.envs.slots(&env);
        assert!(slots.iter().all(|(_, r)| r == "2.0.0"), "{env}: {slots:?}");
    }
    let by: Vec<Vec<String>> =
        s.sql("SELECT count(DISTINCT epoch) FROM events GROUP BY run_id ORDER BY 1");
    assert!(
        by.iter().all(|r| r[0] == "2"),
        "each run under two epochs: {by:?}"
    );
    let actions = s.envs.actions.lock().unwrap().len();
    figures!(
        "FIGURES killed owner of 20 runs: taken over in {:.1} s (lease {LEASE}), all ended {:.1} s after the kill; {actions} environment actions; no gap, no epoch backwards",
        takeover.as_secs_f64(),
        all.as_secs_f64()
    );
    // The survivors stop (SIGTERM) as they are dropped.
    drop((b, c));
    assert_eq!(ids.len(), 20);
}

#[test]
fn a_host_paused_past_its_lease_has_its_writes_refused_when_it_wakes() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("paused", 5, PAUSED, "") else {
        return;
    };
    let a = s.host("a");
    for i in 0..5 {
        s.start(&a, &format!("env{i}"), "2.0.0");
    }
    s.until_count(
        "SELECT count(DISTINCT run_id) FROM events WHERE kind = 'intent' AND data LIKE '%\"pause\"%'",
        5,
        Duration::from_secs(60),
    );
    let epochs_before = s.count("SELECT max(epoch) FROM runs");
    let b = s.host("b");
    signal(&a, SIGSTOP);
    let takeover = s.until_count(
        &format!(
            "SELECT count(*) FROM runs WHERE status = 'succeeded' OR (owner IS NOT NULL AND owner NOT LIKE '{}')",
            owner_prefix(&a)
        ),
        5,
        Duration::from_secs(30),
    );
    // A wakes up while B drives its runs (or has finished them).
    signal(&a, SIGCONT);
    s.until_count(
        "SELECT count(*) FROM runs WHERE status = 'succeeded'",
        5,
        Duration::from_secs(60),
    );
    // Give A a moment to try (and fail) to go on.
    std::thread::sleep(Duration::from_secs(3));
    let log = s.log_of("a");
    let fenced = log.matches("another host drives the run now").count()
        + log.matches("lost the run's lease to another host").count();
    assert!(
        fenced > 0,
        "the paused host never learned it lost its runs:\n{log}"
    );
    s.check(5, "succeeded");
    // Every entry after B's claim is B's: A wrote nothing under its old
    // epoch once B held the run (the epoch check above), and the runs ended
    // under B's.
    let old_after_new = s.count(&format!(
        "SELECT count(*) FROM events e WHERE e.epoch <= {epochs_before} AND e.seq > (SELECT min(seq) FROM events f WHERE f.run_id = e.run_id AND f.epoch > {epochs_before})"
    ));
    assert_eq!(
        old_after_new, 0,
        "writes under an old epoch after the takeover"
    );
    figures!(
        "FIGURES paused host: runs taken over {:.1} s after SIGSTOP (lease {LEASE}); fencing fired {fenced} times on wake-up; 0 writes under an old epoch",
        takeover.as_secs_f64()
    );
    drop(b);
}

#[test]
fn runs_go_on_while_every_database_connection_is_killed_again_and_again() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let steps = r#"[{ weight = 50, analysis = false }, { pause = "3s" }, { weight = 100, analysis = false }]"#;
    let Some(s) = setup("terminated", 10, steps, "") else {
        return;
    };
    let hosts = [s.host("a"), s.host("b"), s.host("c")];
    for i in 0..10 {
        s.start(&hosts[i % 3], &format!("env{i}"), "2.0.0");
    }
    let db = s.url.rsplit('/').next().unwrap().to_string();
    let mut killed = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        killed += s.count(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ));
        std::thread::sleep(Duration::from_millis(700));
    }
    let ended = s.until_count(
        "SELECT count(*) FROM runs WHERE status = 'succeeded'",
        10,
        Duration::from_secs(120),
    );
    s.check(10, "succeeded");
    figures!(
        "FIGURES connections killed: {killed} backends terminated over 8 s; all 10 runs succeeded {:.1} s after the killing stopped; no gap, no epoch backwards",
        ended.as_secs_f64()
    );
}

#[test]
fn three_hosts_started_at_once_drive_each_of_100_queued_runs_once() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup(
        "hundred",
        100,
        "[100]",
        "max_active_runs = 40\n\n[server.api]\nmax_runs_per_pipeline = 200",
    ) else {
        return;
    };
    // Driven once is what this test checks: a lease a busy two-core
    // machine running three hosts and 100 runs renews in time (a shorter
    // one may lapse, and the run is then rightly taken over).
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("lease = \"{LEASE}\""),
        &format!("lease = \"{QUEUED_LEASE}\""),
    );
    std::fs::write(&s.config, text).unwrap();
    // Queue 100 runs through a host that drives one at most, and that one
    // against an environment server that never answers; it is killed once
    // they are queued. The others wait for a host with room.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for sock in silent.incoming().flatten() {
            held.push(sock);
        }
    });
    let queuing = s.dir.join("queuer.toml");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(
            &format!("127.0.0.1:{}", s.envs.port),
            &format!("127.0.0.1:{silent_port}"),
        )
        .replace("max_active_runs = 40", "max_active_runs = 1");
    std::fs::write(&queuing, text).unwrap();
    {
        let log = std::fs::File::create(s.dir.join("queuer.log")).unwrap();
        let mut queuer = Server::start_with(
            &queuing,
            s.cache.path(),
            "127.0.0.1:0",
            Stdio::from(log),
            &[],
        );
        for i in 0..100 {
            s.start(&queuer, &format!("env{i}"), "2.0.0");
        }
        signal(&queuer, SIGKILL);
        let _ = queuer.child.wait();
    }
    let unfinished = s.count(
        "SELECT count(*) FROM runs WHERE status NOT IN ('succeeded', 'rolled_back', 'failed')",
    );
    // The one the killed host had claimed (its lease runs out first).
    let claimed = s.count("SELECT count(*) FROM runs WHERE epoch > 0");
    assert!(claimed <= 1, "{claimed}");
    // Three hosts at once.
    let started = Instant::now();
    let spawned: Vec<std::thread::JoinHandle<Server>> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let (config, cache, dir) = (
                s.config.clone(),
                s.cache.path().to_path_buf(),
                s.dir.clone(),
            );
            std::thread::spawn(move || {
                let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
                Server::start_with(
                    &config,
                    &cache,
                    "127.0.0.1:0",
                    Stdio::from(log),
                    &[("ROLLCAGE_LOG", "info")],
                )
            })
        })
        .collect();
    let hosts: Vec<Server> = spawned.into_iter().map(|h| h.join().unwrap()).collect();
    let all = s.until_count(
        "SELECT count(*) FROM runs WHERE status = 'succeeded'",
        100,
        Duration::from_secs(180),
    );
    let took = started.elapsed();
    s.check(100, "succeeded");
    // Driven once: one run-started each, and every entry of a run the
    // killed host had not claimed under one epoch.
    let started_twice = s.count(
        "SELECT count(*) FROM (SELECT run_id FROM events WHERE kind = 'run-started' GROUP BY run_id HAVING count(*) <> 1) t",
    );
    assert_eq!(started_twice, 0);
    let several = s.count(
        "SELECT count(*) FROM (SELECT run_id FROM events GROUP BY run_id HAVING count(DISTINCT epoch) > 1) t",
    );
    let warnings: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|h| {
            s.log_of(h)
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(5)
                .map(|l| format!("{h}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        several <= claimed,
        "{several} runs driven under several leases:\n{}",
        warnings.join("\n")
    );
    let per_host: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|h| s.log_of(h).matches("driving run").count())
        .collect();
    assert_eq!(per_host.iter().sum::<usize>(), 100, "{per_host:?}");
    figures!(
        "FIGURES three hosts on {unfinished} queued runs (lease {QUEUED_LEASE}): all 100 succeeded {:.1} s after the hosts started ({:.1} s after the last was up); runs under more than one lease: {several} (the killed host's); runs driven by each host: {per_host:?}",
        took.as_secs_f64(),
        all.as_secs_f64()
    );
    drop(hosts);
}

#[test]
fn an_approval_through_a_host_that_does_not_drive_the_run_reaches_its_driver() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let steps = r#"[{ weight = 50, analysis = false }, { pause = "approval" }, { weight = 100, analysis = false }]"#;
    let Some(s) = setup("approval", 1, steps, "") else {
        return;
    };
    let a = s.host("a");
    let id = s.start(&a, "env0", "2.0.0");
    s.until_count(
        "SELECT count(*) FROM runs WHERE status = 'awaiting_approval'",
        1,
        Duration::from_secs(60),
    );
    let b = s.host("b");
    let owner = s.sql(&format!("SELECT owner, epoch FROM runs WHERE id = '{id}'"));
    assert!(
        owner[0][0].contains(&format!("/{}/", a.child.id())),
        "{owner:?}"
    );
    let asked = Instant::now();
    let (status, answer) = http(
        b.port,
        "POST",
        &format!("/v1/runs/{id}/approve"),
        Some(&s.bob),
        &[],
        Some("{}"),
    );
    assert_eq!(status, 202, "{answer}");
    let latency = s.until_count(
        &format!("SELECT count(*) FROM events WHERE run_id = '{id}' AND kind = 'decision'"),
        1,
        Duration::from_secs(10),
    );
    s.until_count(
        "SELECT count(*) FROM runs WHERE status = 'succeeded'",
        1,
        Duration::from_secs(60),
    );
    let took = asked.elapsed();
    // Recorded by the host that drives the run, under its lease.
    let decision = s.sql(&format!(
        "SELECT epoch FROM events WHERE run_id = '{id}' AND kind = 'decision'"
    ));
    assert_eq!(decision[0][0], owner[0][1]);
    s.check(1, "succeeded");
    figures!(
        "FIGURES approval through another host: recorded by the driving host {:.0} ms after it was asked (LISTEN/NOTIFY; seen by polling every 100 ms), run ended {:.1} s after",
        latency.as_secs_f64() * 1000.0,
        took.as_secs_f64()
    );
}

#[test]
fn an_unreachable_database_is_an_error_naming_it_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rollcage.toml");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(
        &config,
        "[server]\ndatabase = \"postgres://deployer:hunter2secret@127.0.0.1:1/rollcage\"\n",
    )
    .unwrap();
    let out = common::rollcage(
        &[
            "serve",
            "-c",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let stderr = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("postgres://deployer:***@127.0.0.1:1/rollcage"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}

#[test]
fn a_host_that_loses_its_database_stops_driving_runs_and_says_it_is_not_ready() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup("lost", 1, PAUSED, "") else {
        return;
    };
    // A cluster of its own, to stop.
    let own = Cluster::start().unwrap();
    let url = runtime().block_on(own.database("lost"));
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&s.url, &url);
    std::fs::write(&s.config, text).unwrap();
    let host = s.host("a");
    let id = s.start(&host, "env0", "2.0.0");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(
            host.port,
            "GET",
            &format!("/v1/runs/{id}"),
            Some(&s.alice),
            &[],
            None,
        );
        if json(&body)["run"]["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = http(host.port, "GET", "/readyz", None, &[], None);
    assert_eq!(status, 200);
    drop(own);
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = http(host.port, "GET", "/readyz", None, &[], None);
        if status == 503 && json(&body)["checks"]["leases"].is_string() {
            break body;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let checks = &json(&body)["checks"];
    assert_eq!(checks["store"], "unreachable", "{body}");
    // It stops driving the run (which stays resumable): when a write
    // fails, or at the latest when its lease has run out. It still answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = s.log_of("a");
        if log.contains("stopped driving the run")
            || log.contains("ran out while the store was unreachable")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = http(host.port, "GET", "/healthz", None, &[], None);
    assert_eq!(status, 200);
}
