//! `rollcage demo`: a real progressive delivery on this machine, end to end.
//! It writes `examples/local/rollcage.toml` into a temporary (or chosen)
//! folder, starts the host with it (SQLite, the local runtime, builtin
//! plugins), drives steady traffic at the router, and deploys three
//! releases of the demo service: 1.0.0 (first deployment), 1.1.0 (a canary
//! through staging and production, promoted) and 1.2.0, whose instances fail
//! 30% of requests, so that analysis fails and the engine rolls it back by
//! itself. Exit code 0 when every run ended as it should and the traffic
//! never met a connection error. While it runs, the host's dashboard is
//! served on loopback; the demo prints its address and a viewer's token
//! made for this demo alone, to watch the runs in a browser.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rollcage_engine::run::RunRequest;
use rollcage_store::RunStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::run::whoami;
use super::{load_config, progress};
use crate::cli::{DemoArgs, Output};
use crate::host::{Host, HostOptions};
use crate::signals::Signals;

/// The configuration the demo runs, the same file people copy.
const CONFIG: &str = include_str!("../../../../examples/local/rollcage.toml");

/// Requests per second sent to each environment's front port.
const RATE: u64 = 40;

/// The releases deployed, and how each run should end.
const PLAN: [(&str, RunStatus); 3] = [
    ("1.0.0", RunStatus::Succeeded),
    ("1.1.0", RunStatus::Succeeded),
    ("1.2.0", RunStatus::RolledBack),
];

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (dir, _temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::tempdir().context("cannot create a temporary folder")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let path = dir.join("rollcage.toml");
    std::fs::write(&path, CONFIG).with_context(|| format!("cannot write {}", path.display()))?;
    let config = match load_config(&path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    // A person reads the progress: the console notifier would repeat it.
    if crate::logging::person_at_terminal() {
        crate::logging::quiet_plugins(crate::host::console_notifiers(&config));
    }
    outln!("rollcage demo in {}", dir.display());
    // Before anything is started: a stop asked for meanwhile is kept.
    let mut signals = Signals::install().context("cannot install the signal handlers")?;
    let host = Host::start(
        config,
        HostOptions {
            cache_dir: args.cache_dir.clone(),
            ..HostOptions::default()
        },
    )
    .await?;
    let local = host
        .local
        .as_ref()
        .expect("the demo uses the local runtime");
    let dashboard = Dashboard::start(&host, &args.dashboard).await?;
    let traffic = Traffic::start(
        local.admin_addr(),
        local.token().to_string(),
        &["staging-demo", "production-demo"],
    );

    let outcome = tokio::select! {
        r = deploy_all(&host) => Ok(r),
        stop = signals.recv() => Err(stop),
    };
    let counts = traffic.stop().await;
    dashboard.stop().await;
    host.shutdown().await;
    let results = match outcome {
        Ok(r) => r?,
        Err(stop) => {
            eprintln!(
                "{}: everything the demo started is stopped",
                stop.describe()
            );
            return Ok(stop.exit_code());
        }
    };

    outln!();
    outln!(
        "{:<8} {:<12} {:<12} {:>7}  reason",
        "release",
        "expected",
        "ended",
        "time"
    );
    let mut ok = true;
    for (release, expected, status, took, reason) in &results {
        ok &= expected == status;
        outln!(
            "{:<8} {:<12} {:<12} {:>6.1}s  {}{}",
            release,
            expected.as_str(),
            status.as_str(),
            took.as_secs_f64(),
            reason.as_deref().unwrap_or(""),
            if expected == status {
                ""
            } else {
                "  <- unexpected"
            }
        );
    }
    outln!();
    outln!("traffic through the router (answers by release):");
    for (service, c) in &counts {
        let by_release: Vec<String> = c
            .by_release
            .iter()
            .map(|(r, (n, failed))| format!("{r}: {n} ({failed} failed)"))
            .collect();
        outln!(
            "  {service}: {} requests; {}; not yet routed {}; connection errors {}",
            c.total,
            by_release.join(", "),
            c.unrouted,
            c.connection_errors
        );
        ok &= c.connection_errors == 0;
    }
    outln!();
    outln!(
        "{} in {:.0} s",
        if ok {
            "demo finished as expected"
        } else {
            "demo did NOT go as expected"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The dashboard over the demo's host, for as long as the demo runs.
struct Dashboard {
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Dashboard {
    async fn start(host: &Host, listen: &str) -> anyhow::Result<Dashboard> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (--dashboard)"))?;
        let addr = listener.local_addr()?;
        // A token for this demo alone, of a viewer: it watches, the demo
        // drives.
        let token = rollcage_api::new_token().context("no randomness for a token")?;
        let entry = rollcage_api::TokenEntry::new(
            "demo-viewer",
            &rollcage_api::hash_token(&token),
            rollcage_api::Role::Viewer,
            vec![],
        )
        .map_err(anyhow::Error::msg)?;
        let api = rollcage_api::Api::new(
            host.engine.clone(),
            rollcage_api::Auth::new(vec![entry]),
            host.plugins.clone(),
            rollcage_api::ApiOptions::default(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            api.serve(listener, async move {
                let _ = stopped.await;
            })
            .await
        });
        outln!(
            "dashboard: http://{addr}/ui/runs (sign in with the token {token}; it watches while the demo runs)"
        );
        Ok(Dashboard { stop, served })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.served.await;
    }
}

type Outcome = (&'static str, RunStatus, RunStatus, Duration, Option<String>);

/// Deploy the releases of [`PLAN`] one after the other, following each.
async fn deploy_all(host: &Host) -> anyhow::Result<Vec<Outcome>> {
    let mut results = Vec::new();
    for (release, expected) in PLAN {
        outln!();
        outln!(
            "== {release}: {}",
            match (release, expected) {
                ("1.0.0", _) => "first deployment",
                (_, RunStatus::Succeeded) =>
                    "a good release, canaried through staging and production",
                _ => "a bad release (30% of its requests fail): analysis should roll it back",
            }
        );
        let t = Instant::now();
        let id = host
            .engine
            .create(RunRequest {
                pipeline: "demo".into(),
                release: release.into(),
                notes: None,
                params: vec![],
                stages: None,
                started_by: whoami(None),
            })
            .await?;
        let task = {
            let (engine, id) = (host.engine.clone(), id.clone());
            tokio::spawn(async move { engine.execute(&id).await })
        };
        let followed = progress::follow(&**host.engine.store(), &id, Output::Text, true).await;
        let status = task.await??;
        // The run's notifications are delivered beside it: let them end
        // before the next run, so that their lines stay with this one.
        let left = host.settle_notifications().await;
        let (run, last) = followed?;
        progress::late_notifications(&**host.engine.store(), &id, last).await?;
        if let Some(line) = super::run::left_queued(left, &host.queued_notifications()) {
            outln!("{line}");
        }
        outln!("{}", progress::summary(&run));
        results.push((release, expected, status, t.elapsed(), run.reason));
    }

    Ok(results)
}

/// What one service's traffic met.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub total: u64,
    /// Release → (answers, of which 5xx).
    pub by_release: BTreeMap<String, (u64, u64)>,
    /// 503s before the service had any route (first deployment).
    pub unrouted: u64,
    /// Refused or broken connections, and 502s: traffic that met a slot
    /// with nothing behind it.
    pub connection_errors: u64,
}

/// Steady traffic at each service's front port.
struct Traffic {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
    counts: Arc<Mutex<BTreeMap<String, Counts>>>,
}

impl Traffic {
    fn start(admin: SocketAddr, token: String, services: &[&str]) -> Traffic {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = services
            .iter()
            .map(|s| {
                let (service, token, stopped, counts) = (
                    s.to_string(),
                    token.clone(),
                    stopped.clone(),
                    counts.clone(),
                );
                let name = service.clone();
                (
                    name,
                    tokio::spawn(async move {
                        drive(admin, &token, &service, stopped, counts).await;
                    }),
                )
            })
            .collect();
        Traffic {
            stop,
            tasks,
            counts,
        }
    }

    async fn stop(self) -> BTreeMap<String, Counts> {
        let _ = self.stop.send(true);
        for (_, t) in self.tasks {
            let _ = t.await;
        }
        self.counts.lock().unwrap().clone()
    }
}

/// Find the service's front port, then send `RATE` requests a second to it
/// until told to stop.
async fn drive(
    admin: SocketAddr,
    token: &str,
    service: &str,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    counts: Arc<Mutex<BTreeMap<String, Counts>>>,
) {
    let auth = format!("Bearer {token}");
    let front = loop {
        if *stopped.borrow() {
            return;
        }
        if let Ok((200, body)) = get(
            admin,
            &format!("/v1/services/{service}"),
            &[("authorization", &auth)],
        )
        .await
            && let Some(front) = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["front"].as_str().and_then(|f| f.parse().ok()))
        {
            break front;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        let (counts, service) = (counts.clone(), service.to_string());
        inflight.spawn(async move {
            let result = get(front, "/", &[]).await;
            let mut all = counts.lock().unwrap();
            let c = all.entry(service).or_default();
            c.total += 1;
            match result {
                Ok((503, body)) if body.contains("no_ready_instance") => c.unrouted += 1,
                Ok((502, _)) | Err(_) => c.connection_errors += 1,
                Ok((status, body)) => {
                    let release = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["release"].as_str().map(str::to_string))
                        .unwrap_or_else(|| "?".into());
                    let entry = c.by_release.entry(release).or_default();
                    entry.0 += 1;
                    if status >= 500 {
                        entry.1 += 1;
                    }
                }
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

/// A plain HTTP/1.1 GET on loopback; status and body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status line"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}
