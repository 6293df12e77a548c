//! The data of one call's `Store`: WASI with nothing granted, `wasi:http`
//! filtered by the plugin's `allow_hosts` and the denied networks, the host
//! interface (`log`, `config`, `secret`), the memory limiter, and the record
//! of every capability the plugin was denied during the call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::uri::Scheme;
use rollcage_core::PluginId;
use tokio::io::AsyncWrite;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::bindings::{host, wit};
use crate::secrets::SecretSource;
use rollcage_core::grants::{Grants, is_denied_ip};

/// Bytes of stdout or stderr kept per call; the rest is dropped (and said so).
const OUTPUT_CAPACITY: usize = 64 * 1024;

/// What a plugin instance is, shared by all its calls.
pub struct PluginShared {
    pub id: PluginId,
    pub config_json: String,
    pub grants: Grants,
    pub secrets: Arc<dyn SecretSource>,
    pub memory_limit_bytes: usize,
}

/// A capability a plugin used without a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub capability: &'static str,
    pub detail: String,
}

type Denials = Arc<Mutex<Vec<Denial>>>;

fn record(denials: &Denials, plugin: &PluginId, capability: &'static str, detail: String) {
    tracing::warn!(plugin = %plugin, capability, "{detail}");
    denials.lock().unwrap().push(Denial { capability, detail });
}

/// The `T` of every plugin `Store`.
pub struct CallState {
    pub plugin: Arc<PluginShared>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: HttpPolicy,
    pub limiter: MemoryLimiter,
    denials: Denials,
    stdout: LogPipe,
    stderr: LogPipe,
    /// The plugin read the (empty) environment during this call.
    pub read_environment: bool,
}

impl CallState {
    pub fn new(plugin: Arc<PluginShared>) -> Self {
        let denials: Denials = Arc::default();
        let stdout = LogPipe::default();
        let stderr = LogPipe::default();
        let mut builder = WasiCtx::builder();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        // Sockets: creating one is allowed so that the address check below
        // sees every attempt; it refuses every address and records a denial.
        builder
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(false);
        {
            let denials = denials.clone();
            let id = plugin.id.clone();
            builder.socket_addr_check(move |addr: SocketAddr, using| {
                record(
                    &denials,
                    &id,
                    "sockets",
                    format!("a socket ({using:?} {addr}); plugins get no sockets, use HTTP with allow_hosts"),
                );
                Box::pin(async { false })
            });
        }
        let hooks = HttpPolicy {
            plugin: plugin.id.clone(),
            grants: plugin.grants.clone(),
            denials: denials.clone(),
        };
        CallState {
            limiter: MemoryLimiter {
                limit_bytes: plugin.memory_limit_bytes,
                exceeded: false,
            },
            plugin,
            wasi: builder.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks,
            denials,
            stdout,
            stderr,
            read_environment: false,
        }
    }

    /// Record a capability denied during this call.
    pub fn deny(&mut self, capability: &'static str, detail: String) {
        record(&self.denials, &self.plugin.id, capability, detail);
    }

    /// The first capability denied during this call, if any.
    pub fn first_denial(&self) -> Option<Denial> {
        self.denials.lock().unwrap().first().cloned()
    }

    /// Send what the plugin wrote to stdout and stderr to the log, under its
    /// id; returns the last meaningful stderr line (a panic message, usually).
    pub fn flush_output(&self) -> Option<String> {
        let id = &self.plugin.id;
        for line in self.stdout.lines() {
            tracing::info!(plugin = %id, stream = "stdout", "{line}");
        }
        let err_lines = self.stderr.lines();
        for line in &err_lines {
            tracing::warn!(plugin = %id, stream = "stderr", "{line}");
        }
        // Rust's panic output ends with a `note:` on backtraces; the line
        // before it is the panic message.
        err_lines
            .into_iter()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("note: "))
    }
}

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

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) {
        let id = &self.plugin.id;
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        match level {
            host::Level::Trace => tracing::trace!(plugin = %id, fields, "{message}"),
            host::Level::Debug => tracing::debug!(plugin = %id, fields, "{message}"),
            host::Level::Info => tracing::info!(plugin = %id, fields, "{message}"),
            host::Level::Warn => tracing::warn!(plugin = %id, fields, "{message}"),
            host::Level::Error => tracing::error!(plugin = %id, fields, "{message}"),
        }
    }

    fn config(&mut self) -> String {
        self.plugin.config_json.clone()
    }

    fn secret(&mut self, name: String) -> Result<String, String> {
        let id = self.plugin.id.clone();
        if !self.plugin.grants.secrets.contains(&name) {
            self.deny("secrets", format!("secret `{name}` is not granted"));
            return Err(format!("secret `{name}` is not granted to plugin `{id}`"));
        }
        self.plugin
            .secrets
            .get(&name)
            .ok_or_else(|| format!("secret `{name}` is granted to plugin `{id}` but has no value"))
    }
}

impl wit::Host for CallState {}

/// Caps linear memory; remembers whether the cap was hit so that the trap
/// that follows is reported as the memory limit, not as a crash.
pub struct MemoryLimiter {
    limit_bytes: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// `wasi:http` hooks: only granted hosts, never a denied network.
struct HttpPolicy {
    plugin: PluginId,
    grants: Grants,
    denials: Denials,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri().clone();
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let Some(host) = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        else {
            return Box::new(async { Err(HttpError::HttpRequestUriInvalid) });
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.grants.allows_host(&host, port) {
            record(
                &self.denials,
                &self.plugin,
                "http",
                format!("request to {host}:{port}, which is not in allow_hosts"),
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let denials = self.denials.clone();
        let plugin = self.plugin.clone();
        Box::new(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| HttpError::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                })?
                .collect();
            let Some(first) = addrs.first().copied() else {
                return Err(HttpError::DestinationNotFound);
            };
            if let Some(bad) = addrs.iter().find(|a| is_denied_ip(a.ip())) {
                record(
                    &denials,
                    &plugin,
                    "http",
                    format!(
                        "request to {host}:{port}, which resolves to {} in a denied network",
                        bad.ip()
                    ),
                );
                return Err(HttpError::DestinationIpProhibited);
            }
            if !https {
                // Connect to the address just checked, not to a second lookup
                // that could answer differently. (TLS needs the name for SNI
                // and certificate checks, so HTTPS keeps it.)
                let authority = match first {
                    SocketAddr::V4(a) => a.to_string(),
                    SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
                };
                let mut parts = request.uri().clone().into_parts();
                parts.authority = Some(
                    authority
                        .parse()
                        .map_err(|_| HttpError::HttpRequestUriInvalid)?,
                );
                *request.uri_mut() =
                    http::Uri::from_parts(parts).map_err(|_| HttpError::HttpRequestUriInvalid)?;
            }
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

/// A stdout/stderr sink that keeps up to [`OUTPUT_CAPACITY`] bytes for the log.
#[derive(Clone, Default)]
pub struct LogPipe {
    buffer: Arc<Mutex<(Vec<u8>, bool)>>,
}

impl LogPipe {
    fn lines(&self) -> Vec<String> {
        let guard = self.buffer.lock().unwrap();
        let (bytes, truncated) = &*guard;
        let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
            .lines()
            .map(str::to_string)
            .collect();
        if *truncated {
            lines.push(format!("[output truncated at {OUTPUT_CAPACITY} bytes]"));
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
        let room = OUTPUT_CAPACITY.saturating_sub(bytes.len());
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
