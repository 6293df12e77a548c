//! Outgoing HTTP for plugins (`wasi:http`): the grant check, the address
//! check, and the sending itself, accounted to the plugin.
//!
//! A request goes out only if its host is in `allow_hosts`; then the name is
//! resolved once, every address is checked in canonical form
//! ([`Grants::may_connect`]: restricted networks only where the grant names
//! them, forbidden ones never), and the connection is made to an address
//! that passed (each in turn until one answers), never to a second lookup.
//! HTTPS connects to that same address and verifies the certificate for the
//! host name, against the public roots and the plugin's own `tls_ca` when
//! it was granted one.
//!
//! What a plugin can make the host hold through HTTP is bounded by its
//! limits: requests per call, requests in flight (each holds a socket),
//! the bytes of each request and response body, and the buffer of a body
//! being written (two chunks of [`BODY_CHUNK`]). Credentials in a URL's
//! user-info become an `Authorization: Basic` header; the `Host` header is
//! always the bare host.
//!
//! A plugin learns of a denial where it first can: the grant is checked
//! when the request is handed over (`outgoing-handler.handle` fails with
//! `http-request-denied` before any body is written), and a request that
//! fails later (a refused connection) keeps accepting its body, discarding
//! it, so that the plugin reads the reason from the response rather than
//! from a closed stream, which language runtimes report badly.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use rollcage_core::{Grants, Limits, PluginId};
use tokio::net::TcpStream;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler::Host as _;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme as WasiScheme};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView,
};

use crate::state::{CallState, Incidents};
use crate::text::clip;

/// The most bytes one write to an outgoing body may carry; the host holds
/// at most two such chunks per body.
pub const BODY_CHUNK: usize = 16 << 10;

/// How long resolving a name and connecting may take when the plugin set
/// no connect timeout (the call's own time limit still applies).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every call's HTTP shares: the TLS settings over the public roots,
/// built once per runtime.
pub struct NetShared {
    tls: Arc<rustls::ClientConfig>,
    /// Names answered without asking the system resolver. Empty outside
    /// tests: it lets a test give a name an address that no second lookup
    /// could find, proving the connection goes where the check looked.
    fixed_names: Vec<(String, IpAddr)>,
}

impl NetShared {
    pub fn new() -> Result<Self, String> {
        Ok(NetShared {
            tls: tls_config(&[])?,
            fixed_names: Vec::new(),
        })
    }

    /// The TLS settings for every plugin without a private CA.
    pub fn default_tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// TLS settings that trust the certificates of `pem` beside the public
    /// roots. An error says what is wrong with the PEM text, never quoting it.
    pub fn tls_with_ca(&self, pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut certs = Vec::new();
        for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            certs.push(cert.map_err(|e| format!("certificate {} is not valid PEM: {e}", i + 1))?);
        }
        if certs.is_empty() {
            return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
        }
        tls_config(&certs)
    }

    #[cfg(test)]
    pub(crate) fn with_fixed_name(mut self, name: &str, ip: IpAddr) -> Self {
        self.fixed_names.push((name.to_string(), ip));
        self
    }
}

/// A client configuration trusting the public roots and `extra`.
fn tls_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    for (i, cert) in extra.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("certificate {} cannot be a trust root: {e}", i + 1))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// The `wasi:http` hooks of one call.
pub struct HttpPolicy {
    call: Arc<CallNet>,
}

/// One call's view of the network: its grants, limits and counters.
struct CallNet {
    plugin: PluginId,
    grants: Grants,
    limits: Limits,
    incidents: Incidents,
    shared: Arc<NetShared>,
    /// The public roots, and the plugin's `tls_ca` when it has one.
    tls: Arc<rustls::ClientConfig>,
    requests: AtomicU64,
    in_flight: Arc<AtomicU64>,
}

impl HttpPolicy {
    pub fn new(
        plugin: PluginId,
        grants: Grants,
        limits: Limits,
        incidents: Incidents,
        shared: Arc<NetShared>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        HttpPolicy {
            call: Arc::new(CallNet {
                plugin,
                grants,
                limits,
                incidents,
                shared,
                tls,
                requests: AtomicU64::new(0),
                in_flight: Arc::new(AtomicU64::new(0)),
            }),
        }
    }
}

