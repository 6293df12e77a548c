//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host lets a plugin reach only the hosts it was granted
//! (`allow_hosts`). A request that cannot be made comes back as
//! an error naming the host and saying why in words, a denial
//! ([`Error::Denied`]: ``request to `example.com` denied: the host is not in
//! this plugin's allow_hosts``) apart from a network failure
//! ([`Error::Http`]: ``request to `127.0.0.1:9` failed: connection refused:
//! nothing listens at that address and port``). Bodies
//! are bytes; [`Request::json`] and [`Response::json`] do
//! the common JSON case.
//!
//! ```ignore
//! let resp = rollcage_sdk::http::Request::post("https://hooks.example.com/x")
//!     .header("authorization", &format!("Bearer {token}"))
//!     .json(&serde_json::json!({ "text": "deployed" }))?
//!     .send()?;
//! if !resp.is_success() { return Err(format!("status {}", resp.status)); }
//! ```

use std::time::Duration;

use crate::Error;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// An HTTP request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// A received HTTP response with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Http(format!("response body is not the expected JSON: {e}")))
    }
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// A GET request.
    pub fn get(url: &str) -> Self {
        Request::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: &str) -> Self {
        Request::new("POST", url)
    }

    /// A PUT request.
    pub fn put(url: &str) -> Self {
        Request::new("PUT", url)
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Set a JSON body and its content type.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::Http(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Time allowed to connect and to receive the first byte (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send the request and read the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let url = Url::parse(&self.url)?;
        let mut headers = self.headers.clone();
        // A known length, not chunked encoding: simpler for every server.
        // A POST, PUT or DELETE without a body says so (`content-length:
        // 0`) rather than sending an empty chunked body.
        let carries_body = !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS");
        if (!self.body.is_empty() || carries_body)
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            headers.push(("content-length".into(), self.body.len().to_string()));
        }
        let fields = Fields::new();
        for (name, value) in &headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| Error::Http(format!("header `{name}`: {e:?}")))?;
        }
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let bad = |what: &str| Error::Http(format!("invalid {what} in `{}`", self.url));
        request.set_method(&method).map_err(|_| bad("method"))?;
        let scheme = if url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|_| bad("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|_| bad("host"))?;
        request
            .set_path_with_query(Some(&url.path))
            .map_err(|_| bad("path"))?;

        let options = RequestOptions::new();
        let nanos = self.timeout.as_nanos() as u64;
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));

        let body = request
            .body()
            .map_err(|_| Error::Http("request body already taken".into()))?;
        // A denied request fails here, before any body is written.
        let pending = outgoing_handler::handle(request, Some(options))
            .map_err(|e| http_error(&url.authority, e))?;
        // A request that fails while its body is written (the connection
        // refused) says why in its response: read that rather than report
        // the stream.
        let written = write_body(body, &self.body);
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(http_error(&url.authority, code)),
            Some(Err(())) | None => return Err(Error::Http("response lost".into())),
        };
        written.map_err(|e| {
            Error::Http(format!(
                "request to `{}` failed: writing the request body: {e}",
                url.authority
            ))
        })?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|_| Error::Http("response body already taken".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|_| Error::Http("response body stream unavailable".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(Error::Http(format!(
                            "reading response body: {}",
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        let _ = IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Write the whole body and finish it; what went wrong, in words.
fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let stream = body
            .write()
            .map_err(|_| "the body stream is unavailable".to_string())?;
        // wasi:io allows at most 4096 bytes per blocking write.
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| match e {
                    StreamError::Closed => "the host closed the body stream".to_string(),
                    StreamError::LastOperationFailed(e) => e.to_debug_string(),
                })?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|code| describe(&code))
}

fn http_error(authority: &str, code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Denied(format!(
            "request to `{authority}` denied: the host is not in this plugin's allow_hosts"
        )),
        ErrorCode::DestinationIpProhibited => Error::Denied(format!(
            "request to `{authority}` denied: its address is in a denied network"
        )),
        // The host's own words: a limit reached, credentials refused.
        ErrorCode::InternalError(Some(message)) => {
            Error::Http(format!("request to `{authority}` failed: {message}"))
        }
        ErrorCode::HttpRequestBodySize(Some(limit)) => Error::Http(format!(
            "request to `{authority}` failed: the request body is over this plugin's limit of {limit} bytes"
        )),
        ErrorCode::HttpResponseBodySize(Some(limit)) => Error::Http(format!(
            "request to `{authority}` failed: the response body is over this plugin's limit of {limit} bytes"
        )),
        other => Error::Http(format!(
            "request to `{authority}` failed: {}",
            describe(&other)
        )),
    }
}

/// A `wasi:http` error code in words: what an author reads in a log.
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => {
            "connection refused: nothing listens at that address and port".into()
        }
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
        ErrorCode::ConnectionTerminated => "the connection was closed before the response".into(),
        ErrorCode::ConnectionReadTimeout => "no response in time (timed out reading)".into(),
        ErrorCode::ConnectionWriteTimeout => "timed out writing the request".into(),
        ErrorCode::ConnectionLimitReached => "too many connections".into(),
        ErrorCode::DnsTimeout => "the name lookup timed out".into(),
        ErrorCode::DnsError(e) => match &e.rcode {
            Some(why) => format!("the name could not be resolved: {why}"),
            None => "the name could not be resolved".into(),
        },
        ErrorCode::DestinationNotFound => "the name has no address".into(),
        ErrorCode::DestinationUnavailable => "the destination is unavailable".into(),
        ErrorCode::DestinationIpUnroutable => "no route to the address".into(),
        ErrorCode::TlsProtocolError => "TLS failed (protocol error)".into(),
        ErrorCode::TlsCertificateError => "TLS failed: the certificate is not trusted".into(),
        ErrorCode::TlsAlertReceived(alert) => match &alert.alert_message {
            Some(m) => format!("TLS failed: the server sent an alert: {m}"),
            None => "TLS failed: the server sent an alert".into(),
        },
        ErrorCode::HttpProtocolError => "the answer is not valid HTTP".into(),
        ErrorCode::HttpResponseTimeout => "no response in time".into(),
        ErrorCode::HttpRequestDenied => {
            "denied: the host is not in this plugin's allow_hosts".into()
        }
        ErrorCode::DestinationIpProhibited => "denied: its address is in a denied network".into(),
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}

