//! The HTTP client of a Rollcage server, for `run` and `runs` with
//! `--server`: JSON calls, and the live event stream followed with
//! `Last-Event-ID` across reconnections, so no entry is missed or shown
//! twice.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rollcage_store::Event;
use serde_json::Value;

/// How long one JSON call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the event stream keeps trying to reconnect to a server that
/// went away (a restart resumes the run; the stream picks it up again).
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// The request was wrong (4xx), rather than the server or the network.
    pub fn is_client_error(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if (400..500).contains(status))
    }
}

/// A server and the token to call it with.
pub struct Client {
    base: String,
    token: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// `server` is `http://host:port`; TLS is for a proxy in front.
    pub fn new(server: &str, token: Option<&str>) -> Result<Client, String> {
        let base = server.trim_end_matches('/');
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| format!("--server `{server}`: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "--server `{server}`: expected http://HOST:PORT (put TLS in a proxy in front of the server)"
            ));
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or("--server needs a token: --token or ROLLCAGE_TOKEN")?;
        Ok(Client {
            base: base.to_string(),
            token: token.to_string(),
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        })
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        req.body(Full::new(body)).expect("a valid request")
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(self.request("GET", path, None)).await
    }

    /// `POST path` with `body`, as JSON.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.call(self.request("POST", path, body)).await
    }

    async fn call(&self, req: Request<Full<Bytes>>) -> Result<Value, ClientError> {
        let work = async {
            let r = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Transport(format!("{}: {e}", self.base)))?;
            let status = r.status().as_u16();
            let body = r
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                Ok(value)
            } else {
                Err(api_error(status, &value))
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| ClientError::Transport(format!("{}: no answer in 30 s", self.base)))?
    }

    /// Follow run `id`'s events after `after`, calling `on_event` for
    /// each, until the run ends; the `end` event's data (status, reason).
    /// A dropped connection is resumed from the last event received.
    pub async fn follow(
        &self,
        id: &str,
        mut after: u64,
        mut on_event: impl FnMut(Event),
    ) -> Result<Value, ClientError> {
        let mut lost_since: Option<tokio::time::Instant> = None;
        loop {
            let mut req = self.request("GET", &format!("/v1/runs/{id}/events"), None);
            req.headers_mut()
                .insert("accept", "text/event-stream".parse().expect("a header"));
            req.headers_mut().insert(
                "last-event-id",
                after.to_string().parse().expect("a header"),
            );
            let outcome = self.stream(req, &mut after, &mut on_event).await;
            match outcome {
                Ok(Some(end)) => return Ok(end),
                Err(e @ ClientError::Api { .. }) => return Err(e),
                // Ended early or failed: the server stopped; try again.
                Ok(None) | Err(ClientError::Transport(_)) => {
                    let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > RECONNECT_FOR {
                        return Err(ClientError::Transport(format!(
                            "lost {} for {} s; the run goes on there",
                            self.base,
                            RECONNECT_FOR.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// One connection of the event stream: `Some(end data)` if it got to
    /// the end, `None` if it was cut before.
    async fn stream(
        &self,
        req: Request<Full<Bytes>>,
        after: &mut u64,
        on_event: &mut impl FnMut(Event),
    ) -> Result<Option<Value>, ClientError> {
        let r = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Transport(format!("{}: {e}", self.base)))?;
        let status = r.status().as_u16();
        let mut body = r.into_body();
        if status != 200 {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(api_error(status, &value));
        }
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Ok(None);
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.push_str(&String::from_utf8_lossy(data));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut kind, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if kind.is_empty() {
                    continue; // a keep-alive comment
                }
                let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if kind == "end" {
                    return Ok(Some(value));
                }
                if let Ok(e) = serde_json::from_value::<Event>(value)
                    && e.seq > *after
                {
                    *after = e.seq;
                    on_event(e);
                }
            }
        }
        Ok(None)
    }
}

fn api_error(status: u16, body: &Value) -> ClientError {
    let e = &body["error"];
    ClientError::Api {
        status,
        code: e["code"].as_str().unwrap_or("error").to_string(),
        message: e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the server answered {status}")),
    }
}