type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), HttpError>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        // However the request ends, a body the plugin is still writing is
        // read to its end: its writes succeed and it reads the reason.
        let request = request.map(|body| DiscardRest::new(body).boxed_unsync());
        match self.call.admit(request) {
            Ok((request, dest)) => {
                let call = self.call.clone();
                Box::new(async move { call.send(request, dest, options).await })
            }
            Err(e) => Box::new(async move { Err(e) }),
        }
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }

    // The defaults log the error's `Debug` form (`Os { code: 111, .. }`);
    // these log what happened in words, under the plugin's id.
    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        let code = match err.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorCode::ConnectionRefused,
            std::io::ErrorKind::TimedOut => ErrorCode::ConnectionTimeout,
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                ErrorCode::ConnectionTerminated
            }
            _ => ErrorCode::InternalError(Some(format!("connection failed: {err}"))),
        };
        tracing::info!(plugin = %self.call.plugin, "plugin request: connection failed: {err}");
        code
    }

    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        tracing::info!(plugin = %self.call.plugin, "plugin request: {}", chain(err));
        if err.is_timeout() {
            ErrorCode::ConnectionReadTimeout
        } else if err.is_incomplete_message() || err.is_closed() {
            ErrorCode::ConnectionTerminated
        } else {
            ErrorCode::HttpProtocolError
        }
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        tracing::info!(plugin = %self.call.plugin, "plugin request: TLS failed: {}", chain(err));
        // A certificate nobody granted trust in is the usual case (a
        // private CA without `tls_ca`): say so rather than "protocol".
        let rustls_error = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(_)) => ErrorCode::TlsCertificateError,
            _ => ErrorCode::TlsProtocolError,
        }
    }
}

/// An error and its causes, in words: `a: b: c`.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

