//! One supervised instance: a task that starts the service's command on a
//! loopback port, polls its health path to know when it is ready, restarts
//! it with backoff when it exits, and stops its process group when told.
//! The router and the status read the instance's atomics; nothing waits on
//! the task except [`Instance::stop`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use crate::spec::{ServiceDef, Vars, substitute};
use crate::upstream::HttpClient;
use crate::{ports, process};

/// Health polls while an instance is not ready.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Health polls once it is: readiness is kept up to date without flooding
/// the service's logs.
const READY_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that ran this long before exiting was healthy for a while:
/// its restart starts the backoff over.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// How long requests already sent to a stopping instance may take.
const DRAIN: Duration = Duration::from_secs(5);

/// What an instance runs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub service: String,
    pub slot: String,
    pub index: usize,
    pub release: String,
    pub def: Arc<ServiceDef>,
    pub log: PathBuf,
}

impl Launch {
    fn command(&self, port: u16) -> (Vec<String>, BTreeMap<String, String>) {
        let vars = Vars {
            service: &self.service,
            release: Some(&self.release),
            slot: Some(&self.slot),
            instance: Some(self.index),
            port: Some(port),
        };
        // Every placeholder has a value here, so substitution cannot fail.
        let fill = |t: &String| substitute(t, &vars).unwrap_or_else(|_| t.clone());
        let argv = self.def.command.iter().map(fill).collect();
        let env = self
            .def
            .env
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect();
        (argv, env)
    }
}

/// What an instance reports to its owner.
#[derive(Clone)]
pub struct Hooks {
    pub client: HttpClient,
    /// Called when the pid changes, so that `state.json` follows.
    pub on_change: Arc<dyn Fn() + Send + Sync>,
    /// The slot's restart counter, which outlives single instances.
    pub slot_restarts: Arc<AtomicU64>,
}

