//! The notification queue: one lane per notifier, each delivery kept in
//! the store from the moment it is queued until it ends.
//!
//! A lane holds, per run, a line of that run's deliveries in the order they
//! were sent. One task drains each line (started with its first delivery,
//! ended with its last), so a run's events reach the notifier one after the
//! other while other runs' lines go on beside it. The lane counts its
//! pending deliveries (in a line, being tried, or being queued) against the
//! capacity, and a new one beyond it is refused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcage_core::{Event, Notifier, PluginId};
use rollcage_store::{DeliveryOutcome, NewDelivery, Store, StoreError};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::retry::{self, RetryPolicy};

/// How the queue delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    pub retry: RetryPolicy,
    /// Deliveries one notifier may have pending, over every run (default
    /// 1000); a new one beyond is refused.
    pub capacity: usize,
    /// Tries one notifier may have in flight at once, over every run
    /// (default 4).
    pub concurrency: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            retry: RetryPolicy::default(),
            capacity: 1000,
            concurrency: 4,
        }
    }
}

/// A dispatcher was asked for a notifier the queue was not built with.
#[derive(Debug, thiserror::Error)]
#[error("notifier `{0}` has no lane in the notification queue")]
pub struct UnknownNotifier(pub PluginId);

/// One delivery in a lane.
#[derive(Clone)]
struct Job {
    /// Its id in the store's queue.
    id: u64,
    event: Event,
}

#[derive(Default)]
struct LaneState {
    /// Per run, its deliveries in order; the first is being tried.
    runs: HashMap<String, VecDeque<Job>>,
    /// Deliveries pending, places taken for ones being queued included.
    len: usize,
}

/// One notifier's deliveries.
struct Lane {
    notifier: Arc<dyn Notifier>,
    /// Its tries in flight.
    permits: Semaphore,
    state: Mutex<LaneState>,
}

