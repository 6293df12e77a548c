//! A small HTTP/1.1 load generator and Server-Sent Events client over hyper,
//! so that latency is measured the same way for the API, the router, a
//! direct connection and HAProxy, in one run, without another tool.
//!
//! * [`closed_loop`]: each connection sends its next request as soon as the
//!   previous one is answered: the most the server answers per second.
//! * [`open_loop`]: requests are sent on a fixed schedule (a rate), spread
//!   over keep-alive connections, as wrk2 does. A request whose connection
//!   was still busy at its scheduled time is timed from that time, not from
//!   when it could finally be sent, so a slow server cannot hide its queue
//!   (coordinated omission). A request sent late only because the
//!   generator's timer (1 ms granularity) woke late is timed from its send.
//! * [`follow_sse`]: reads an SSE stream and stamps each event's arrival.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request to send; the argument is the request's sequence number (for
/// spreading requests over pipelines, say).
pub type MakeRequest = Arc<dyn Fn(u64) -> http::Request<Full<Bytes>> + Send + Sync>;

/// What one load phase measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Seconds from (corrected) start to the end of the answer's body.
    pub latencies: Vec<f64>,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Other answers, and requests that got no answer.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// From the first send to the last answer.
    pub elapsed: f64,
    /// Open loop: requests never sent because the server had fallen so far
    /// behind that the phase hit its deadline. Each is in `latencies` with
    /// the time it had waited by then, so percentiles become lower bounds.
    pub unsent: u64,
}

impl LoadResult {
    /// Successful (2xx) answers per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.max(1e-9)
    }

    /// Add another phase's results to these (elapsed times add up).
    pub fn absorb(&mut self, other: LoadResult) {
        self.elapsed += other.elapsed;
        self.merge(other);
    }

    fn merge(&mut self, other: LoadResult) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.errors += other.errors;
        self.unsent += other.unsent;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// An HTTP/1.1 connection with `TCP_NODELAY`, as load generators use.
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Build a request with a `Host` header (HTTP/1.1 needs one).
pub fn build(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    req.body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("a request built from valid parts")
}

/// One request on a new connection: status and body. For setup calls.
pub async fn request(
    addr: SocketAddr,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    let mut sender = connect(addr).await?;
    send(&mut sender, req).await
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Record one answer (or failure) into `result`; reconnect after a failure.
async fn exchange(
    addr: SocketAddr,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    req: http::Request<Full<Bytes>>,
    result: &mut LoadResult,
) -> bool {
    if sender.is_none() {
        match connect(addr).await {
            Ok(s) => *sender = Some(s),
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert(e);
                return false;
            }
        }
    }
    let conn = sender.as_mut().expect("connected above");
    match send(conn, req).await {
        Ok((status, _)) if (200..300).contains(&status) => {
            result.ok += 1;
            true
        }
        Ok((status, body)) => {
            result.errors += 1;
            result.first_error.get_or_insert_with(|| {
                format!("HTTP {status}: {}", String::from_utf8_lossy(&body))
            });
            true
        }
        Err(e) => {
            result.errors += 1;
            result.first_error.get_or_insert(e);
            *sender = None;
            false
        }
    }
}

