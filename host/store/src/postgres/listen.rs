//! Wake-ups across hosts: one connection per store LISTENs on the
//! `rollcage` channel and forwards what other writers NOTIFY into the
//! store's broadcasts. Notifications sent while it is disconnected are
//! lost, so it reconnects, wakes everything once it is back, and a slow
//! poll wakes this host's runs with decisions waiting and the claimers
//! every [`POLL_EVERY`] whatever happens. Both tasks end with the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::future::poll_fn;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::Wake;

/// The channel every store writes to and listens on.
pub(crate) const CHANNEL: &str = "rollcage";

/// How often the fallback poll runs.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(2);

/// The longest wait between two attempts to reconnect.
const RECONNECT_AT_MOST: Duration = Duration::from_secs(5);

/// Where notifications go, shared by the store and its tasks.
#[derive(Clone)]
pub(crate) struct Wakers {
    pub appended: broadcast::Sender<String>,
    pub wakeups: broadcast::Sender<Wake>,
    /// Whether the LISTEN connection is up: while it is, the store's own
    /// writes reach this process through it (once); while it is not, the
    /// store wakes its own watchers directly.
    pub listening: Arc<AtomicBool>,
}

impl Wakers {
    pub fn new() -> Wakers {
        Wakers {
            // Readers that fall behind re-read from the database; the
            // channels only wake them.
            appended: broadcast::channel(1024).0,
            wakeups: broadcast::channel(1024).0,
            listening: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Forward one notification's payload.
    pub fn forward(&self, payload: &str) {
        match payload.split_once(':') {
            Some(("a", run_id)) => {
                let _ = self.appended.send(run_id.to_string());
            }
            Some(("d", run_id)) => {
                let _ = self.wakeups.send(Wake::Decision(run_id.to_string()));
            }
            _ if payload == "r" => {
                let _ = self.wakeups.send(Wake::Runnable);
            }
            // From a newer build: nothing this one knows to wake.
            _ => {}
        }
    }

    /// Wake this process's watchers for a write it made, unless the LISTEN
    /// connection will (it hears this process's NOTIFYs too).
    pub fn local(&self, payload: &str) {
        if !self.listening.load(Ordering::Acquire) {
            self.forward(payload);
        }
    }
}

/// Connect and LISTEN before returning, so that a write made right after
/// the store is opened already wakes its watchers; then keep listening in
/// the background until `stop` closes.
pub(crate) async fn start_listener(
    config: tokio_postgres::Config,
    catch_up: CatchUp,
    stop: watch::Receiver<()>,
) {
    let wakers = catch_up.wakers.clone();
    let first = listen(&config).await.ok();
    // Listening from now on: this process's own writes reach it through
    // the connection, and are not sent twice.
    wakers.listening.store(first.is_some(), Ordering::Release);
    tokio::spawn(listen_forever(config, catch_up, stop, first));
}

/// A LISTENing connection: its client (dropping it closes the
/// connection) and the notifications' payloads.
struct Listening {
    _client: tokio_postgres::Client,
    payloads: mpsc::UnboundedReceiver<String>,
}

async fn listen(config: &tokio_postgres::Config) -> Result<Listening, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, payloads) = mpsc::unbounded_channel();
    // The connection is driven here; it ends (and closes `payloads`) when
    // the server goes away or the client is dropped.
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Listening {
        _client: client,
        payloads,
    })
}

async fn listen_forever(
    config: tokio_postgres::Config,
    catch_up: CatchUp,
    mut stop: watch::Receiver<()>,
    mut connected: Option<Listening>,
) {
    let wakers = &catch_up.wakers;
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(mut l) = connected.take() {
            wakers.listening.store(true, Ordering::Release);
            backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    payload = l.payloads.recv() => match payload {
                        Some(p) => wakers.forward(&p),
                        None => break,
                    },
                }
            }
            wakers.listening.store(false, Ordering::Release);
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_AT_MOST);
        connected = listen(&config).await.ok();
        if connected.is_some() {
            // What was sent while disconnected is lost: wake for it now
            // rather than at the next poll.
            catch_up.wake().await;
        }
    }
}

/// What wakes this host for notifications it may have missed: its runs
/// with decisions waiting, and the claimers.
#[derive(Clone)]
pub(crate) struct CatchUp {
    pub pool: Pool,
    pub host: String,
    pub wakers: Wakers,
}

impl CatchUp {
    async fn wake(&self) {
        for run_id in waiting_decisions(&self.pool, &self.host).await {
            let _ = self.wakers.wakeups.send(Wake::Decision(run_id));
        }
        let _ = self.wakers.wakeups.send(Wake::Runnable);
    }
}

/// Every [`POLL_EVERY`]: wake this host's runs that have decisions waiting,
/// and the claimers (a lease running out notifies nobody).
pub(crate) fn start_poll(catch_up: CatchUp, mut stop: watch::Receiver<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            if catch_up.wakers.wakeups.receiver_count() > 0 {
                catch_up.wake().await;
            }
        }
    });
}

/// This host's runs with decisions waiting; none when the database does
/// not answer (the next tick tries again).
async fn waiting_decisions(pool: &Pool, host: &str) -> Vec<String> {
    let Ok(client) = pool.get().await else {
        return vec![];
    };
    let Ok(stmt) = client
        .prepare_cached(
            "SELECT DISTINCT d.run_id FROM decisions d JOIN runs r ON r.id = d.run_id WHERE r.owner = $1",
        )
        .await
    else {
        return vec![];
    };
    client
        .query(&stmt, &[&host])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}
