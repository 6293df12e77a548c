//! Items 1 and 2: what one plugin call costs.
//!
//! Every builtin (the Rust first-party plugins) is loaded into two runtimes,
//! one with the pooling allocator and one allocating on demand. For each,
//! the harness times `instantiate_only` (a call's fresh store, instantiate,
//! drop: everything a call does but the call) and, where a call needs no
//! live service, a whole call through the `rollcage-core` trait, as the
//! engine makes it. The call alone is the difference of the two medians.
//!
//! Item 2 times the canary's `decide` at the middle of a run as a wasm
//! plugin, and the same crate linked natively into this binary, called with
//! the same state.
//!
//! All cases are measured in rounds, a batch of each in turn, so that a
//! burst of load from elsewhere on the machine lands on every case alike
//! rather than on whichever ran at that moment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rollcage_core::{
    Action, CheckTarget, DeployState, EnvironmentProvider, EnvironmentStatus, Event, EventKind,
    HealthCheck, Notifier, Outcome, PluginKind, Release, RouteWeight, SlotStatus, StepRecord,
    Strategy, Target,
};
use rollcage_runtime::{
    AllocatorKind, Grants, Limits, LoadedPlugin, MapSecrets, PluginSpec, Runtime, RuntimeOptions,
};
use rollcage_sdk::types as sdk;

use crate::report::{Section, TargetRow};
use crate::stats::{Summary, fmt_ratio, fmt_secs, verdict_at_most};
use crate::table::Table;

/// Targets of the issue, item 1.
const INSTANTIATE_TARGET: f64 = 10e-6;
const SMALL_CALL_TARGET: f64 = 2e-6;

/// One thing to time.
enum Op {
    Instantiate(Arc<LoadedPlugin>),
    Decide(Arc<dyn Strategy>, DeployState),
    Check(Arc<dyn HealthCheck>, CheckTarget),
    Notify(Arc<dyn Notifier>, Event),
    Status(Arc<dyn EnvironmentProvider>, Target),
    NativeDecide(sdk::DeployState),
    /// Two `decide` calls on one instance (the `decide_on_one_instance`
    /// hook): the first call on a fresh instance, then a warm one.
    TwoDecides(Arc<LoadedPlugin>, DeployState),
}

/// Run `op` once; for `TwoDecides`, the seconds of its two calls.
async fn run_op(op: &Op) -> Result<Option<(f64, f64)>, String> {
    let e = |e: rollcage_core::PluginError| e.to_string();
    match op {
        Op::Instantiate(p) => p.instantiate_only().await.map_err(e).map(|()| None),
        Op::Decide(s, state) => s.decide(state).await.map(|_| None).map_err(e),
        Op::Check(c, target) => c.check(target).await.map(|_| None).map_err(e),
        Op::Notify(n, event) => n.notify(event).await.map(|()| None).map_err(e),
        Op::Status(p, target) => p.status(target).await.map(|_| None).map_err(e),
        Op::NativeDecide(state) => {
            // `decide` takes the state by value; the clone stands for the
            // copy the host makes into the guest's memory.
            <rollcage_plugin_canary::Canary as rollcage_sdk::Strategy>::decide(state.clone())
                .map(|_| None)
        }
        Op::TwoDecides(p, state) => {
            let times = p.decide_on_one_instance(state, 2).await.map_err(e)?;
            Ok(Some((times[0].as_secs_f64(), times[1].as_secs_f64())))
        }
    }
}

/// A case and its samples (seconds per operation).
struct Case {
    key: String,
    op: Op,
    samples: Vec<f64>,
    /// Minor page faults taken by this thread during the timed batches.
    faults: u64,
    /// Seconds on the CPU and on the clock during the timed batches: on a
    /// busy machine the clock runs ahead of the CPU time.
    cpu: f64,
    wall: f64,
    /// `TwoDecides`: the first and the second call's seconds.
    first_calls: Vec<f64>,
    warm_calls: Vec<f64>,
    error: Option<String>,
}