impl HttpPolicy {
    /// The checks a request can fail before it is sent, made when the
    /// plugin hands it over: its host must be in `allow_hosts`, and an
    /// address given as such must be one the plugin may connect to (a name
    /// is checked once resolved, when sending). The denial is recorded.
    /// `None`: the request goes on to [`WasiHttpHooks::send_request`].
    fn refuse_early(&self, request: &HostOutgoingRequest) -> Option<ErrorCode> {
        let https = match &request.scheme {
            Some(WasiScheme::Https) | None => true,
            Some(WasiScheme::Http) => false,
            // Refused by wasmtime as a protocol error.
            Some(WasiScheme::Other(_)) => return None,
        };
        let authority: http::uri::Authority = request.authority.as_deref()?.parse().ok()?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let call = &self.call;
        let shown = clip(&host, 256);
        if !call.grants.allows_host(&host, port) {
            call.incidents.deny(
                &call.plugin,
                "http",
                format!("request to {shown}:{port}, which is not in allow_hosts"),
            );
            return Some(ErrorCode::HttpRequestDenied);
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && let Err(why) = call.grants.may_connect(ip, port)
        {
            call.incidents.deny(
                &call.plugin,
                "http",
                format!("request to {shown}:{port}: {why}"),
            );
            return Some(ErrorCode::DestinationIpProhibited);
        }
        None
    }
}

/// `wasi:http/outgoing-handler.handle`, with the grant checked first
/// ([`HttpPolicy::refuse_early`]): a denied request fails here, where the
/// plugin first looks for an error and before it writes a body, instead of
/// when it reads the response. Everything else is wasmtime's `handle`.
pub fn link_outgoing_handler(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    type Handled = (Result<Resource<HostFutureIncomingResponse>, ErrorCode>,);
    linker
        .instance("wasi:http/outgoing-handler@0.2.12")?
        .func_wrap(
            "handle",
            |mut store: StoreContextMut<'_, CallState>,
             (request, options): (
                Resource<HostOutgoingRequest>,
                Option<Resource<RequestOptions>>,
            )|
             -> wasmtime::Result<Handled> {
                let state = store.data_mut();
                if let Some(code) = state.refuse_early(&request)? {
                    let view = state.http();
                    let mut refused = view.table.delete(request)?;
                    if let Some(options) = options {
                        view.table.delete(options)?;
                    }
                    // A body the plugin writes anyway goes nowhere.
                    if let Some(body) = refused.body.take() {
                        DiscardRest::new(body).discard();
                    }
                    return Ok((Err(code),));
                }
                match state.http().handle(request, options) {
                    Ok(pending) => Ok((Ok(pending),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            },
        )?;
    Ok(())
}

impl CallState {
    /// [`HttpPolicy::refuse_early`] for a request in this call's table.
    fn refuse_early(
        &mut self,
        request: &Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        let (table, hooks) = self.http_parts();
        Ok(hooks.refuse_early(table.get(request)?))
    }
}

/// A request body that, dropped before its end (the request refused, the
/// connection failed), goes on being read in the background and thrown
/// away until the plugin finishes or drops it: the plugin's writes succeed
/// and it learns why the request failed from the response, as `wasi:http`
/// intends, not from a closed stream.
struct DiscardRest {
    inner: Option<WasiBody>,
    ended: bool,
}

impl DiscardRest {
    fn new(body: WasiBody) -> Self {
        DiscardRest {
            inner: Some(body),
            ended: false,
        }
    }

    /// Read the rest of the body and drop it, in the background.
    fn discard(mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if self.ended {
            return;
        }
        // Outside a runtime (never, in the host) the body is just dropped.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

impl Body for DiscardRest {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if frame.is_none() {
            self.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for DiscardRest {
    fn drop(&mut self) {
        if !self.ended && self.inner.is_some() {
            let rest = DiscardRest {
                inner: self.inner.take(),
                ended: false,
            };
            rest.discard();
        }
    }
}

/// Where an admitted request goes, and its place among those in flight.
struct Destination {
    host: String,
    port: u16,
    https: bool,
    slot: InFlight,
}

/// One request in flight; the count goes down when the request and its
/// connection are done with (or dropped).
struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An error the plugin reads, saying what went wrong in its own words.
fn refuse(message: String) -> HttpError {
    HttpError::InternalError(Some(message))
}

impl CallNet {
    /// The checks that need no network: the grant, the call's request
    /// counts, credentials in the URL. Returns the request made ready to
    /// send (its `Host` header bare, user-info moved to `Authorization`).
    fn admit(
        &self,
        mut request: http::Request<WasiBody>,
    ) -> Result<(http::Request<WasiBody>, Destination), HttpError> {
        let uri = request.uri().clone();
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri
            .host()
            .map(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
            .ok_or(HttpError::HttpRequestUriInvalid)?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let shown = clip(&host, 256);
        if !self.grants.allows_host(&host, port) {
            self.incidents.deny(
                &self.plugin,
                "http",
                format!("request to {shown}:{port}, which is not in allow_hosts"),
            );
            return Err(HttpError::HttpRequestDenied);
        }
        let made = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if made > self.limits.http_requests {
            return Err(self.over(
                "http_requests",
                self.limits.http_requests,
                format!(
                    "request {made} to {shown}:{port}; a call may make {}",
                    self.limits.http_requests
                ),
            ));
        }
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(self.in_flight.clone());
        if now >= self.limits.http_in_flight {
            return Err(self.over(
                "http_in_flight",
                self.limits.http_in_flight,
                format!(
                    "request to {shown}:{port} while {now} are in flight; read or drop a response first"
                ),
            ));
        }

        if let Some((user, password)) = userinfo(&uri) {
            if request.headers().contains_key(http::header::AUTHORIZATION) {
                return Err(refuse(
                    "the URL carries credentials and the request an Authorization header: give one of them".into(),
                ));
            }
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let value = http::HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| refuse("the URL's credentials are not valid in a header".into()))?;
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        // The bare host, never the user-info that the authority may carry.
        let default_port = port == if https { 443 } else { 80 };
        let host_header = match (host.contains(':'), default_port) {
            (true, true) => format!("[{host}]"),
            (true, false) => format!("[{host}]:{port}"),
            (false, true) => host.clone(),
            (false, false) => format!("{host}:{port}"),
        };
        let value = http::HeaderValue::from_str(&host_header)
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        request.headers_mut().insert(http::header::HOST, value);
        // Only the path goes on the wire (no proxy is addressed).
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;

        Ok((
            request,
            Destination {
                host,
                port,
                https,
                slot,
            },
        ))
    }

    /// Record that a limit was reached and make the error the plugin reads.
    fn over(&self, limit: &'static str, value: u64, detail: String) -> HttpError {
        let message = format!("limits.{limit} = {value} reached: {detail}");
        self.incidents.limit(&self.plugin, limit, value, detail);
        refuse(message)
    }

    async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        dest: Destination,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, Io), HttpError> {
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(CONNECT_TIMEOUT);
        let first_byte_timeout = options.and_then(|o| o.first_byte_timeout);
        let addrs = self.resolve(&dest, connect_timeout).await?;
        let stream = connect(&addrs, connect_timeout).await?;

        let (request_kb, response_kb) = (self.limits.request_body_kb, self.limits.response_body_kb);
        let (request_limit, response_limit) = (
            request_kb.saturating_mul(1024),
            response_kb.saturating_mul(1024),
        );
        let request = {
            let call = self.clone();
            request.map(move |body| {
                Capped::new(body, request_limit, move || {
                    call.over_body(
                        "request_body_kb",
                        request_kb,
                        HttpError::HttpRequestBodySize,
                    )
                })
                .boxed_unsync()
            })
        };

        let io: Box<dyn Connection> = if dest.https {
            let name = server_name(&dest.host)?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(HttpError::Tls)?;
            Box::new(TokioIo::new(tls))
        } else {
            Box::new(TokioIo::new(stream))
        };
        let (mut sender, mut conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::Builder::new().handshake(io),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;

        // Wait for the response while driving the connection.
        let respond = sender.send_request(request);
        let respond = async {
            match first_byte_timeout {
                Some(t) => tokio::time::timeout(t, respond)
                    .await
                    .map_err(|_| HttpError::ConnectionReadTimeout)?
                    .map_err(HttpError::from),
                None => respond.await.map_err(HttpError::from),
            }
        };
        tokio::pin!(respond);
        let mut conn_done = false;
        let response = loop {
            tokio::select! {
                r = &mut respond => break r?,
                c = &mut conn, if !conn_done => {
                    conn_done = true;
                    c.map_err(HttpError::from)?;
                }
            }
        };
        let call = self.clone();
        let response = response.map(move |incoming| {
            Capped::new(
                incoming.map_err(HttpError::from),
                response_limit,
                move || {
                    call.over_body(
                        "response_body_kb",
                        response_kb,
                        HttpError::HttpResponseBodySize,
                    )
                },
            )
            .boxed_unsync()
        });
        let slot = dest.slot;
        let io: Io = Box::new(async move {
            let _slot = slot;
            if !conn_done {
                conn.await.map_err(HttpError::from)?;
            }
            Ok(())
        });
        Ok((response, io))
    }

    /// Record that a body went past `limit` (`kb` KiB) and make the error
    /// the plugin reads.
    fn over_body(
        &self,
        limit: &'static str,
        kb: u64,
        error: fn(Option<u64>) -> HttpError,
    ) -> HttpError {
        self.incidents.limit(
            &self.plugin,
            limit,
            kb,
            format!("a body of more than {kb} KiB"),
        );
        error(Some(kb.saturating_mul(1024)))
    }

    /// The destination's addresses that this plugin may connect to, in the
    /// resolver's order. Refused addresses are recorded as a denial.
    async fn resolve(
        &self,
        dest: &Destination,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, HttpError> {
        let fixed: Vec<SocketAddr> = (self.shared.fixed_names.iter())
            .filter(|(name, _)| *name == dest.host)
            .map(|(_, ip)| SocketAddr::new(*ip, dest.port))
            .collect();
        let addrs: Vec<SocketAddr> = match dest.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, dest.port)],
            Err(_) if !fixed.is_empty() => fixed,
            Err(_) => {
                let lookup = tokio::net::lookup_host((dest.host.as_str(), dest.port));
                tokio::time::timeout(timeout, lookup)
                    .await
                    .map_err(|_| HttpError::DnsTimeout)?
                    .map_err(|e| HttpError::DnsError {
                        rcode: Some(e.to_string()),
                        info_code: None,
                    })?
                    .collect()
            }
        };
        let mut allowed = Vec::new();
        let mut refused = None;
        for addr in addrs {
            match self.grants.may_connect(addr.ip(), addr.port()) {
                Ok(()) => allowed.push(addr),
                Err(why) => {
                    refused.get_or_insert(why);
                }
            }
        }
        if allowed.is_empty() {
            let Some(why) = refused else {
                return Err(HttpError::DestinationNotFound);
            };
            self.incidents.deny(
                &self.plugin,
                "http",
                format!("request to {}:{}: {why}", clip(&dest.host, 256), dest.port),
            );
            return Err(HttpError::DestinationIpProhibited);
        }
        Ok(allowed)
    }
}

/// A plain or TLS connection, as hyper drives it.
trait Connection: hyper::rt::Read + hyper::rt::Write + Send + Unpin {}
impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin> Connection for T {}

/// Connect to the first of `addrs` that answers.
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::DestinationNotFound;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = HttpError::ConnectionRefused
            }
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

/// The name the certificate must be valid for: the host the plugin asked
/// for, not the address it was reached at.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_string()).map_err(HttpError::InvalidDnsNameError)
}

/// The user and password of a URL's user-info, percent-decoded.
fn userinfo(uri: &http::Uri) -> Option<(String, String)> {
    let authority = uri.authority()?.as_str();
    let (info, _) = authority.rsplit_once('@')?;
    let (user, password) = info.split_once(':').unwrap_or((info, ""));
    Some((percent_decode(user), percent_decode(password)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A body that fails once more than `limit` bytes passed through it.
struct Capped<B> {
    inner: B,
    left: u64,
    over: Option<Box<dyn FnOnce() -> HttpError + Send>>,
}

impl<B> Capped<B> {
    fn new(inner: B, limit: u64, over: impl FnOnce() -> HttpError + Send + 'static) -> Self {
        Capped {
            inner,
            left: limit,
            over: Some(Box::new(over)),
        }
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes, Error = HttpError> + Unpin,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > self.left {
                self.left = 0;
                return Poll::Ready(self.over.take().map(|over| Err(over())));
            }
            self.left -= len;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_decoded() {
        let uri: http::Uri = "http://al%40ice:p%3Ass@example.com/x".parse().unwrap();
        assert_eq!(
            userinfo(&uri),
            Some(("al@ice".to_string(), "p:ss".to_string()))
        );
        let uri: http::Uri = "http://example.com/x".parse().unwrap();
        assert_eq!(userinfo(&uri), None);
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
    }

    #[tokio::test]
    async fn a_capped_body_fails_past_its_limit_once() {
        let body =
            http_body_util::Full::new(Bytes::from(vec![0u8; 100])).map_err(|never| match never {});
        let mut capped = Capped::new(body, 10, || HttpError::HttpRequestBodySize(Some(10)));
        let frame = capped.frame().await.unwrap();
        assert!(matches!(
            frame,
            Err(HttpError::HttpRequestBodySize(Some(10)))
        ));
        assert!(capped.frame().await.is_none());
        let body =
            http_body_util::Full::new(Bytes::from(vec![0u8; 10])).map_err(|never| match never {});
        let mut fits = Capped::new(body, 10, || HttpError::HttpRequestBodySize(Some(10)));
        assert_eq!(
            fits.frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len(),
            10
        );
    }

    #[tokio::test]
    async fn a_request_body_dropped_early_goes_on_taking_writes() {
        use wasmtime_wasi::p2::{Pollable, StreamError};
        use wasmtime_wasi_http::p2::body::{HostOutgoingBody, StreamContext};
        let chunk = Bytes::from_static(b"0123456789abcdef");

        // Plain, the plugin's stream closes once the request is dropped:
        // what a refused request used to look like to a plugin.
        let (mut body, wire) = HostOutgoingBody::new(StreamContext::Request, None, 1, 16);
        let mut stream = body.take_output_stream().unwrap();
        drop(wire);
        assert!(matches!(stream.check_write(), Err(StreamError::Closed)));

        // Wrapped, it takes every write (far more than its buffer) and
        // throws them away.
        let (mut body, wire) = HostOutgoingBody::new(StreamContext::Request, None, 1, 16);
        let mut stream = body.take_output_stream().unwrap();
        drop(DiscardRest::new(wire));
        for _ in 0..64 {
            tokio::time::timeout(Duration::from_secs(5), stream.ready())
                .await
                .expect("the stream makes room");
            assert!(stream.check_write().unwrap() > 0);
            stream.write(chunk.clone()).unwrap();
        }
        body.finish(None).unwrap();

        // Read to its end, it is not read again.
        let (mut body, wire) = HostOutgoingBody::new(StreamContext::Request, None, 1, 16);
        let mut stream = body.take_output_stream().unwrap();
        let mut wire = DiscardRest::new(wire);
        stream.write(chunk.clone()).unwrap();
        drop(stream);
        body.finish(None).unwrap();
        assert_eq!(
            wire.frame().await.unwrap().unwrap().into_data().unwrap(),
            chunk
        );
        assert!(wire.frame().await.is_none());
        assert!(wire.ended);
    }

    /// A request through the call's checks and sending, as `wasi:http`
    /// would make it; the status, or the error.
    async fn fetch(net: NetShared, grants: Grants, url: &str) -> Result<u16, HttpError> {
        let shared = Arc::new(net);
        let tls = shared.default_tls();
        let call = Arc::new(CallNet {
            plugin: "kube".parse().unwrap(),
            grants,
            limits: Limits::default(),
            incidents: Incidents::default(),
            shared,
            tls,
            requests: AtomicU64::new(0),
            in_flight: Arc::new(AtomicU64::new(0)),
        });
        let request = http::Request::get(url)
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap();
        let (request, dest) = call.admit(request)?;
        let (response, _io) = call.clone().send(request, dest, None).await?;
        Ok(response.status().as_u16())
    }

    #[tokio::test]
    async fn https_connects_to_the_checked_address_and_verifies_the_name() {
        use rollcage_kube_standin::pki::TestCa;
        let ca = TestCa::new("cluster CA");
        let cert = ca.issue(&["kube.test"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        rollcage_kube_standin::tls::spawn_https(listener, cert.server_config(), |_req| async {
            http::Response::new(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
        });
        let grants = Grants {
            allow_hosts: vec![format!("kube.test:{port}").parse().unwrap()],
            allow_private: vec!["127.0.0.1".parse().unwrap()],
            ..Grants::default()
        };
        let url = format!("https://kube.test:{port}/version");
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let with_ca = |net: NetShared| {
            let tls = net.tls_with_ca(ca.cert_pem.as_bytes()).unwrap();
            NetShared { tls, ..net }
        };

        // `kube.test` resolves only through the check (no system resolver
        // knows it): the TLS connection goes to that very address, and the
        // certificate is verified for the name asked for.
        let net = with_ca(
            NetShared::new()
                .unwrap()
                .with_fixed_name("kube.test", loopback),
        );
        assert_eq!(fetch(net, grants.clone(), &url).await.unwrap(), 200);

        // Without the private CA the same server is not trusted.
        let net = NetShared::new()
            .unwrap()
            .with_fixed_name("kube.test", loopback);
        let err = fetch(net, grants.clone(), &url).await.unwrap_err();
        assert!(matches!(err, HttpError::Tls(_)), "{err:?}");

        // A name whose address the check refuses is never connected to,
        // whatever a later lookup might say.
        let net = with_ca(
            NetShared::new()
                .unwrap()
                .with_fixed_name("kube.test", loopback),
        );
        let no_private = Grants {
            allow_private: vec![],
            ..grants.clone()
        };
        let err = fetch(net, no_private, &url).await.unwrap_err();
        assert!(matches!(err, HttpError::DestinationIpProhibited), "{err:?}");
    }
}
