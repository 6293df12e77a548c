//! `GET /v1/runs/{id}/events`: a run's log as Server-Sent Events, live.
//! Each event's id is its sequence number in the log; a client that
//! reconnects with `Last-Event-ID` (or `?after=N`) gets everything after
//! it, so nothing is missed. The stream ends with an `end` event once the
//! run is finished and every entry has been sent. A client that does not
//! accept `text/event-stream` gets the log so far as a JSON array instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use rollcage_store::Store;
use serde_json::json;

use super::Params;
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, clip};
use crate::path::ApiPath;
use crate::views::{ErrorBody, EventView};

/// The run's log, then live entries as they are written.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Run id"),
        ("after" = Option<u64>, Query, minimum = 0, maximum = 9007199254740991_f64, description = "Send entries after this sequence number (as `Last-Event-ID`)"),
        ("Last-Event-ID" = Option<u64>, Header, minimum = 0, maximum = 9007199254740991_f64, description = "The id of the last event received")),
    responses(
        (status = 200, description = "With `Accept: text/event-stream`: one event per log entry (event = its kind, id = its sequence number, data = EventView as JSON), live, then `end` with the run's status. Otherwise the log so far as a JSON array.",
            content((Vec<EventView> = "application/json"), (EventView = "text/event-stream"))),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn run_events(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::new(q.as_deref(), &["after"])?;
    let bad = |what: &str, v: &str| {
        ApiError::unprocessable(
            "invalid_query",
            format!("{what} = `{}`: expected a sequence number", clip(v)),
        )
    };
    let after = match (
        headers.get("last-event-id").and_then(|v| v.to_str().ok()),
        p.get("after"),
    ) {
        (Some(h), _) => h
            .trim()
            .parse::<u64>()
            .map_err(|_| bad("Last-Event-ID", h))?,
        (None, Some(a)) => a.parse::<u64>().map_err(|_| bad("after", &a))?,
        (None, None) => 0,
    };
    let store = state.engine.store().clone();
    // 404 now, not an empty stream.
    store.run(&id).await?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        let log = store.events(&id, after).await?;
        return Ok(Json(log.iter().map(EventView::from).collect::<Vec<_>>()).into_response());
    }
    // Each stream holds a connection and wakes on every append: a token
    // has a few at once.
    let Some(slot) = state.streams.take(who.name.clone()) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "token `{}` has {} live event streams open already ([server.api] streams_per_token)",
                who.name,
                state.streams.limit()
            ),
        )
        .with_retry_after(5));
    };
    let follow = Follow {
        _slot: slot,
        woken: store.appended(),
        store,
        id,
        after,
        poll: state.options.event_poll,
        stopping: state.stopping.subscribe(),
        pending: Vec::new(),
        done: false,
    };
    Ok(Sse::new(stream(follow))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn stream(follow: Follow) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(
        follow,
        |mut f| async move { f.next().await.map(|e| (Ok(e), f)) },
    )
}

struct Follow {
    /// Given back when the stream ends or its client goes.
    _slot: crate::slots::Slot<String>,
    store: Arc<dyn Store>,
    woken: tokio::sync::broadcast::Receiver<String>,
    id: String,
    after: u64,
    poll: Duration,
    stopping: tokio::sync::watch::Receiver<bool>,
    pending: Vec<SseEvent>,
    done: bool,
}

impl Follow {
    /// The next SSE event, or `None` when the stream is over.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop() {
                return Some(e);
            }
            if self.done || *self.stopping.borrow() {
                return None;
            }
            // The status first: the engine writes a finished status after
            // the run's last entry, so if it is finished now, the entries
            // read next are all there will be.
            let run = match self.store.run(&self.id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(run_id = %self.id, "event stream: {e}");
                    return None;
                }
            };
            let events = match self.store.events(&self.id, self.after).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(run_id = %self.id, "event stream: {e}");
                    return None;
                }
            };
            if let Some(last) = events.last() {
                self.after = last.seq;
            }
            if run.status.is_finished() {
                self.done = true;
                self.pending.push(SseEvent::default().event("end").data(
                    json!({"status": run.status.as_str(), "reason": run.reason}).to_string(),
                ));
            }
            // `pending` is popped from the back.
            for e in events.iter().rev() {
                let view = EventView::from(e);
                self.pending.push(
                    SseEvent::default()
                        .id(e.seq.to_string())
                        .event(e.kind.clone())
                        .data(serde_json::to_string(&view).unwrap_or_default()),
                );
            }
            if !self.pending.is_empty() {
                continue;
            }
            self.wait().await;
        }
    }

    /// Until an entry of this run may have been written: one of this
    /// process's appends, the poll interval (another process's), or stop.
    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(self.poll);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                got = self.woken.recv() => match got {
                    Ok(id) if id == self.id => return,
                    Ok(_) => continue,
                    // Fell behind or closed: look at the store.
                    Err(_) => return,
                },
                _ = &mut deadline => return,
                _ = self.stopping.changed() => return,
            }
        }
    }
}