impl Case {
    fn new(key: impl Into<String>, op: Op) -> Case {
        Case {
            key: key.into(),
            op,
            samples: Vec::new(),
            faults: 0,
            cpu: 0.0,
            wall: 0.0,
            first_calls: Vec::new(),
            warm_calls: Vec::new(),
            error: None,
        }
    }

    /// Minor page faults per operation: each is a first touch of a page of
    /// a fresh linear memory (or of a page given back when the last one
    /// was dropped), which is where much of a fresh instance's time goes.
    fn faults_per_op(&self) -> f64 {
        self.faults as f64 / self.samples.len().max(1) as f64
    }
}

/// CPU seconds of the calling thread so far.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to; the clock exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> u64 {
    // SAFETY: a zeroed rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer; the calls are on this
    // thread (a current-thread runtime), so its faults are the calls'.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_minflt as u64
}

/// Time every case: a warm-up batch each, then `rounds` rounds of a batch
/// of each in turn.
async fn measure(cases: &mut [Case], rounds: usize, batch: usize) {
    for c in cases.iter_mut() {
        for _ in 0..batch {
            if let Err(e) = run_op(&c.op).await {
                c.error = Some(e);
                break;
            }
        }
    }
    for _ in 0..rounds {
        for c in cases.iter_mut().filter(|c| c.error.is_none()) {
            let (faults_before, cpu_before, wall_before) =
                (thread_minor_faults(), thread_cpu(), Instant::now());
            for _ in 0..batch {
                let started = Instant::now();
                let result = run_op(&c.op).await;
                let took = started.elapsed().as_secs_f64();
                match result {
                    Ok(calls) => {
                        if let Some((first, warm)) = calls {
                            c.first_calls.push(first);
                            c.warm_calls.push(warm);
                        }
                    }
                    Err(e) => {
                        c.error = Some(e);
                        break;
                    }
                }
                c.samples.push(took);
            }
            c.faults += thread_minor_faults() - faults_before;
            c.cpu += thread_cpu() - cpu_before;
            c.wall += wall_before.elapsed().as_secs_f64();
        }
    }
}

/// How many rounds and how big a batch.
pub struct Settings {
    pub rounds: usize,
    pub batch: usize,
}

/// The state a strategy sees when moving a service of 4 instances from
/// 1.0.0 to 2.0.0, after `history`.
pub fn core_state(history: Vec<StepRecord>) -> DeployState {
    DeployState {
        environment: "production".into(),
        release: Release::new("2.0.0"),
        stable: Some(Release::new("1.0.0")),
        replicas: 4,
        params: "{}".into(),
        history,
        status: EnvironmentStatus {
            slots: vec![SlotStatus {
                name: "1.0.0".into(),
                release: "1.0.0".into(),
                desired: 4,
                ready: 4,
                endpoints: (1..=4).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect(),
            }],
            weights: vec![RouteWeight {
                slot: "1.0.0".into(),
                weight: 100,
            }],
        },
    }
}

/// The same state in the SDK's types, for the natively linked canary.
fn sdk_state(history: Vec<sdk::StepRecord>) -> sdk::DeployState {
    let release = |v: &str| sdk::Release {
        version: v.into(),
        notes: None,
        params: vec![],
    };
    sdk::DeployState {
        environment: "production".into(),
        release: release("2.0.0"),
        stable: Some(release("1.0.0")),
        replicas: 4,
        params: "{}".into(),
        history,
        status: sdk::EnvironmentStatus {
            slots: vec![sdk::SlotStatus {
                name: "1.0.0".into(),
                release: "1.0.0".into(),
                desired: 4,
                ready: 4,
                endpoints: (1..=4).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect(),
            }],
            weights: vec![sdk::RouteWeight {
                slot: "1.0.0".into(),
                weight: 100,
            }],
        },
    }
}

