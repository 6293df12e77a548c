//! Item 4: the engine at scale. 10, 100 and 1,000 runs driven at once, each
//! a canary through its own environment (the real `builtin:canary` wasm
//! strategy, zero-length pauses between steps, analysis after every weight
//! change), against the engine's in-memory fake environment and a scripted
//! passing check, recorded in the SQLite store (a file, as a host runs it,
//! and in memory, to tell the engine's own cost from the disk's).
//!
//! Each size runs in a child process (`__engine-host`), which is the host:
//! engine, store and API on loopback. Its peak RSS (`VmHWM`) is therefore
//! the host's alone. The parent follows up to 100 of the runs over
//! `GET /v1/runs/{id}/events` (SSE) before they start, and stamps each
//! `step` event's arrival with `CLOCK_MONOTONIC`; the child stamps the
//! moment the engine began appending that outcome to the store (a wrapper
//! around the store), with the same clock. The difference is the latency
//! from an action's outcome to its event reaching an SSE client: the
//! durable write, the wake-up, the stream's read of the store, HTTP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rollcage_api::{Api, ApiOptions, Auth, RateSettings, Role, TokenEntry, hash_token};
use rollcage_core::{
    Action, DeployState, HealthCheck, Plugin, PluginError, PluginId, PluginKind, Strategy, Verdict,
};
use rollcage_engine::analysis::AnalysisSpec;
use rollcage_engine::fakes::{FakeProvider, scripted};
use rollcage_engine::run::{Engine, EnvironmentPlan, PipelinePlan, RunRequest};
use rollcage_notify::Dispatcher;
use rollcage_runtime::{
    Grants, Limits, LoadedPlugin, MapSecrets, PluginSpec, Runtime, RuntimeOptions,
};
use rollcage_store::{
    AuditEntry, AuditFilter, DecisionRequest, DeliveryOutcome, EnvLock, Event, Lease, NewAudit,
    NewDelivery, NewRun, QueuedDelivery, Run, RunFilter, RunStatus, SqliteStore, Store, StoreError,
    Unfinished, Wake,
};
use serde_json::{Value, json};

use crate::child::{self, ChildProc};
use crate::report::{Section, TargetRow};
use crate::stats::{Summary, fmt_bytes, fmt_rate, fmt_ratio, fmt_secs, thousands, verdict_at_most};
use crate::table::Table;

/// The issue's target: 1,000 concurrent runs within 300 MB of RSS.
const RSS_TARGET_BYTES: f64 = 300e6;
/// The canary's parameters: three zero-length pauses between four weights.
const CANARY_PARAMS: &str =
    r#"{"steps": [10, {"pause": "0s"}, 25, {"pause": "0s"}, 50, {"pause": "0s"}, 100]}"#;
/// The API token of the child host.
const TOKEN: &str = "rc_bench";
/// Runs followed over SSE, at most.
const FOLLOWED: usize = 100;

/// The store, with the moment each followed run's `step` entry started
/// being written (`CLOCK_MONOTONIC` ns), by run id and sequence number.
struct StampingStore {
    inner: Arc<dyn Store>,
    followed: OnceLock<HashSet<String>>,
    stamps: Mutex<Vec<(String, u64, u64)>>,
    /// Log appends and status changes: the engine's durable writes.
    writes: AtomicU64,
}

