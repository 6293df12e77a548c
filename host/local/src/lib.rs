//! Rollcage's embedded local runtime: a process supervisor that runs each
//! slot's instances on loopback ports, a weighted HTTP router in front of
//! every service with Prometheus metrics, and the loopback admin API the
//! `local` environment provider drives. It runs inside the host process;
//! `state.json` lets a host that was killed hand over to the next one.
//!
//! Modules, one job each:
//! * `spec`: what callers ask for, validation, placeholders
//! * `process`: process groups, logs, reaping
//! * `instance`: one supervised instance (health, restart with backoff)
//! * `services`: the book of services and slots, desired state, status
//! * `router`: weighted, sticky routing and proxying on front ports
//! * `metrics`, `window`: Prometheus series and per-second windows
//! * `admin`: the HTTP admin API; `job`: one-off commands
//! * `state`, `logs`, `ports`, `serve`, `upstream`: files, sockets, servers

mod admin;
mod error;
mod instance;
mod job;
mod logs;
mod metrics;
mod ports;
mod private;
mod process;
mod router;
mod serve;
mod services;
mod spec;
mod state;
mod upstream;
mod window;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use error::LocalError;

use serve::Server;
use services::Core;

/// Where the runtime keeps its files and listens.
#[derive(Debug, Clone)]
pub struct LocalRuntimeOptions {
    /// `state.json` and `logs/`; created when missing.
    pub state_dir: PathBuf,
    /// The admin API; a free loopback port by default.
    pub admin_addr: Option<SocketAddr>,
    /// `GET /metrics`; a free loopback port by default.
    pub metrics_addr: Option<SocketAddr>,
}

impl LocalRuntimeOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        LocalRuntimeOptions {
            state_dir: state_dir.into(),
            admin_addr: None,
            metrics_addr: None,
        }
    }
}

/// A running local runtime. End it with [`LocalRuntime::shutdown`];
/// dropping it leaves its instances to their supervisors until the tokio
/// runtime ends, and the next start reaps what is left.
pub struct LocalRuntime {
    /// Held (an exclusive `flock`) while this runtime lives: one runtime
    /// per state folder; the kernel lets go of it when the process ends,
    /// however it ends.
    _lock: std::fs::File,
    core: Arc<Core>,
    admin: Server,
    metrics: Server,
    admin_addr: SocketAddr,
    metrics_addr: SocketAddr,
    token: String,
}

/// Take `dir/lock` for this process, or say which process has it. Another
/// runtime on the same folder would reap the first one's instances.
fn take_lock(dir: &std::path::Path) -> Result<std::fs::File, LocalError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let io = |source| LocalError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(LocalError::InUse {
            dir: dir.to_path_buf(),
            pid: pid.trim().to_string(),
        });
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

impl LocalRuntime {
    /// Reap the process groups a previous host left in `state_dir`, restore
    /// its services (front ports taken again where free, new instances),
    /// and start the admin API and the metrics endpoint.
    pub async fn start(opts: LocalRuntimeOptions) -> Result<LocalRuntime, LocalError> {
        let admin_addr = ports::loopback(opts.admin_addr)?;
        let metrics_addr = ports::loopback(opts.metrics_addr)?;
        let dir = opts.state_dir;
        crate::private::create_dir(&dir)
            .and_then(|()| crate::private::create_dir(&dir.join("logs")))
            .map_err(|source| LocalError::Io {
                path: dir.clone(),
                source,
            })?;
        let lock = take_lock(&dir)?;
        let token = new_token()?;
        let listen = |addr| ports::listen(addr).map_err(|source| LocalError::Bind { addr, source });
        let admin_listener = listen(admin_addr)?;
        let metrics_listener = listen(metrics_addr)?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| LocalError::Bind {
                addr: admin_addr,
                source,
            })?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| LocalError::Bind {
                addr: metrics_addr,
                source,
            })?;

        let core = Core::new(dir.clone());
        if let Some(previous) = state::load(&dir)? {
            let reaped = process::reap_groups(&previous.groups()).await;
            if !reaped.is_empty() {
                tracing::info!(groups = ?reaped, "reaped process groups a previous host left running");
            }
            core.restore(previous);
        }
        core.persist();

        let admin = Server::spawn(admin_listener, admin::app(core.clone(), &token));
        let scraped = core.clone();
        let metrics = Server::spawn(
            metrics_listener,
            metrics::app(move || scraped.metrics.render(&scraped.gauges())),
        );
        tracing::info!(admin = %admin_addr, metrics = %metrics_addr, "local runtime started");
        Ok(LocalRuntime {
            _lock: lock,
            core,
            admin,
            metrics,
            admin_addr,
            metrics_addr,
            token,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bearer token of the admin API, new at every start.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `http://127.0.0.1:PORT/metrics`
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    /// Stop every instance (their whole process groups), the front ports
    /// and both servers, and remove `state.json`. Logs stay.
    pub async fn shutdown(self) {
        self.admin.stop().await;
        self.metrics.stop().await;
        self.core.shutdown(false).await;
    }

    /// Stop every instance, the front ports and both servers, but keep
    /// `state.json`: the next [`LocalRuntime::start`] on this folder
    /// restores the services as they were (new instances, the same front
    /// ports where free). What a one-off command does at its end, so that
    /// the next one finds the environment it left.
    pub async fn suspend(self) {
        self.admin.stop().await;
        self.metrics.stop().await;
        self.core.shutdown(true).await;
    }

    /// Stop the runtime's tasks but leave its processes running and its
    /// `state.json` in place: what a killed host leaves behind, for the
    /// next [`LocalRuntime::start`] on the same directory to reap. For
    /// tests of that takeover.
    #[doc(hidden)]
    pub async fn abandon(self) {
        self.admin.abort().await;
        self.metrics.abort().await;
        self.core.abandon().await;
    }
}

/// 32 random bytes, hex-encoded.
fn new_token() -> Result<String, LocalError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(LocalError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// The host keeps the runtime in shared state and may start it from a
    /// spawned task.
    #[test]
    fn the_runtime_and_its_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        shared::<LocalRuntime>();
        send(&LocalRuntime::start(LocalRuntimeOptions::new(
            "/nonexistent",
        )));
    }

    #[tokio::test]
    async fn refuses_to_listen_beyond_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LocalRuntimeOptions {
            admin_addr: Some("0.0.0.0:0".parse().unwrap()),
            ..LocalRuntimeOptions::new(dir.path())
        };
        assert!(matches!(
            LocalRuntime::start(opts).await,
            Err(LocalError::NotLoopback { .. })
        ));
    }
}