/// `connections` connections sending back to back for `duration`.
pub async fn closed_loop(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    make: MakeRequest,
) -> LoadResult {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..connections {
        let make = make.clone();
        tasks.spawn(async move {
            let mut result = LoadResult::default();
            let mut sender = None;
            let mut n = k as u64;
            while Instant::now() < end {
                let sent = Instant::now();
                let answered = exchange(addr, &mut sender, make(n), &mut result).await;
                if answered {
                    result.latencies.push(sent.elapsed().as_secs_f64());
                } else {
                    // A refused connection must not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                n += connections as u64;
            }
            result
        });
    }
    collect(tasks, start).await
}

/// `rate` requests per second for `duration`, spread over `connections`.
/// A server that falls behind gets `duration` more (at most 5 s) to catch
/// up; what is not sent by then is counted in `unsent`.
pub async fn open_loop(
    addr: SocketAddr,
    rate: f64,
    connections: usize,
    duration: Duration,
    make: MakeRequest,
) -> LoadResult {
    // Connect first, so connection setup is not in the first latencies.
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(connect(addr).await.ok());
    }
    let start = Instant::now();
    let deadline = start + duration + duration.min(Duration::from_secs(5));
    let total = (rate * duration.as_secs_f64()) as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut sender) in senders.into_iter().enumerate() {
        let make = make.clone();
        tasks.spawn(async move {
            let mut result = LoadResult::default();
            let mut busy_until = start;
            let mut j = k as u64;
            while j < total {
                let scheduled = start + Duration::from_secs_f64(j as f64 / rate);
                if Instant::now() >= deadline {
                    result.unsent += 1;
                    result
                        .latencies
                        .push(deadline.saturating_duration_since(scheduled).as_secs_f64());
                    j += connections as u64;
                    continue;
                }
                if Instant::now() < scheduled {
                    tokio::time::sleep_until(scheduled.into()).await;
                }
                let sent = Instant::now();
                // Busy past the schedule: the server's delay, counted.
                // Free but woken late: the generator's delay, not counted.
                let from = if busy_until > scheduled {
                    scheduled
                } else {
                    sent
                };
                // An answer that never comes must not hold the phase forever.
                let answered = tokio::time::timeout(
                    deadline.saturating_duration_since(sent) + Duration::from_secs(5),
                    exchange(addr, &mut sender, make(j), &mut result),
                )
                .await;
                busy_until = Instant::now();
                match answered {
                    Ok(true) => result.latencies.push((busy_until - from).as_secs_f64()),
                    Ok(false) => {}
                    Err(_) => {
                        result.errors += 1;
                        result
                            .first_error
                            .get_or_insert("no answer by the deadline".into());
                        result.latencies.push((busy_until - from).as_secs_f64());
                        sender = None;
                    }
                }
                j += connections as u64;
            }
            result
        });
    }
    collect(tasks, start).await
}

async fn collect(mut tasks: tokio::task::JoinSet<LoadResult>, start: Instant) -> LoadResult {
    let mut all = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(r) = joined {
            all.merge(r);
        }
    }
    all.elapsed = start.elapsed().as_secs_f64();
    all
}

/// One Server-Sent Event: its `id` and `event` fields (data is not needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
}

/// Splits an SSE byte stream into events, whatever the chunking.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    has_fields: bool,
}

impl SseParser {
    /// Feed bytes; the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_fields {
                    out.push(SseEvent {
                        id: self.id.take(),
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                    });
                }
                self.has_fields = false;
                continue;
            }
            if line.starts_with(':') {
                // A comment: the keep-alive.
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => self.id = Some(value),
                "event" => self.event = Some(value),
                _ => {}
            }
            self.has_fields = true;
        }
        out
    }
}

/// Follow an SSE stream at `path`: `ready` fires once the answer's headers
/// arrived (the server is subscribed from then on); each event comes back
/// with the `CLOCK_MONOTONIC` nanoseconds of its arrival. Ends at the
/// `end` event or when the stream closes.
pub async fn follow_sse(
    addr: SocketAddr,
    path: String,
    token: String,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
) -> Result<Vec<(SseEvent, u64)>, String> {
    // Whoever waits for the stream to open is told why it did not.
    let opened = async {
        let mut sender = connect(addr).await?;
        let auth = format!("Bearer {token}");
        let req = build(
            "GET",
            &path,
            &[("authorization", &auth), ("accept", "text/event-stream")],
            None,
        );
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{path}: HTTP {}", response.status()));
        }
        Ok(response)
    };
    let response = match opened.await {
        Ok(response) => {
            let _ = ready.send(Ok(()));
            response
        }
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let mut body = response.into_body();
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let at = crate::machine::mono_ns();
        for e in parser.push(&data) {
            let end = e.event == "end";
            events.push((e, at));
            if end {
                return Ok(events);
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_survive_any_chunking_and_skip_comments() {
        let stream = b": keep-alive\n\nid: 1\nevent: intent\ndata: {\"a\":1}\n\nid: 2\r\nevent: step\r\ndata: x\r\n\r\nevent: end\ndata: {}\n\n";
        let whole = SseParser::default().push(stream);
        let mut parser = SseParser::default();
        let mut bytewise = Vec::new();
        for b in stream {
            bytewise.extend(parser.push(&[*b]));
        }
        let expected = vec![
            SseEvent {
                id: Some("1".into()),
                event: "intent".into(),
            },
            SseEvent {
                id: Some("2".into()),
                event: "step".into(),
            },
            SseEvent {
                id: None,
                event: "end".into(),
            },
        ];
        assert_eq!(whole, expected);
        assert_eq!(bytewise, expected);
    }
}