pub struct Instance {
    pub index: usize,
    pub release: String,
    port: AtomicU16,
    /// Also the process group id; 0 while no process runs.
    pid: AtomicU32,
    /// The process's start time (see [`process::start_time`]); 0 unknown.
    started: AtomicU64,
    ready: AtomicBool,
    restarts: AtomicU32,
    last_exit: Mutex<Option<String>>,
    inflight: AtomicUsize,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Marks a request in flight to an instance, so stopping it waits.
pub struct Inflight(Arc<Instance>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Instance {
    /// Start supervising on `port`.
    pub fn start(launch: Launch, port: u16, hooks: Hooks) -> Arc<Instance> {
        let (stop, stopped) = watch::channel(false);
        let instance = Arc::new(Instance {
            index: launch.index,
            release: launch.release.clone(),
            port: AtomicU16::new(port),
            pid: AtomicU32::new(0),
            started: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            restarts: AtomicU32::new(0),
            last_exit: Mutex::new(None),
            inflight: AtomicUsize::new(0),
            stop,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(supervise(instance.clone(), launch, hooks, stopped));
        *lock(&instance.task) = Some(task);
        instance
    }

    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.port.load(Ordering::SeqCst))
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    pub fn started(&self) -> Option<u64> {
        Some(self.started.load(Ordering::SeqCst)).filter(|t| *t != 0)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::SeqCst)
    }

    pub fn last_exit(&self) -> Option<String> {
        lock(&self.last_exit).clone()
    }

    pub fn enter(self: &Arc<Self>) -> Inflight {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        Inflight(self.clone())
    }

    /// Let requests in flight finish (the caller has already taken the
    /// instance out of routing), then stop the process group and wait.
    pub async fn stop(&self) {
        let deadline = Instant::now() + DRAIN;
        while self.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
        }
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Stop supervising but leave the process running, as a killed host
    /// would; the next start reaps it from `state.json`.
    pub async fn abandon(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn supervise(
    me: Arc<Instance>,
    launch: Launch,
    hooks: Hooks,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let port = me.port.load(Ordering::SeqCst);
        let (argv, env) = launch.command(port);
        let began = Instant::now();
        let exit = match process::spawn(&argv, &env, launch.def.workdir.as_deref(), &launch.log) {
            Err(e) => format!("failed to start `{}`: {e}", argv[0]),
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                me.started
                    .store(process::start_time(pid).unwrap_or(0), Ordering::SeqCst);
                me.pid.store(pid, Ordering::SeqCst);
                (hooks.on_change)();
                tracing::info!(service = %launch.service, slot = %launch.slot, instance = launch.index,
                    release = %launch.release, pid, port, "instance started");
                let exited = tokio::select! {
                    status = child.wait() => Some(status),
                    _ = stop.wait_for(|s| *s) => None,
                    never = probe(&me, &launch, port, &hooks.client) => match never {},
                };
                me.ready.store(false, Ordering::SeqCst);
                let Some(status) = exited else {
                    process::stop_group(&mut child).await;
                    me.pid.store(0, Ordering::SeqCst);
                    (hooks.on_change)();
                    return;
                };
                // Whatever the leader left in its group (workers holding
                // the port, say) goes with it.
                process::signal_group(pid, libc::SIGKILL);
                match status {
                    Ok(status) => process::describe(status),
                    Err(e) => format!("lost track of the process: {e}"),
                }
            }
        };
        me.pid.store(0, Ordering::SeqCst);
        me.restarts.fetch_add(1, Ordering::SeqCst);
        hooks.slot_restarts.fetch_add(1, Ordering::SeqCst);
        *lock(&me.last_exit) = Some(exit.clone());
        (hooks.on_change)();
        if began.elapsed() >= STABLE_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(service = %launch.service, slot = %launch.slot, instance = launch.index,
            "instance ended ({exit}); restarting in {backoff:?}");
        tokio::select! {
            _ = sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // Keep the endpoint stable unless something else took the port.
        if !ports::is_free(port)
            && let Ok(fresh) = ports::free_port()
        {
            me.port.store(fresh, Ordering::SeqCst);
        }
    }
}

/// Poll the health path for as long as the process runs.
async fn probe(me: &Instance, launch: &Launch, port: u16, client: &HttpClient) -> Infallible {
    let uri: Option<http::Uri> = format!("http://127.0.0.1:{port}{}", launch.def.health_path)
        .parse()
        .ok();
    loop {
        let healthy = match &uri {
            Some(uri) => matches!(
                timeout(PROBE_TIMEOUT, check(client, uri.clone())).await,
                Ok(true)
            ),
            None => false,
        };
        if me.ready.swap(healthy, Ordering::SeqCst) != healthy {
            tracing::info!(service = %launch.service, slot = %launch.slot, instance = launch.index,
                healthy, "instance readiness changed");
        }
        sleep(if healthy {
            READY_INTERVAL
        } else {
            POLL_INTERVAL
        })
        .await;
    }
}

async fn check(client: &HttpClient, uri: http::Uri) -> bool {
    let Ok(request) = http::Request::get(uri).body(Full::<Bytes>::default()) else {
        return false;
    };
    match client.request(request).await {
        Ok(response) => {
            let ok = response.status().is_success();
            // Reading the body to its end lets the pool reuse the connection.
            let _ = response.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_get_the_instance_values() {
        let launch = Launch {
            service: "api".into(),
            slot: "canary".into(),
            index: 1,
            release: "2.0".into(),
            def: Arc::new(ServiceDef {
                command: vec![
                    "srv".into(),
                    "--port={port}".into(),
                    "{slot}-{instance}".into(),
                ],
                env: BTreeMap::from([("VERSION".into(), "{service}@{release}".into())]),
                workdir: None,
                health_path: "/healthz".into(),
                sticky_header: None,
            }),
            log: PathBuf::from("/tmp/x.log"),
        };
        let (argv, env) = launch.command(4000);
        assert_eq!(argv, ["srv", "--port=4000", "canary-1"]);
        assert_eq!(env["VERSION"], "api@2.0");
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_retried_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            service: "api".into(),
            slot: "s".into(),
            index: 0,
            release: "1".into(),
            def: Arc::new(ServiceDef {
                command: vec!["/nonexistent/program".into()],
                env: BTreeMap::new(),
                workdir: None,
                health_path: "/healthz".into(),
                sticky_header: None,
            }),
            log: dir.path().join("s-0.log"),
        };
        let slot_restarts = Arc::new(AtomicU64::new(0));
        let hooks = Hooks {
            client: crate::upstream::client(),
            on_change: Arc::new(|| {}),
            slot_restarts: slot_restarts.clone(),
        };
        let instance = Instance::start(launch, ports::free_port().unwrap(), hooks);
        // Backoff: failures at about 0, 200 and 600 ms.
        sleep(Duration::from_millis(700)).await;
        let restarts = instance.restarts();
        assert!((2..=4).contains(&restarts), "{restarts}");
        assert_eq!(slot_restarts.load(Ordering::SeqCst), u64::from(restarts));
        assert!(
            instance
                .last_exit()
                .unwrap()
                .starts_with("failed to start `/nonexistent/program`")
        );
        assert!(!instance.is_ready() && instance.pid().is_none());
        instance.stop().await;
    }
}