/// The canary's history after `steps` decisions, through the wasm plugin.
async fn wasm_history(strategy: &Arc<dyn Strategy>, steps: usize) -> Result<DeployState, String> {
    let mut state = core_state(vec![]);
    for _ in 0..steps {
        let action = strategy.decide(&state).await.map_err(|e| e.to_string())?;
        if action == Action::Done {
            break;
        }
        state.history.push(StepRecord {
            action,
            outcome: Outcome::Ok,
        });
    }
    Ok(state)
}

/// The canary's history after `steps` decisions, natively.
fn native_history(steps: usize) -> Result<sdk::DeployState, String> {
    let mut state = sdk_state(vec![]);
    for _ in 0..steps {
        let action =
            <rollcage_plugin_canary::Canary as rollcage_sdk::Strategy>::decide(state.clone())?;
        if action == sdk::Action::Done {
            break;
        }
        state.history.push(sdk::StepRecord {
            action,
            outcome: sdk::Outcome::Ok,
        });
    }
    Ok(state)
}

/// A loopback HTTP server standing in for a slot's instance (`/healthz`)
/// and the local runtime's admin API (`GET /v1/services/{name}`), on a
/// thread of its own so that its work is not on the caller's executor.
fn start_stub() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("bench-stub".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                use axum::routing::get;
                let app = axum::Router::new()
                    .route(
                        "/healthz",
                        get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
                    )
                    .route(
                        "/v1/services/{name}",
                        get(|axum::extract::Path(name): axum::extract::Path<String>| async move {
                            axum::Json(serde_json::json!({
                                "name": name,
                                "front": "127.0.0.1:9000",
                                "slots": [{"name": "1.0.0", "release": "1.0.0", "desired": 2, "ready": 2,
                                           "endpoints": ["127.0.0.1:9001", "127.0.0.1:9002"]}],
                                "weights": [{"slot": "1.0.0", "weight": 100}],
                            }))
                        }),
                    );
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let _ = axum::serve(listener, app).await;
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(addr)
}

fn spec(name: &str, kind: PluginKind, config: String, allow_loopback: bool) -> PluginSpec {
    let mut grants = Grants::default();
    if allow_loopback {
        grants.allow_hosts = vec!["127.0.0.1:*".parse().expect("a valid host pattern")];
    }
    PluginSpec {
        id: name.parse().expect("builtin names are plugin ids"),
        kind,
        source_name: format!("builtin:{name}"),
        grants,
        limits: Limits::default(),
        config_json: config,
    }
}

