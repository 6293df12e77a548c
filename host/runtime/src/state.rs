//! The data of one call's `Store`: WASI with nothing granted, `wasi:http`
//! through the plugin's network policy ([`crate::net`]), the host
//! interface (`log`, `config`, `secret`), the resource limiter, the log
//! budget, and the record of every capability denied and every limit
//! reached during the call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rollcage_core::{Limits, PluginId};
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::hostapi::LogBudget;
use crate::limiter::StoreLimiter;
use crate::net::{HttpPolicy, NetShared};
use crate::secrets::SecretSource;
use rollcage_core::grants::Grants;

/// What a plugin instance is, shared by all its calls.
pub struct PluginShared {
    pub id: PluginId,
    pub config_json: String,
    pub grants: Grants,
    pub secrets: Arc<dyn SecretSource>,
    pub limits: Limits,
    pub net: Arc<NetShared>,
    /// TLS settings of this plugin's HTTPS: the public roots, and its
    /// `tls_ca` when granted one.
    pub tls: Arc<rustls::ClientConfig>,
}

/// A capability a plugin used without a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub capability: &'static str,
    pub detail: String,
}

/// A limit a plugin reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    pub limit: &'static str,
    pub value: u64,
    pub detail: String,
}

/// What went wrong on the host's side of one call: capabilities denied and
/// limits reached, in order. Shared with the call's HTTP tasks.
#[derive(Clone, Default)]
pub struct Incidents(Arc<Mutex<(Vec<Denial>, Vec<LimitHit>)>>);

/// The most incidents of each sort kept per call: the first explains the
/// failure, the rest only repeat it.
const INCIDENTS_KEPT: usize = 16;

impl Incidents {
    pub fn deny(&self, plugin: &PluginId, capability: &'static str, detail: String) {
        let mut guard = self.0.lock().unwrap();
        if guard.0.len() < INCIDENTS_KEPT {
            tracing::warn!(plugin = %plugin, capability, "{}", crate::text::escape_controls(&detail));
            guard.0.push(Denial { capability, detail });
        }
    }

    pub fn limit(&self, plugin: &PluginId, limit: &'static str, value: u64, detail: String) {
        let mut guard = self.0.lock().unwrap();
        if guard.1.len() < INCIDENTS_KEPT {
            tracing::warn!(plugin = %plugin, limit, value, "limit reached: {}", crate::text::escape_controls(&detail));
            guard.1.push(LimitHit {
                limit,
                value,
                detail,
            });
        }
    }

    pub fn first_denial(&self) -> Option<Denial> {
        self.0.lock().unwrap().0.first().cloned()
    }

    pub fn first_limit(&self) -> Option<LimitHit> {
        self.0.lock().unwrap().1.first().cloned()
    }
}

/// The `T` of every plugin `Store`.
pub struct CallState {
    pub plugin: Arc<PluginShared>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: HttpPolicy,
    pub limiter: StoreLimiter,
    pub log: LogBudget,
    pub incidents: Incidents,
    stdout: LogPipe,
    stderr: LogPipe,
    /// The plugin read the (empty) environment during this call.
    pub read_environment: bool,
}

impl CallState {
    pub fn new(plugin: Arc<PluginShared>) -> Self {
        let limits = plugin.limits;
        let incidents = Incidents::default();
        let capacity = usize::try_from(limits.log_bytes).unwrap_or(usize::MAX);
        let stdout = LogPipe::new(capacity);
        let stderr = LogPipe::new(capacity);
        let mut builder = WasiCtx::builder();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        // Sockets: creating one is allowed so that the address check below
        // sees every attempt; it refuses every address and records a denial.
        builder
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(false);
        {
            let incidents = incidents.clone();
            let id = plugin.id.clone();
            builder.socket_addr_check(move |addr: SocketAddr, using| {
                incidents.deny(
                    &id,
                    "sockets",
                    format!("a socket ({using:?} {addr}); plugins get no sockets, use HTTP with allow_hosts"),
                );
                Box::pin(async { false })
            });
        }
        let hooks = HttpPolicy::new(
            plugin.id.clone(),
            plugin.grants.clone(),
            limits,
            incidents.clone(),
            plugin.net.clone(),
            plugin.tls.clone(),
        );
        let mut table = ResourceTable::new();
        table.set_max_capacity(usize::try_from(limits.resources).unwrap_or(usize::MAX));
        let mut http = WasiHttpCtx::new();
        // Headers of one `fields` resource: what a proxy would accept.
        http.set_field_size_limit(FIELD_SIZE_LIMIT);
        CallState {
            limiter: StoreLimiter::new(&limits),
            log: LogBudget::new(&limits),
            plugin,
            wasi: builder.build(),
            table,
            http,
            hooks,
            incidents,
            stdout,
            stderr,
            read_environment: false,
        }
    }

    /// The resource table and the HTTP policy, borrowed together.
    pub(crate) fn http_parts(&mut self) -> (&mut ResourceTable, &HttpPolicy) {
        (&mut self.table, &self.hooks)
    }

    /// Record a capability denied during this call.
    pub fn deny(&mut self, capability: &'static str, detail: String) {
        self.incidents.deny(&self.plugin.id, capability, detail);
    }

    /// Send what the plugin wrote to stdout and stderr to the log, under its
    /// id and within its log budget; returns the last meaningful stderr line
    /// (a panic message, usually).
    pub fn flush_output(&mut self) -> Option<String> {
        let id = self.plugin.id.clone();
        for line in self.stdout.lines() {
            if let Some(line) = self.log.admit(&line) {
                tracing::info!(plugin = %id, stream = "stdout", "{line}");
            }
        }
        let err_lines = self.stderr.lines();
        for line in &err_lines {
            if let Some(line) = self.log.admit(line) {
                tracing::warn!(plugin = %id, stream = "stderr", "{line}");
            }
        }
        self.log.report(&id, &self.plugin.limits);
        // Rust's panic output ends with a `note:` on backtraces; the line
        // before it is the panic message.
        err_lines
            .into_iter()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("note: "))
    }
}

/// Bytes of one `fields` resource (wasmtime counts its in-memory form).
const FIELD_SIZE_LIMIT: usize = 64 << 10;

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A stdout/stderr sink that keeps up to `limits.log_bytes` for the log.
#[derive(Clone)]
pub struct LogPipe {
    buffer: Arc<Mutex<(Vec<u8>, bool)>>,
    capacity: usize,
}

impl LogPipe {
    fn new(capacity: usize) -> Self {
        LogPipe {
            buffer: Arc::default(),
            capacity,
        }
    }

    fn lines(&self) -> Vec<String> {
        let guard = self.buffer.lock().unwrap();
        let (bytes, truncated) = &*guard;
        let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
            .lines()
            .map(str::to_string)
            .collect();
        if *truncated {
            lines.push(format!(
                "[output truncated at {} bytes: limits.log_bytes]",
                self.capacity
            ));
        }
        lines
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut guard = self.buffer.lock().unwrap();
        let (bytes, truncated) = &mut *guard;
        let room = self.capacity.saturating_sub(bytes.len());
        if buf.len() > room {
            *truncated = true;
        }
        bytes.extend_from_slice(&buf[..buf.len().min(room)]);
        // Report everything as written: a chatty plugin is trimmed, not stopped.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
