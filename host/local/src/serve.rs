//! Running an axum router on a listener as a task that can be stopped
//! gracefully (the admin API, the metrics endpoint, every front port) or
//! dropped on the spot (an abandoned runtime).

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    pub fn spawn(listener: TcpListener, app: axum::Router) -> Server {
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = signal.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "server stopped");
            }
        });
        Server { shutdown, task }
    }

    /// Stop accepting, close idle connections, and wait (a bounded time,
    /// since a client may never finish) for requests in flight.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            abort.abort();
        }
    }

    /// Close the listener now, leaving connections to end on their own.
    /// Returns once the listener is closed, so its port is free.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
