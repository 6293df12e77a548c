//! One HTTP/1.1 request at a time over TCP, or TLS (rustls, the public web
//! roots plus an optional private CA), with a time limit and a size limit.
//! Plain HTTP is refused unless the caller allowed it (the configuration
//! allows it only for a loopback registry).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {detail}")]
pub struct TransportError {
    pub url: String,
    pub detail: String,
}

/// How requests are sent.
#[derive(Clone)]
pub struct Transport {
    tls: Arc<rustls::ClientConfig>,
    plain_http: bool,
    timeout: Duration,
    max_body: usize,
}

/// The largest response read: components of hundreds of MB are not plugins.
const MAX_BODY: usize = 256 << 20;

impl Transport {
    /// HTTPS only, trusting the public roots and `ca_pem` if given.
    pub fn new(ca_pem: Option<&[u8]>) -> Result<Transport, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        if let Some(pem) = ca_pem {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("CA certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate: {e}"))?;
                any = true;
            }
            if !any {
                return Err("the CA file holds no PEM certificate".into());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Transport {
            tls: Arc::new(tls),
            plain_http: false,
            timeout: Duration::from_secs(60),
            max_body: MAX_BODY,
        })
    }

    /// Allow `http://`, to loopback hosts only.
    pub fn with_plain_http(mut self, allowed: bool) -> Transport {
        self.plain_http = allowed;
        self
    }

    /// The time one request may take, connection included.
    pub fn with_timeout(mut self, timeout: Duration) -> Transport {
        self.timeout = timeout;
        self
    }

    /// Whether `http://` is allowed.
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// Send `request` and read the whole answer.
    pub async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, TransportError> {
        let url = request.uri().to_string();
        let fail = |detail: String| TransportError {
            url: url.clone(),
            detail,
        };
        match tokio::time::timeout(self.timeout, self.send_inner(request)).await {
            Ok(result) => result.map_err(fail),
            Err(_) => Err(fail(format!(
                "no answer within {}s",
                self.timeout.as_secs()
            ))),
        }
    }

    async fn send_inner(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, String> {
        let uri = request.uri().clone();
        let host = uri.host().ok_or("no host")?.to_string();
        // Plain HTTP only to this machine, whatever URL a registry answers
        // with (a redirect to another host goes over HTTPS or not at all).
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.plain_http && rollcage_core::source::is_loopback_host(&host) => {
                false
            }
            Some("http") => {
                return Err(
                    "plain HTTP is not allowed (only to a loopback registry with `insecure = true`)"
                        .into(),
                );
            }
            _ => return Err("not an http(s) URL".into()),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let (mut parts, body) = request.into_parts();
        // HTTP/1.1 wants the authority in Host, and the path alone in the
        // request line.
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or(host.clone());
        parts.headers.insert(
            http::header::HOST,
            authority.parse().map_err(|_| "bad host")?,
        );
        parts.headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("rollcage/", env!("CARGO_PKG_VERSION"))),
        );
        parts.uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| "bad path")?;
        let request = http::Request::from_parts(parts, Full::new(body));
        let response = if https {
            let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|e| format!("bad server name `{bare_host}`: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}: {}", chain(&e)))?;
            exchange(TokioIo::new(tls), request).await?
        } else {
            exchange(TokioIo::new(tcp), request).await?
        };
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_body)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}

async fn exchange<T>(
    io: T,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))
}

/// An error and its causes, joined.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_goes_to_this_machine_only() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let transport = Transport::new(None).unwrap().with_plain_http(true);
        let get = |url: &str| {
            let request = http::Request::get(url).body(Bytes::new()).unwrap();
            rt.block_on(transport.send(request)).unwrap_err().detail
        };
        // Refused before any connection: a registry on loopback that
        // redirects elsewhere does not take plain HTTP with it.
        assert!(
            get("http://storage.example.com/blob").starts_with("plain HTTP is not allowed"),
            "{}",
            get("http://storage.example.com/blob")
        );
        assert!(get("http://10.0.0.1:5000/v2/").starts_with("plain HTTP is not allowed"));
        // Loopback is allowed: nothing listens on port 9, so it is the
        // connection that fails.
        assert!(get("http://127.0.0.1:9/v2/").starts_with("cannot connect"));
        assert!(get("http://[::1]:9/v2/").starts_with("cannot connect"));
    }
}