#[async_trait]
impl Store for StampingStore {
    fn host(&self) -> &str {
        self.inner.host()
    }
    fn lease_duration(&self) -> std::time::Duration {
        self.inner.lease_duration()
    }
    async fn create_run(&self, run: NewRun) -> Result<String, StoreError> {
        self.inner.create_run(run).await
    }
    async fn claim(&self, run_id: Option<&str>, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.inner.claim(run_id, limit).await
    }
    async fn heartbeat(&self) -> Result<Vec<Lease>, StoreError> {
        self.inner.heartbeat().await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }
    async fn release_all(&self) -> Result<(), StoreError> {
        self.inner.release_all().await
    }
    async fn holder(&self, run_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.holder(run_id).await
    }
    async fn append(
        &self,
        lease: &Lease,
        kind: &str,
        stage: Option<&str>,
        data: Value,
    ) -> Result<u64, StoreError> {
        let run_id = lease.run_id.as_str();
        let stamp = kind == "step" && self.followed.get().is_some_and(|f| f.contains(run_id));
        // The outcome is in hand when the engine asks for it to be written.
        let at = crate::machine::mono_ns();
        self.writes.fetch_add(1, Ordering::Relaxed);
        let seq = self.inner.append(lease, kind, stage, data).await?;
        if stamp {
            self.stamps
                .lock()
                .unwrap()
                .push((run_id.to_string(), seq, at));
        }
        Ok(seq)
    }
    async fn events(&self, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError> {
        self.inner.events(run_id, after_seq).await
    }
    async fn set_status(
        &self,
        lease: &Lease,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.set_status(lease, status, stage, reason).await
    }
    async fn lock_environment(
        &self,
        lease: &Lease,
        environment: &str,
        queue: bool,
    ) -> Result<EnvLock, StoreError> {
        self.inner.lock_environment(lease, environment, queue).await
    }
    async fn unlock_environment(&self, lease: &Lease, environment: &str) -> Result<(), StoreError> {
        self.inner.unlock_environment(lease, environment).await
    }
    async fn environment_locks(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.environment_locks().await
    }
    async fn run(&self, run_id: &str) -> Result<Run, StoreError> {
        self.inner.run(run_id).await
    }
    async fn run_with_log(&self, run_id: &str) -> Result<(Run, Vec<Event>), StoreError> {
        self.inner.run_with_log(run_id).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        self.inner.list_runs(filter).await
    }
    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.inner.unfinished_runs().await
    }
    async fn unfinished_count(&self, pipeline: &str) -> Result<Unfinished, StoreError> {
        self.inner.unfinished_count(pipeline).await
    }
    async fn request_decision(
        &self,
        run_id: &str,
        decision: &DecisionRequest,
    ) -> Result<(), StoreError> {
        self.inner.request_decision(run_id, decision).await
    }
    async fn take_decisions(&self, lease: &Lease) -> Result<Vec<DecisionRequest>, StoreError> {
        self.inner.take_decisions(lease).await
    }
    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        self.inner.record_audit(entry).await
    }
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(filter).await
    }
    async fn queue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<Vec<u64>, StoreError> {
        self.inner.queue_deliveries(deliveries).await
    }
    async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        self.inner.queued_deliveries().await
    }
    async fn claim_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        self.inner.claim_deliveries().await
    }
    async fn end_delivery(&self, id: u64, outcome: &DeliveryOutcome) -> Result<bool, StoreError> {
        self.inner.end_delivery(id, outcome).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn appended(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.appended()
    }
    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<Wake> {
        self.inner.wakeups()
    }
}

/// The strategy, counting its decisions.
struct Counting {
    inner: Arc<dyn Strategy>,
    decisions: AtomicU64,
}

impl Plugin for Counting {
    fn id(&self) -> &PluginId {
        self.inner.id()
    }
}

#[async_trait]
impl Strategy for Counting {
    async fn validate(&self, params: &str) -> Result<(), PluginError> {
        self.inner.validate(params).await
    }
    async fn decide(&self, state: &DeployState) -> Result<Action, PluginError> {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        self.inner.decide(state).await
    }
    async fn rollback(&self, state: &DeployState) -> Result<Vec<Action>, PluginError> {
        self.inner.rollback(state).await
    }
}

/// `--key value` pairs of a child mode.
fn flags(args: &[String]) -> HashMap<String, String> {
    args.chunks(2)
        .filter_map(|c| match c {
            [k, v] => Some((k.trim_start_matches("--").to_string(), v.clone())),
            _ => None,
        })
        .collect()
}

/// A store of `kind` (`file` or `memory`), a file under `dir` for `file`.
pub fn open_store(kind: &str, dir: &Path, name: &str) -> Result<Arc<SqliteStore>, String> {
    Ok(Arc::new(
        match kind {
            "file" => SqliteStore::open(&dir.join(format!("{name}.db"))),
            _ => SqliteStore::in_memory(),
        }
        .map_err(|e| e.to_string())?,
    ))
}