/// A builtin, its kind, and its calls (label, whether a small call).
type Plan = (String, PluginKind, Vec<(&'static str, bool)>);

/// What a builtin is asked to do in item 1, if anything can be asked
/// without a live service behind it.
struct CallPlan {
    label: &'static str,
    small: bool,
    op: Op,
}

fn calls_for(
    name: &str,
    kind: PluginKind,
    plugin: &Arc<LoadedPlugin>,
    stub: SocketAddr,
) -> Vec<CallPlan> {
    let target = Target {
        environment: "production".into(),
        service: "web".into(),
        service_spec: "{}".into(),
    };
    let check_target = |endpoints: Vec<String>| CheckTarget {
        environment: "production".into(),
        slot: "2.0.0".into(),
        release: "2.0.0".into(),
        endpoints,
        exposure: None,
    };
    match (kind, name) {
        (PluginKind::Strategy, _) => vec![CallPlan {
            label: "decide, first step",
            small: true,
            op: Op::Decide(plugin.strategy().expect("a strategy"), core_state(vec![])),
        }],
        (PluginKind::HealthCheck, "http") => vec![
            CallPlan {
                label: "check, slot without endpoints (no I/O)",
                small: true,
                op: Op::Check(
                    plugin.health_check().expect("a check"),
                    check_target(vec![]),
                ),
            },
            CallPlan {
                label: "check, one endpoint over loopback HTTP",
                small: false,
                op: Op::Check(
                    plugin.health_check().expect("a check"),
                    check_target(vec![stub.to_string()]),
                ),
            },
        ],
        (PluginKind::Notifier, "console") => vec![CallPlan {
            label: "notify, one step event",
            small: true,
            op: Op::Notify(
                plugin.notifier().expect("a notifier"),
                Event {
                    kind: EventKind::Step,
                    run_id: "r0000000000001".into(),
                    pipeline: "web".into(),
                    environment: Some("production".into()),
                    release: Release::new("2.0.0"),
                    message: "route 2.0.0=10% 1.0.0=90%".into(),
                    fields: vec![("step".into(), "2".into())],
                    url: None,
                    timestamp_ms: 0,
                },
            ),
        }],
        (PluginKind::EnvironmentProvider, "local") => vec![CallPlan {
            label: "status, over loopback HTTP to a stub admin API",
            small: false,
            op: Op::Status(plugin.environment_provider().expect("a provider"), target),
        }],
        _ => vec![],
    }
}

fn config_for(name: &str, stub: SocketAddr) -> (String, bool) {
    match name {
        "local" => (
            serde_json::json!({"admin_url": format!("http://{stub}"), "token": "bench"})
                .to_string(),
            true,
        ),
        "http" => ("{}".into(), true),
        _ => ("{}".into(), false),
    }
}

fn cell(s: &Option<Summary>) -> String {
    match s {
        Some(s) => format!("{} / {}", fmt_secs(s.median), fmt_secs(s.p99)),
        None => "n/a".into(),
    }
}

/// Items 1 and 2.
pub async fn run(settings: &Settings, cache_dir: &std::path::Path) -> (Section, Section) {
    match run_inner(settings, cache_dir).await {
        Ok(sections) => sections,
        Err(e) => (
            Section::failed(1, "Plugin instantiate + call", &e),
            Section::failed(2, "Sandbox overhead", &e),
        ),
    }
}

async fn run_inner(
    settings: &Settings,
    cache_dir: &std::path::Path,
) -> Result<(Section, Section), String> {
    let stub = start_stub()?;
    let mut runtimes = Vec::new();
    for pooling in [true, false] {
        let rt = Runtime::new(RuntimeOptions {
            cache_dir: Some(cache_dir.to_path_buf()),
            pooling,
            secrets: Arc::new(MapSecrets(BTreeMap::new())),
        })
        .map_err(|e| e.to_string())?;
        runtimes.push(rt);
    }

    // The cases, keyed `inst/<name>/<alloc>`, `call/<name>/<label>/<alloc>`,
    // `two/<name>/<alloc>` (strategies), `mid/...` (item 2).
    let mut cases = Vec::new();
    let mut plans: Vec<Plan> = Vec::new();
    let mut canary_pooled = None;
    for b in rollcage_builtins::BUILTINS {
        let kind = b.kind();
        let (config, loopback) = config_for(b.name, stub);
        let mut labels = Vec::new();
        for rt in &runtimes {
            let alloc = rt.allocator();
            let plugin = rt
                .load(spec(b.name, kind, config.clone(), loopback), b.wasm)
                .map_err(|e| format!("loading builtin:{}: {e}", b.name))?;
            if b.name == "canary" && alloc == AllocatorKind::Pooling {
                canary_pooled = Some(plugin.clone());
            }
            let calls = calls_for(b.name, kind, &plugin, stub);
            labels = calls.iter().map(|c| (c.label, c.small)).collect();
            if kind == PluginKind::Strategy {
                cases.push(Case::new(
                    format!("two/{}/{alloc}", b.name),
                    Op::TwoDecides(plugin.clone(), core_state(vec![])),
                ));
            }
            cases.push(Case::new(
                format!("inst/{}/{alloc}", b.name),
                Op::Instantiate(plugin),
            ));
            for c in calls {
                cases.push(Case::new(
                    format!("call/{}/{}/{alloc}", b.name, c.label),
                    c.op,
                ));
            }
        }
        plans.push((b.name.to_string(), kind, labels));
    }

    // Item 2: the canary at the middle of its plan (7 of its 15 steps with
    // the default steps and 4 replicas), wasm and native.
    let canary_plugin =
        canary_pooled.ok_or("builtin:canary is missing or the pooling allocator is unavailable")?;
    let canary = canary_plugin.strategy().expect("canary is a strategy");
    let wasm_mid = wasm_history(&canary, 7).await?;
    let native_mid = native_history(7)?;
    let (wasm_len, native_len) = (
        wasm_history(&canary, 100).await?.history.len(),
        native_history(100)?.history.len(),
    );
    if wasm_len != native_len || wasm_mid.history.len() != native_mid.history.len() {
        return Err(format!(
            "the wasm and native canaries disagree: plans of {wasm_len} and {native_len} steps"
        ));
    }
    cases.push(Case::new("mid/wasm", Op::Decide(canary, wasm_mid.clone())));
    cases.push(Case::new(
        "mid/two",
        Op::TwoDecides(canary_plugin, wasm_mid.clone()),
    ));
    cases.push(Case::new("mid/native", Op::NativeDecide(native_mid)));

    measure(&mut cases, settings.rounds, settings.batch).await;
    let find = |key: &str| -> Result<&Case, String> {
        let c = cases
            .iter()
            .find(|c| c.key == key)
            .ok_or_else(|| format!("no case {key}"))?;
        match &c.error {
            Some(e) => Err(e.clone()),
            None => Ok(c),
        }
    };
    let summary = |key: &str| -> Result<Summary, String> {
        Summary::of(&find(key)?.samples).ok_or_else(|| format!("no samples for {key}"))
    };
    let faults = |key: &str| -> String {
        find(key).map_or("n/a".into(), |c| format!("{:.0}", c.faults_per_op()))
    };
    let allocs: Vec<AllocatorKind> = runtimes.iter().map(Runtime::allocator).collect();

    // ---- item 1
    let mut s1 = Section::new(1, "Plugin instantiate + call");
    s1.method = format!(
        "Every builtin (the Rust first-party plugins, as embedded in the binary) loaded into two runtimes, \
         pooling allocator and on-demand. *Instantiate* is `LoadedPlugin::instantiate_only` (a hidden hook): \
         a call's fresh `Store` (WASI and HTTP contexts, limits, epoch deadline), `instantiate_async`, drop; \
         everything a call does except calling the export. *Instantiate + call* is a whole call through the \
         `rollcage-core` trait, as the engine makes it (a fresh store and instance, argument conversion, the \
         call, the answer's conversion, drop). *Call alone* is the difference of the two medians: what \
         calling adds to a fresh instance, including returning the memory the call touched. For the \
         strategies, the hidden hook `decide_on_one_instance` also times two `decide` calls on one \
         instance: the first (on a fresh instance) and a second on the now warm instance, which is what \
         the call itself costs (the runtime never reuses an instance, so that no state survives between \
         calls). Page faults are the calling thread's minor faults per operation. Samples: {} per case, \
         in {} interleaved rounds of {} (a burst of load elsewhere lands on every case alike), after a \
         warm-up batch; one tokio current-thread runtime. Cells are median / p99.",
        settings.rounds * settings.batch,
        settings.rounds,
        settings.batch
    );
    let alloc_names: Vec<String> = allocs.iter().map(ToString::to_string).collect();
    let mut t_inst = Table::new(
        "Instantiate (fresh store + instantiate + drop), median / p99",
        &[
            "plugin",
            "kind",
            &alloc_names[0],
            &alloc_names[1],
            "ratio (2nd ÷ 1st)",
            "page faults per op (1st, 2nd)",
            "target ≤ 10 µs (pooling)",
        ],
    );
    let mut worst_inst: Option<(String, f64)> = None;
    let mut best_inst = f64::INFINITY;
    for (name, kind, _) in &plans {
        let a = summary(&format!("inst/{name}/{}", allocs[0])).ok();
        let b = summary(&format!("inst/{name}/{}", allocs[1])).ok();
        let ratio = match (a, b) {
            (Some(a), Some(b)) => fmt_ratio(b.median / a.median),
            _ => "n/a".into(),
        };
        let verdict = a
            .filter(|_| allocs[0] == AllocatorKind::Pooling)
            .map(|a| {
                if worst_inst.as_ref().is_none_or(|(_, w)| a.median > *w) {
                    worst_inst = Some((name.clone(), a.median));
                }
                best_inst = best_inst.min(a.median);
                verdict_at_most(a.median, INSTANTIATE_TARGET, fmt_secs).text
            })
            .unwrap_or_else(|| "n/a".into());
        t_inst.row(vec![
            name.clone(),
            kind.to_string(),
            cell(&a),
            cell(&b),
            ratio,
            format!(
                "{}, {}",
                faults(&format!("inst/{name}/{}", allocs[0])),
                faults(&format!("inst/{name}/{}", allocs[1]))
            ),
            verdict,
        ]);
    }
    s1.tables.push(t_inst);

    let mut t_call = Table::new(
        "Instantiate + call, median / p99; call alone = difference of medians",
        &[
            "plugin",
            "call",
            "allocator",
            "instantiate + call",
            "call alone",
            "page faults per call",
            "target ≤ 2 µs (small calls, pooling)",
        ],
    );
    let mut worst_call: Option<(String, f64)> = None;
    let mut errors = Vec::new();
    for (name, _, labels) in &plans {
        for (label, small) in labels {
            for alloc in &allocs {
                let whole = summary(&format!("call/{name}/{label}/{alloc}"));
                let inst = summary(&format!("inst/{name}/{alloc}"));
                let (whole_cell, alone, verdict) = match (&whole, &inst) {
                    (Ok(w), Ok(i)) => {
                        let alone = w.median - i.median;
                        let verdict = if *small && *alloc == AllocatorKind::Pooling {
                            if worst_call.as_ref().is_none_or(|(_, v)| alone > *v) {
                                worst_call = Some((format!("{name} ({label})"), alone));
                            }
                            verdict_at_most(alone, SMALL_CALL_TARGET, fmt_secs).text
                        } else if *small {
                            String::new()
                        } else {
                            "not a small call".into()
                        };
                        (cell(&Some(*w)), fmt_secs(alone), verdict)
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        errors.push(format!("{name} {label} ({alloc}): {e}"));
                        ("failed".into(), "n/a".into(), String::new())
                    }
                };
                t_call.row(vec![
                    name.clone(),
                    label.to_string(),
                    alloc.to_string(),
                    whole_cell,
                    alone,
                    faults(&format!("call/{name}/{label}/{alloc}")),
                    verdict,
                ]);
            }
        }
    }
    s1.tables.push(t_call);

    let mut t_warm = Table::new(
        "Strategies: two decide calls on one instance, median / p99",
        &[
            "plugin",
            "allocator",
            "first call (fresh instance)",
            "second call (warm instance)",
        ],
    );
    let mut warm_canary = None;
    for (name, kind, _) in &plans {
        if *kind != PluginKind::Strategy {
            continue;
        }
        for alloc in &allocs {
            match find(&format!("two/{name}/{alloc}")) {
                Ok(c) => {
                    let warm = Summary::of(&c.warm_calls);
                    if name == "canary" && *alloc == AllocatorKind::Pooling {
                        warm_canary = warm;
                    }
                    t_warm.row(vec![
                        name.clone(),
                        alloc.to_string(),
                        cell(&Summary::of(&c.first_calls)),
                        cell(&warm),
                    ]);
                }
                Err(e) => t_warm.row(vec![
                    name.clone(),
                    alloc.to_string(),
                    format!("failed: {e}"),
                ]),
            }
        }
    }
    s1.tables.push(t_warm);
    for e in errors {
        s1.notes.push(format!("A call failed: {e}"));
    }
    let untimed: Vec<&str> = plans
        .iter()
        .filter(|(_, _, l)| l.is_empty())
        .map(|(n, _, _)| n.as_str())
        .collect();
    if !untimed.is_empty() {
        s1.notes.push(format!(
            "Instantiated only: {} (every call of theirs goes to a live service: Prometheus, the router's metrics, Slack, Jira, a webhook).",
            untimed.join(", ")
        ));
    }
    let (cpu, wall) = cases
        .iter()
        .fold((0.0, 0.0), |(c, w), case| (c + case.cpu, w + case.wall));
    s1.notes.push(format!(
        "The measuring thread was on the CPU for {:.0}% of the measured wall time (100% on an idle machine; \
         the loopback calls also wait for the stub server): other work on the machine inflates the medians \
         by up to the inverse of that.",
        100.0 * cpu / wall.max(1e-9)
    ));
    if allocs[0] != AllocatorKind::Pooling {
        s1.notes.push(
            "The pooling allocator was unavailable here (not enough address space), so both runtimes allocate on demand."
                .into(),
        );
    }
    if let Some((name, median)) = worst_inst {
        let verdict = verdict_at_most(median, INSTANTIATE_TARGET, fmt_secs);
        s1.targets.push(TargetRow {
            target: "instantiate ≤ 10 µs".into(),
            measured: format!(
                "medians {} to {} over the builtins, pooling (slowest: {name})",
                fmt_secs(best_inst),
                fmt_secs(median)
            ),
            why: if verdict.met {
                String::new()
            } else {
                INSTANTIATE_WHY.into()
            },
            verdict,
        });
    }
    let native_canary = summary("mid/native").map_or("n/a".into(), |n| fmt_secs(n.median));
    if let Some((name, alone)) = worst_call {
        let verdict = verdict_at_most(alone, SMALL_CALL_TARGET, fmt_secs);
        let warm = warm_canary.map_or("n/a".into(), |w| fmt_secs(w.median));
        s1.targets.push(TargetRow {
            target: "a small call ≤ 2 µs".into(),
            measured: format!(
                "slowest small call, pooling: {name}, {} (the canary's decide on a warm instance: {warm})",
                fmt_secs(alone)
            ),
            why: if verdict.met {
                String::new()
            } else {
                small_call_why(
                    &warm,
                    &native_canary,
                    &faults(&format!("call/canary/decide, first step/{}", allocs[0])),
                    &faults(&format!("inst/canary/{}", allocs[0])),
                )
            },
            verdict,
        });
    }

    // ---- item 2
    let mut s2 = Section::new(2, "Sandbox overhead: canary `decide`, wasm vs native");
    s2.method = format!(
        "The canary strategy's `decide` at the middle of a run ({} recorded steps of {}; default steps \
         10/25/50/100 with analysis, 4 replicas): through the wasm plugin (`builtin:canary`, pooling \
         allocator) as the engine calls it (a fresh instance per call), the same call on a warm instance \
         (the `decide_on_one_instance` hook, second call), and `plugins/canary` linked into this binary as \
         an ordinary Rust library, called with the same state in the SDK's types (cloned per call, as the \
         host copies it into the guest). Both plans were checked to be the same length. Samples as in \
         item 1, interleaved with it. Cells are median / p99; CPU is the thread's CPU time per decision \
         (mean), which other load on the machine does not inflate.",
        wasm_mid.history.len(),
        wasm_len
    );
    let wasm = summary("mid/wasm")?;
    let native = summary("mid/native")?;
    let two = find("mid/two")?;
    let warm = Summary::of(&two.warm_calls).ok_or("no warm calls")?;
    let inst = summary(&format!("inst/canary/{}", allocs[0]))?;
    let cpu_per_op = |key: &str| {
        find(key).map_or("n/a".into(), |c| {
            fmt_secs(c.cpu / c.samples.len().max(1) as f64)
        })
    };
    let mut t = Table::new(
        "Canary decide, one decision",
        &[
            "",
            "median / p99",
            "CPU per decision",
            "÷ native",
            "− native",
            "page faults per decision",
        ],
    );
    t.row(vec![
        "native (linked into the bench)".into(),
        cell(&Some(native)),
        cpu_per_op("mid/native"),
        "1×".into(),
        String::new(),
        faults("mid/native"),
    ]);
    t.row(vec![
        "wasm, as the engine calls it (fresh instance)".into(),
        cell(&Some(wasm)),
        cpu_per_op("mid/wasm"),
        fmt_ratio(wasm.median / native.median),
        fmt_secs(wasm.median - native.median),
        faults("mid/wasm"),
    ]);
    t.row(vec![
        "wasm, second call on one instance".into(),
        cell(&Some(warm)),
        String::new(),
        fmt_ratio(warm.median / native.median),
        fmt_secs(warm.median - native.median),
        String::new(),
    ]);
    s2.tables.push(t);
    s2.notes.push(format!(
        "Per decision the sandbox adds {} as the engine calls it: {} to make and drop the fresh instance \
         (item 1's instantiate), {} for the call on that fresh instance, of which {} is the call itself \
         (a warm instance: copying the state in and the action out through the component ABI, and the \
         plugin's code under wasm) and the rest the fresh instance's first use of its memory: the guest \
         allocator's first allocations and, at the drop, resetting every page the call touched (the \
         mid-run state is several times the first step's, so this is larger here than in item 1).",
        fmt_secs(wasm.median - native.median),
        fmt_secs(inst.median),
        fmt_secs(wasm.median - inst.median),
        fmt_secs(warm.median),
    ));
    Ok((s1, s2))
}

/// Why instantiation misses its target, when it does. From `perf` profiles
/// (call graphs) of these loops, taken apart from the harness.
const INSTANTIATE_WHY: &str = "every call makes a fresh store and instance and drops them, on purpose (no \
state survives between calls). The runtime already tunes the pooling allocator for this: a freed slot's \
memory (up to 2 MiB) and tables are reset with `memset` of the pages the call touched (found with the \
kernel's PAGEMAP_SCAN) instead of unmapped, and decommits are flushed in batches of 32; on the machine of the first report that took the \
canary's instantiation from a median of 24.9 µs (with the defaults) to 20.6 µs and its page faults from 1 \
to 0. A \
`perf` profile of the loops (both allocators) still puts over half of the measuring thread's time in the \
kernel (`mmap`/`munmap` of the copy-on-write memory image and fiber stacks, and the TLB flushes across \
the process's threads that come with them, slow in this VM), and most of the rest in wiring the \
component's imports (a Rust wasip2 plugin imports about a dozen WASI interfaces through `std`) into its \
core instances. The ways to 10 µs are reusing instances of pure plugins such as strategies (which gives \
up the fresh-instance guarantee, a design decision left open), or initialising memory by copying instead \
of mapping (`memory_init_cow(false)`), which would help these small Rust components and cost the 18 MB \
Python and JavaScript ones a copy of their whole heap per call.";

/// Why a small call misses its target, when it does: what a call costs on
/// a warm instance, and what a fresh one adds when its first touches fault.
fn small_call_why(warm: &str, native: &str, call_faults: &str, inst_faults: &str) -> String {
    let fresh = if call_faults == inst_faults {
        format!(
            "With freed pool slots kept resident, a call on a fresh instance takes no more page faults than \
             the bare instantiation ({call_faults} per call), so what a call adds is close to the call itself."
        )
    } else {
        format!(
            "Part of what a call adds to a fresh instance is not the call: the instance's first touches of its \
             memory ({call_faults} page faults per canary call, against {inst_faults} for a bare \
             instantiation) and giving those pages back when it is dropped."
        )
    };
    format!(
        "{fresh} The call itself, on a warm instance, takes {warm} for the canary's `decide`: converting the \
         state, lowering it into the guest's memory (every string and list allocated through the guest's \
         `cabi_realloc`), the plugin's own code under wasm (it parses its JSON parameters and rebuilds its \
         plan on every call, being a pure function of the state: {native} natively), and lifting the action \
         back. So 2 µs needs a cheaper strategy body (parameters parsed once, which needs instance reuse) \
         and less copying across the boundary (the whole deployment state goes in on every call)."
    )
}