/// The parts of a URL that `wasi:http` needs.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    https: bool,
    authority: String,
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, Error> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(Error::Http(format!(
                "`{url}` is not an http:// or https:// URL"
            )));
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(Error::Http(format!("`{url}` has no host")));
        }
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Url {
            https,
            authority: authority.to_string(),
            path,
        })
    }
}

/// Percent-encode a URL path segment or query value (RFC 3986 unreserved
/// characters kept).
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A short reason from an error answer's body: `message (code)` of a
/// `{"error": {"code", "message"}}` body, the string of `{"error": "..."}`,
/// or else the start of the body as text.
pub fn error_reason(body: &[u8]) -> String {
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    match error {
        Some(serde_json::Value::Object(e)) => {
            let message = e
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no message");
            match e.get("code").and_then(serde_json::Value::as_str) {
                Some(code) => format!("{message} ({code})"),
                None => message.to_string(),
            }
        }
        Some(serde_json::Value::String(message)) => message,
        _ => {
            let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
            match text.trim() {
                "" => "no error message".into(),
                t => t.to_string(),
            }
        }
    }
}

/// `text` with every occurrence of `secret` masked as `<redacted>`: for
/// messages that may quote a request or an answer carrying it.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reasons_read_the_usual_shapes() {
        assert_eq!(
            error_reason(br#"{"error":{"code":"bad_request","message":"weights: sum to 90"}}"#),
            "weights: sum to 90 (bad_request)"
        );
        assert_eq!(error_reason(br#"{"error":"nope"}"#), "nope");
        assert_eq!(error_reason(b"bad gateway\n"), "bad gateway");
        assert_eq!(error_reason(b""), "no error message");
    }

    #[test]
    fn a_denial_and_a_connection_error_read_apart() {
        let denied = http_error("example.com", ErrorCode::HttpRequestDenied);
        assert!(matches!(denied, Error::Denied(_)), "{denied:?}");
        let denied = denied.to_string();
        assert!(
            denied.contains("`example.com` denied: the host is not in this plugin's allow_hosts"),
            "{denied}"
        );
        let refused = http_error("127.0.0.1:9", ErrorCode::ConnectionRefused);
        assert!(matches!(refused, Error::Http(_)), "{refused:?}");
        let refused = refused.to_string();
        assert!(
            refused.contains("`127.0.0.1:9` failed: connection refused"),
            "{refused}"
        );
        assert!(!refused.contains("denied"), "{refused}");
        let timeout = http_error("h", ErrorCode::ConnectionTimeout).to_string();
        assert!(timeout.ends_with("connection timed out"), "{timeout}");
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode("staging-api_1.0~x"), "staging-api_1.0~x");
        assert_eq!(encode("a b/c?"), "a%20b%2Fc%3F");
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(redact("Bearer s3cret", "s3cret"), "Bearer <redacted>");
        assert_eq!(redact("nothing", ""), "nothing");
    }

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            Url::parse("https://hooks.slack.com/services/T/B?x=1").unwrap(),
            Url {
                https: true,
                authority: "hooks.slack.com".into(),
                path: "/services/T/B?x=1".into()
            }
        );
        assert_eq!(
            Url::parse("http://127.0.0.1:9090").unwrap(),
            Url {
                https: false,
                authority: "127.0.0.1:9090".into(),
                path: "/".into()
            }
        );
        assert_eq!(Url::parse("http://h?q").unwrap().path, "/?q");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http:///path").is_err());
    }
}
