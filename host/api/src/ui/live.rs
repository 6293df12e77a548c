//! Live pages: a Server-Sent Events stream per page that says `change`
//! whenever what the page shows may have changed; htmx's SSE extension
//! then fetches the page's moving part again. The stream carries no data
//! of its own (the fragment fetch is an ordinary signed-in GET), so what a
//! page shows always comes from one place. A run's stream says `end` once
//! the run is finished, and every stream ends with its session or when
//! the host stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use rollcage_store::{RunFilter, Store};

use super::{Signed, api_error_page};
use crate::AppState;
use crate::path::ApiPath;

/// How often a stream looks for changes made by another process (this
/// process's appends wake it at once).
const POLL: Duration = Duration::from_millis(500);

/// What a page shows, reduced to what tells whether it changed.
enum Watch {
    Run(String),
    Runs,
}

struct Follow {
    state: Arc<AppState>,
    headers: HeaderMap,
    watch: Watch,
    woken: tokio::sync::broadcast::Receiver<String>,
    stopping: tokio::sync::watch::Receiver<bool>,
    seen: Option<String>,
    ended: bool,
}

impl Follow {
    async fn fingerprint(&self, store: &dyn Store) -> Option<(String, bool)> {
        match &self.watch {
            Watch::Run(id) => {
                let run = store.run(id).await.ok()?;
                let last = store
                    .events(id, 0)
                    .await
                    .ok()?
                    .last()
                    .map(|e| e.seq)
                    .unwrap_or(0);
                Some((
                    format!("{last}:{}", run.status.as_str()),
                    run.status.is_finished(),
                ))
            }
            Watch::Runs => {
                let runs = store
                    .list_runs(&RunFilter {
                        limit: 50,
                        ..RunFilter::default()
                    })
                    .await
                    .ok()?;
                let print: Vec<String> = runs
                    .iter()
                    .map(|r| format!("{}:{}:{}", r.id, r.status.as_str(), r.updated_ms))
                    .collect();
                Some((print.join(","), false))
            }
        }
    }

    /// The next event, or `None` when the stream is over.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.ended || *self.stopping.borrow() {
                return None;
            }
            // A session that ended ends its streams: the page's next fetch
            // is sent to sign in. (An open stream is not a use: a page left
            // open still goes idle.)
            if !self.state.ui.sessions.is_live(&self.headers) {
                self.ended = true;
                return Some(SseEvent::default().event("change").data("signed-out"));
            }
            let store = self.state.engine.store().clone();
            let (print, finished) = self.fingerprint(store.as_ref()).await?;
            let changed = self.seen.as_deref() != Some(print.as_str());
            let first = self.seen.is_none();
            self.seen = Some(print);
            if finished {
                self.ended = true;
                // One last fetch of the finished page, then `end`.
                return Some(SseEvent::default().event("change").data("finished"));
            }
            if changed && !first {
                return Some(SseEvent::default().event("change").data("moved"));
            }
            self.wait().await;
        }
    }

    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(POLL);
        tokio::pin!(deadline);
        tokio::select! {
            _ = self.woken.recv() => {}
            _ = &mut deadline => {}
            _ = self.stopping.changed() => {}
        }
    }
}

fn stream(follow: Follow) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold((follow, false), |(mut f, done)| async move {
        if done {
            return None;
        }
        match f.next().await {
            Some(e) => Some((Ok(e), (f, false))),
            // A finished run's stream says `end` (the page closes it
            // rather than reconnect).
            None if matches!(f.watch, Watch::Run(_)) && f.ended => {
                Some((Ok(SseEvent::default().event("end").data("end")), (f, true)))
            }
            None => None,
        }
    })
}

fn follow(state: Arc<AppState>, headers: HeaderMap, watch: Watch) -> Follow {
    Follow {
        woken: state.engine.store().appended(),
        stopping: state.stopping.subscribe(),
        state,
        headers,
        watch,
        seen: None,
        ended: false,
    }
}

/// `GET /ui/runs/{id}/live`.
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    signed: Signed,
    ApiPath(id): ApiPath<String>,
) -> Response {
    if let Err(e) = state.engine.store().run(&id).await {
        return api_error_page(&signed, "Run", &e.into());
    }
    Sse::new(stream(follow(state, headers, Watch::Run(id))))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /ui/runs/live`.
pub(crate) async fn runs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    _signed: Signed,
) -> Response {
    Sse::new(stream(follow(state, headers, Watch::Runs)))
        .keep_alive(KeepAlive::default())
        .into_response()
}