/// An environment of the engine's fakes: a provider whose slots are ready
/// at once, one scripted passing check (one measurement per analysis), no
/// approvals, jobs or notifiers; `strategy` is what is measured.
pub fn fake_environment(
    name: String,
    strategy: Arc<dyn Strategy>,
    strategy_params: &str,
) -> EnvironmentPlan {
    let check = scripted("error-rate", vec![Ok(Verdict::Pass)]) as Arc<dyn HealthCheck>;
    EnvironmentPlan {
        name,
        provider: Arc::new(FakeProvider::running("1.0.0", "1.0.0", 2)),
        strategy,
        strategy_params: strategy_params.into(),
        checks: BTreeMap::from([("error-rate".to_string(), check)]),
        default_checks: vec!["error-rate".into()],
        analysis: AnalysisSpec {
            interval: Duration::ZERO,
            count: 1,
            ..AnalysisSpec::default()
        },
        replicas: 2,
        progress_deadline: Duration::from_secs(60),
        readiness_poll: Duration::from_millis(10),
        approval: false,
        require_different_approver: false,
        window: None,
        refuse_outside_window: false,
        refuse_when_busy: false,
        pre_jobs: vec![],
        post_jobs: vec![],
        bake: None,
        notify: Dispatcher::default(),
        exposures: Default::default(),
        exposure: None,
        settle: std::time::Duration::ZERO,
    }
}

/// A pipeline of one stage, with no notifiers.
pub fn pipeline(name: String, stage: String) -> PipelinePlan {
    PipelinePlan {
        name,
        stages: vec![stage],
        service: "web".into(),
        service_spec: "{}".into(),
        notify: Dispatcher::default(),
    }
}

/// An API over `engine` with one admin token and no rate limit to speak of.
pub fn api(engine: Arc<Engine>) -> Result<Api, String> {
    let token = TokenEntry::new("bench", &hash_token(TOKEN), Role::Admin, vec![])
        .map_err(|e| e.to_string())?;
    Ok(Api::new(
        engine,
        Auth::new(vec![token]),
        vec![],
        ApiOptions {
            rate: RateSettings {
                per_second: 1_000_000,
                burst: 1_000_000,
            },
            // The load comes from one address, and starts runs by the
            // thousand.
            connections_per_address: 100_000,
            // Item 4 follows up to FOLLOWED runs live, all with the one
            // token ([server.api] streams_per_token, 8 by default).
            streams_per_token: FOLLOWED,
            max_runs: 1_000_000,
            max_runs_per_pipeline: 1_000_000,
            ..ApiOptions::default()
        },
    ))
}

/// Serve `api` on a free loopback port until the process ends.
pub async fn serve(api: Api) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = api.serve(listener, std::future::pending()).await;
    });
    Ok(addr)
}

/// `builtin:canary` in a pooling runtime caching compiled components in
/// `cache`; the runtime must live as long as the plugin is called.
fn load_canary(cache: &Path) -> Result<(Runtime, Arc<LoadedPlugin>), String> {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.to_path_buf()),
        pooling: true,
        secrets: Arc::new(MapSecrets(BTreeMap::new())),
    })
    .map_err(|e| e.to_string())?;
    let canary = rollcage_builtins::get("canary").ok_or("builtin:canary is missing")?;
    let loaded = runtime
        .load(
            PluginSpec {
                id: "canary".parse().expect("a plugin id"),
                kind: PluginKind::Strategy,
                source_name: "builtin:canary".into(),
                grants: Grants::default(),
                limits: Limits::default(),
                config_json: "{}".into(),
            },
            canary.wasm,
        )
        .map_err(|e| e.to_string())?;
    Ok((runtime, loaded))
}