impl Lane {
    fn id(&self) -> &PluginId {
        self.notifier.id()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LaneState> {
        // Every critical section is a few map operations that cannot panic
        // halfway, so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a place for one more delivery, unless `capacity` are pending.
    fn reserve(&self, capacity: usize) -> bool {
        let mut s = self.state();
        if s.len >= capacity {
            return false;
        }
        s.len += 1;
        true
    }

    /// Give back a place taken for a delivery that was not queued.
    fn unreserve(&self) {
        self.state().len -= 1;
    }

    /// Put `job` (its place taken) at the end of its run's line; whether
    /// the line was empty, so that nothing drains it yet.
    fn push(&self, job: Job) -> bool {
        let mut s = self.state();
        let line = s.runs.entry(job.event.run_id.clone()).or_default();
        line.push_back(job);
        line.len() == 1
    }

    /// The delivery at the head of `run`'s line.
    fn head(&self, run: &str) -> Option<Job> {
        self.state().runs.get(run).and_then(|l| l.front().cloned())
    }

    /// Drop the head of `run`'s line (it ended) and give its place back;
    /// whether more wait in the line.
    fn pop(&self, run: &str) -> bool {
        let mut s = self.state();
        s.len -= 1;
        let Some(line) = s.runs.get_mut(run) else {
            return false;
        };
        line.pop_front();
        if line.is_empty() {
            s.runs.remove(run);
            return false;
        }
        true
    }

    fn pending(&self) -> usize {
        self.state().len
    }
}

/// What the lanes' tasks share.
struct Shared {
    store: Arc<dyn Store>,
    options: QueueOptions,
    /// Deliveries pending over every lane, for [`Queue::idle`].
    pending: watch::Sender<usize>,
    /// Closed when the last handle on the queue is dropped: the tasks stop,
    /// leaving what they had not ended queued in the store.
    stopped: watch::Receiver<()>,
}

impl Shared {
    fn reserve(&self, lane: &Lane) -> bool {
        let taken = lane.reserve(self.options.capacity);
        if taken {
            self.pending.send_modify(|n| *n += 1);
        }
        taken
    }

    fn unreserve(&self, lane: &Lane) {
        lane.unreserve();
        self.pending.send_modify(|n| *n -= 1);
    }

    /// Queue `job` (its place taken) in `lane`, starting a task for its
    /// run's line if none drains it.
    fn enqueue(self: &Arc<Self>, lane: &Arc<Lane>, job: Job) {
        let run = job.event.run_id.clone();
        if lane.push(job) {
            let span = tracing::info_span!("notify", plugin = %lane.id(), run_id = %run);
            tokio::spawn(drain(self.clone(), lane.clone(), run).instrument(span));
        }
    }

    /// Record that `lane` refused `event`, its queue being full.
    async fn refuse(&self, lane: &Lane, event: &Event) -> Result<(), StoreError> {
        let capacity = self.options.capacity;
        tracing::error!(plugin = %lane.id(), run_id = %event.run_id, capacity, "notification refused: the notifier's queue is full");
        let outcome = DeliveryOutcome {
            attempts: 0,
            error: Some(format!(
                "refused: {capacity} notifications already pending for `{}`",
                lane.id()
            )),
        };
        // Queued and ended at once: a delivery's end is the one write that
        // logs a notification, whichever host makes it.
        let queued = self
            .store
            .queue_deliveries(vec![NewDelivery {
                notifier: lane.id().to_string(),
                run_id: event.run_id.clone(),
                stage: event.environment.clone(),
                event: serde_json::json!({}),
            }])
            .await?;
        for id in queued {
            self.store.end_delivery(id, &outcome).await?;
        }
        Ok(())
    }

    /// Take delivery `id` off the store's queue and log how it ended.
    async fn record(&self, lane: &Lane, id: u64, run_id: &str, outcome: &DeliveryOutcome) {
        if let Err(e) = self.store.end_delivery(id, outcome).await {
            // It stays queued in the store and the next host tries it again;
            // the line moves on rather than hold the run's later events
            // behind a store that fails.
            tracing::error!(plugin = %lane.id(), run_id, "cannot record the end of a notification: {e}");
        }
    }
}

/// Deliver `run`'s line in `lane`, one delivery after the other, until it
/// is empty or the queue is dropped.
async fn drain(shared: Arc<Shared>, lane: Arc<Lane>, run: String) {
    let mut stopped = shared.stopped.clone();
    while let Some(job) = lane.head(&run) {
        let tried = retry::deliver(
            &*lane.notifier,
            &job.event,
            shared.options.retry,
            &lane.permits,
        );
        let outcome = tokio::select! {
            outcome = tried => outcome,
            // The host is going: the delivery stays queued in the store.
            _ = stopped.changed() => return,
        };
        shared.record(&lane, job.id, &run, &outcome).await;
        let more = lane.pop(&run);
        shared.pending.send_modify(|n| *n -= 1);
        if !more {
            return;
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    lanes: BTreeMap<PluginId, Arc<Lane>>,
    /// Dropped with the last handle: see [`Shared::stopped`].
    _stop: watch::Sender<()>,
}

/// Every notifier's lane. Clones share it; dropping the last clone (and
/// every [`Dispatcher`] from it) stops delivery, leaving what is pending
/// queued in the store.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// A lane for each of `notifiers` (the first of several with one id),
    /// queued in `store`. Call [`Queue::resume`] before sending, to
    /// deliver first what earlier hosts left queued.
    pub fn new(
        store: Arc<dyn Store>,
        notifiers: Vec<Arc<dyn Notifier>>,
        options: QueueOptions,
    ) -> Queue {
        let (stop, stopped) = watch::channel(());
        let mut lanes = BTreeMap::new();
        for n in notifiers {
            lanes.entry(n.id().clone()).or_insert_with(|| {
                Arc::new(Lane {
                    notifier: n,
                    permits: Semaphore::new(options.concurrency.max(1)),
                    state: Mutex::default(),
                })
            });
        }
        Queue {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    store,
                    options,
                    pending: watch::channel(0).0,
                    stopped,
                }),
                lanes,
                _stop: stop,
            }),
        }
    }

    /// A dispatcher to the lanes of `notifiers`, in that order.
    pub fn dispatcher(&self, notifiers: &[PluginId]) -> Result<Dispatcher, UnknownNotifier> {
        let lanes = notifiers
            .iter()
            .map(|id| {
                self.inner
                    .lanes
                    .get(id)
                    .cloned()
                    .ok_or_else(|| UnknownNotifier(id.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Dispatcher {
            queue: Some(self.inner.clone()),
            lanes,
        })
    }

    /// Take up what hosts that stopped or died left queued in the store
    /// (their leases ran out), oldest first; how many deliveries were taken
    /// up. A delivery for a notifier this queue has no lane for (no longer
    /// configured), whose event cannot be read, or beyond its lane's
    /// capacity is given up and recorded. Called at start and now and then
    /// after, for hosts that die meanwhile; the store hands each delivery
    /// to one host only.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let shared = &self.inner.shared;
        let mut resumed = 0;
        for row in shared.store.claim_deliveries().await? {
            let name = &row.delivery.notifier;
            let lane = name
                .parse::<PluginId>()
                .ok()
                .and_then(|id| self.inner.lanes.get(&id));
            let event = serde_json::from_value::<Event>(row.delivery.event.clone());
            let error = match (lane, event) {
                (Some(lane), Ok(event)) if shared.reserve(lane) => {
                    shared.enqueue(lane, Job { id: row.id, event });
                    resumed += 1;
                    continue;
                }
                (Some(_), Ok(_)) => format!(
                    "refused at start: {} notifications already pending for `{name}`",
                    shared.options.capacity
                ),
                (None, _) => format!("notifier `{name}` is no longer configured"),
                (Some(_), Err(e)) => format!("the queued event cannot be read: {e}"),
            };
            tracing::error!(plugin = %name, run_id = %row.delivery.run_id, "queued notification given up: {error}");
            let outcome = DeliveryOutcome {
                attempts: 0,
                error: Some(error),
            };
            shared.store.end_delivery(row.id, &outcome).await?;
        }
        if resumed > 0 {
            tracing::info!(
                resumed,
                "delivering notifications queued by an earlier host"
            );
        }
        Ok(resumed)
    }

    /// Deliveries pending over every notifier.
    pub fn pending(&self) -> usize {
        *self.inner.shared.pending.borrow()
    }

    /// Deliveries pending per notifier that has any.
    pub fn pending_by_notifier(&self) -> Vec<(PluginId, usize)> {
        self.inner
            .lanes
            .iter()
            .map(|(id, lane)| (id.clone(), lane.pending()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Until no delivery is pending.
    pub async fn idle(&self) {
        let mut pending = self.inner.shared.pending.subscribe();
        // The sender lives as long as `self`.
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Wait until no delivery is pending, for `limit` at most; how many
    /// still are.
    pub async fn settle(&self, limit: Duration) -> usize {
        let _ = tokio::time::timeout(limit, self.idle()).await;
        self.pending()
    }
}

/// The notifiers of one pipeline or environment. The default has none.
#[derive(Clone, Default)]
pub struct Dispatcher {
    queue: Option<Arc<Inner>>,
    lanes: Vec<Arc<Lane>>,
}

impl Dispatcher {
    /// Queue `event` for each notifier and return: the deliveries go on in
    /// the background. Its `notification` entries are logged under the
    /// event's environment (the stage). Fails only if the store cannot
    /// queue the deliveries (none is queued then) or record a refusal.
    pub async fn send(&self, event: &Event) -> Result<(), StoreError> {
        let Some(inner) = &self.queue else {
            return Ok(());
        };
        let shared = &inner.shared;
        let data = serde_json::to_value(event)
            .map_err(|e| StoreError::Database(format!("cannot serialise an event: {e}")))?;
        let mut taken = Vec::new();
        let mut full = Vec::new();
        for lane in &self.lanes {
            if shared.reserve(lane) {
                taken.push(lane);
            } else {
                full.push(lane);
            }
        }
        let rows = taken
            .iter()
            .map(|lane| NewDelivery {
                notifier: lane.id().to_string(),
                run_id: event.run_id.clone(),
                stage: event.environment.clone(),
                event: data.clone(),
            })
            .collect();
        let ids = match shared.store.queue_deliveries(rows).await {
            Ok(ids) => ids,
            Err(e) => {
                for lane in &taken {
                    shared.unreserve(lane);
                }
                return Err(e);
            }
        };
        for (lane, id) in taken.into_iter().zip(ids) {
            let job = Job {
                id,
                event: event.clone(),
            };
            shared.enqueue(lane, job);
        }
        for lane in full {
            shared.refuse(lane, event).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