/// The child: the host of one scale run.
pub async fn host(args: Vec<String>) -> Result<(), String> {
    let f = flags(&args);
    let runs: usize = f
        .get("runs")
        .and_then(|v| v.parse().ok())
        .ok_or("--runs N")?;
    let store_kind = f.get("store").cloned().unwrap_or_else(|| "file".into());
    let dir = PathBuf::from(f.get("dir").ok_or("--dir PATH")?);
    let follow: usize = f.get("follow").and_then(|v| v.parse().ok()).unwrap_or(0);

    let (_runtime, loaded) = load_canary(&dir.join("cache-engine"))?;
    let strategy = Arc::new(Counting {
        inner: loaded.strategy().expect("canary is a strategy"),
        decisions: AtomicU64::new(0),
    });
    let sqlite = open_store(&store_kind, &dir, &format!("engine-{store_kind}-{runs}"))?;
    let store = Arc::new(StampingStore {
        inner: sqlite.clone(),
        followed: OnceLock::new(),
        stamps: Mutex::default(),
        writes: AtomicU64::new(0),
    });

    let mut envs = Vec::new();
    let mut pipelines = Vec::new();
    for i in 0..runs {
        envs.push(fake_environment(
            format!("env-{i}"),
            strategy.clone(),
            CANARY_PARAMS,
        ));
        pipelines.push(pipeline(format!("web-{i}"), format!("env-{i}")));
    }
    let engine = Arc::new(Engine::new(store.clone(), envs, pipelines, "bench".into()));
    let addr = serve(api(engine.clone())?).await?;
    let mut ids = Vec::new();
    for i in 0..runs {
        ids.push(
            engine
                .create(RunRequest {
                    pipeline: format!("web-{i}"),
                    release: "2.0.0".into(),
                    notes: None,
                    params: vec![],
                    stages: None,
                    started_by: "bench".into(),
                })
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let _ = store
        .followed
        .set(ids.iter().take(follow).cloned().collect());
    let (_, rss_setup) = crate::machine::rss_kb();
    child::announce(&json!({"port": addr.port(), "runs": ids, "rss_setup_kb": rss_setup}));

    let mut stdin = child::stdin_lines();
    if child::next_line(&mut stdin).await.as_deref() != Some("go") {
        return Ok(());
    }
    let writes_before = store.writes.load(Ordering::Relaxed);
    let commits_before = sqlite.commits();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in &ids {
        let (engine, id) = (engine.clone(), id.clone());
        tasks.spawn(async move { engine.execute(&id).await });
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let key = match joined {
            Ok(Ok(status)) => status.as_str().to_string(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(e) => format!("panic: {e}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    let (hwm, rss_end) = crate::machine::rss_kb();
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let stamps: Vec<(usize, u64, u64)> = store
        .stamps
        .lock()
        .unwrap()
        .iter()
        .map(|(id, seq, at)| (index[id.as_str()], *seq, *at))
        .collect();
    child::announce(&json!({
        "wall_s": wall,
        "outcomes": outcomes,
        "decisions": strategy.decisions.load(Ordering::Relaxed),
        "writes": store.writes.load(Ordering::Relaxed) - writes_before,
        "commits": sqlite.commits() - commits_before,
        "hwm_kb": hwm,
        "rss_end_kb": rss_end,
        "stamps": stamps,
    }));
    child::until_stdin_closes(&mut stdin).await;
    Ok(())
}

/// One size on one store, measured.
struct Measured {
    runs: usize,
    wall: f64,
    succeeded: u64,
    outcomes: String,
    decisions: u64,
    writes: u64,
    /// SQLite transactions those writes (and the decision pollers') took.
    commits: u64,
    hwm_bytes: f64,
    rss_setup_bytes: f64,
    followed: usize,
    latency: Option<Summary>,
    matched: usize,
    expected: usize,
}

async fn measure(runs: usize, store: &str, work: &Path) -> Result<Measured, String> {
    let follow = runs.min(FOLLOWED);
    let mut child = ChildProc::spawn(&[
        "__engine-host".into(),
        "--runs".into(),
        runs.to_string(),
        "--store".into(),
        store.into(),
        "--dir".into(),
        work.display().to_string(),
        "--follow".into(),
        follow.to_string(),
    ])?;
    let ready = child.read_json(Duration::from_secs(600)).await?;
    let port = ready["port"].as_u64().ok_or("no port")? as u16;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ids: Vec<String> = ready["runs"]
        .as_array()
        .ok_or("no runs")?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let rss_setup_kb = ready["rss_setup_kb"].as_f64().unwrap_or(0.0);

    let mut followers = tokio::task::JoinSet::new();
    let mut readies = Vec::new();
    for (i, id) in ids.iter().take(follow).enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        readies.push(rx);
        let path = format!("/v1/runs/{id}/events");
        followers.spawn(async move {
            (
                i,
                crate::loadgen::follow_sse(addr, path, TOKEN.into(), tx).await,
            )
        });
    }
    for rx in readies {
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .map_err(|_| "an SSE client did not connect within 60 s")?
            .map_err(|_| "an SSE client ended before connecting".to_string())?
            .map_err(|e| format!("an SSE client could not connect: {e}"))?;
    }
    child.send("go").await?;
    let result = child.read_json(Duration::from_secs(900)).await?;
    let mut received: HashMap<(usize, u64), u64> = HashMap::new();
    let collect = async {
        while let Some(joined) = followers.join_next().await {
            if let Ok((i, Ok(events))) = joined {
                for (e, at) in events {
                    if e.event == "step"
                        && let Some(seq) = e.id.and_then(|s| s.parse::<u64>().ok())
                    {
                        received.insert((i, seq), at);
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), collect).await;
    child.finish(Duration::from_secs(10)).await;

    let stamps: Vec<(usize, u64, u64)> =
        serde_json::from_value(result["stamps"].clone()).map_err(|e| format!("stamps: {e}"))?;
    let latencies: Vec<f64> = stamps
        .iter()
        .filter_map(|(i, seq, at)| {
            received
                .get(&(*i, *seq))
                .map(|got| got.saturating_sub(*at) as f64 / 1e9)
        })
        .collect();
    let outcomes: BTreeMap<String, u64> =
        serde_json::from_value(result["outcomes"].clone()).unwrap_or_default();
    Ok(Measured {
        runs,
        wall: result["wall_s"].as_f64().unwrap_or(f64::NAN),
        succeeded: outcomes.get("succeeded").copied().unwrap_or(0),
        outcomes: outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        decisions: result["decisions"].as_u64().unwrap_or(0),
        writes: result["writes"].as_u64().unwrap_or(0),
        commits: result["commits"].as_u64().unwrap_or(0),
        hwm_bytes: result["hwm_kb"].as_f64().unwrap_or(0.0) * 1024.0,
        rss_setup_bytes: rss_setup_kb * 1024.0,
        followed: follow,
        latency: Summary::of(&latencies),
        matched: latencies.len(),
        expected: stamps.len(),
    })
}

/// Item 4.
pub async fn run(quick: bool, work: &Path, fsync: Option<f64>) -> Section {
    let mut section = Section::new(4, "Engine scale");
    let sizes: &[usize] = if quick { &[10, 100] } else { &[10, 100, 1000] };
    // Compile the canary into the hosts' cache now, so that no host's
    // setup (and peak RSS) includes compiling it.
    if let Err(e) = load_canary(&work.join("cache-engine")) {
        section.notes.push(format!("Not measured: {e}"));
        return section;
    }
    section.method = format!(
        "Each size is a fresh host process (this binary's `__engine-host` mode): the engine with the real \
         `builtin:canary` wasm strategy (pooling allocator; steps `10, pause 0s, 25, pause 0s, 50, pause 0s, \
         100`, analysis after each weight), the engine's in-memory `FakeProvider` (slots ready at \
         once) and a scripted passing check (one measurement per analysis, four analyses a run), no \
         notifiers, the API on loopback, and the SQLite store: a file (WAL, `synchronous = FULL`, as the \
         host runs it) or in memory (the same code without the disk). One environment and pipeline per \
         run, so no run waits for another's environment lock. All runs are created first, then started \
         at once; *wall* is from the start to the last run's end. *Peak RSS* is the host's `VmHWM` \
         (setup included: the runtime, the compiled canary, the API). Up to {FOLLOWED} runs are followed \
         over SSE from this process; *outcome → SSE* is from the moment the engine asks the store to \
         append a `step` entry to the moment the event arrives at the client (`CLOCK_MONOTONIC` on both \
         sides), over every step of the followed runs."
    );
    let mut table = Table::new(
        "Concurrent canary runs",
        &[
            "store",
            "runs",
            "outcomes",
            "wall",
            "runs/s",
            "decisions/s",
            "store writes/s",
            "writes per commit",
            "peak RSS",
            "RSS after setup",
            "followed",
            "outcome → SSE p50 / p99 / max",
        ],
    );
    let mut rss_at_1000 = None;
    // (store, runs, wall, writes, decisions) of the largest size.
    let mut largest = Vec::new();
    let mut notes = Vec::new();
    for store in ["file", "memory"] {
        for &runs in sizes {
            println!("  {runs} runs, {store} store...");
            match measure(runs, store, work).await {
                Ok(m) => {
                    if m.runs == 1000 && store == "file" {
                        rss_at_1000 = Some(m.hwm_bytes);
                    }
                    if Some(&m.runs) == sizes.last() {
                        largest.push((store, m.runs, m.wall, m.writes, m.decisions));
                    }
                    if m.succeeded as usize != m.runs {
                        notes.push(format!(
                            "{} runs on the {store} store: not all succeeded ({}).",
                            m.runs, m.outcomes
                        ));
                    }
                    if m.matched < m.expected {
                        notes.push(format!(
                            "{} runs on the {store} store: {} of {} step events did not reach their SSE client in time.",
                            m.runs,
                            m.expected - m.matched,
                            m.expected
                        ));
                    }
                    let latency = m.latency.map_or("n/a".into(), |l| {
                        format!(
                            "{} / {} / {} ({} events)",
                            fmt_secs(l.median),
                            fmt_secs(l.p99),
                            fmt_secs(l.max),
                            l.n
                        )
                    });
                    table.row(vec![
                        store.into(),
                        m.runs.to_string(),
                        m.outcomes.clone(),
                        fmt_secs(m.wall),
                        fmt_rate(m.runs as f64 / m.wall),
                        fmt_rate(m.decisions as f64 / m.wall),
                        fmt_rate(m.writes as f64 / m.wall),
                        format!("{:.1}", m.writes as f64 / m.commits.max(1) as f64),
                        fmt_bytes(m.hwm_bytes as u64),
                        fmt_bytes(m.rss_setup_bytes as u64),
                        m.followed.to_string(),
                        latency,
                    ]);
                }
                Err(e) => table.row(vec![store.into(), runs.to_string(), format!("failed: {e}")]),
            }
        }
    }
    section.tables.push(table);
    section.notes.extend(notes);
    if let Some(&(_, runs, _, writes, decisions)) = largest.first() {
        section.notes.push(format!(
            "Each run made {:.0} decisions (its actions, then `done`) and {:.0} store writes (log entries and \
             status changes), each durable before the engine goes on (an intent is on disk before its action \
             runs). The store's writer thread commits every write waiting for it in one transaction (group \
             commit), so runs writing at once share an `fdatasync`: *writes per commit* is how many did.",
            decisions as f64 / runs as f64,
            writes as f64 / runs as f64,
        ));
    }
    let by_store = |name: &str| largest.iter().find(|l| l.0 == name).copied();
    if let (Some(file), Some(memory)) = (by_store("file"), by_store("memory")) {
        let fsync_note = fsync.map_or(String::new(), |f| {
            format!(
                " A 4 KiB `fdatasync` alone takes {} on this disk (at most about {} a second, one at a time).",
                fmt_secs(f),
                thousands((1.0 / f) as u64)
            )
        });
        section.notes.push(format!(
            "At {} runs the file store wrote at {} and the in-memory store at {} ({} more runs a second), \
             with the same code: what the file rows add is the wait for durable commits, shared by the writes \
             of one batch.{fsync_note}",
            file.1,
            fmt_rate(file.3 as f64 / file.2),
            fmt_rate(memory.3 as f64 / memory.2),
            fmt_ratio(file.2 / memory.2),
        ));
    }
    section.notes.push(
        "The memory rows are bound by CPU: the 2 cores run the engine, the wasm canary (a fresh instance per \
         decision, see items 1 and 2), the store's writer thread, every run's decision poller (one store \
         read per run every 200 ms), the API's SSE streams, and this process's SSE clients."
            .into(),
    );
    match rss_at_1000 {
        Some(rss) => {
            let verdict = verdict_at_most(rss, RSS_TARGET_BYTES, |b| fmt_bytes(b as u64));
            section.targets.push(TargetRow {
                target: "1,000 concurrent runs on 2 cores with RSS ≤ 300 MB".into(),
                measured: format!("peak RSS {} (file store)", fmt_bytes(rss as u64)),
                why: if verdict.met {
                    String::new()
                } else {
                    "see item 4's notes.".into()
                },
                verdict,
            });
        }
        None if !quick => section
            .notes
            .push("The 1,000-run file-store row failed, so the RSS target has no verdict.".into()),
        None => {}
    }
    section
}
