//! The leases of the runs this host drives. A run is driven only under a
//! lease on its row in the store ([`rollcage_store::Lease`]); one keeper
//! task per engine renews every lease this host holds (a heartbeat every
//! quarter of the lease), and halts the driving of a run whose lease was
//! lost to another host or ran out while the store could not be reached.
//! Before each outside action (prepare, a job, a strategy step) the run
//! checks it still has a quarter of its lease left (renewing at once if
//! not), so that no action starts under a lease about to lapse; every write
//! names the lease, and the store refuses one from a host that lost it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rollcage_store::{Lease, Store, StoreError};

use crate::run::EngineError;

/// One run's lease as this host holds it.
pub(crate) struct Held {
    pub(crate) lease: Lease,
    /// Every lease of this host, renewed together.
    leases: Arc<Leases>,
    /// Until when the lease holds, on this host's clock: the moment the
    /// claim or renewal that set it was sent, plus the lease. Earlier than
    /// the store's own deadline, never later.
    valid_until: Mutex<Instant>,
    /// Why the run must stop being driven, once it must.
    halted: Mutex<Option<EngineError>>,
    halt: tokio::sync::Notify,
}

impl Held {
    fn new(lease: Lease, leases: Arc<Leases>, valid_until: Instant) -> Held {
        Held {
            lease,
            leases,
            valid_until: Mutex::new(valid_until),
            halted: Mutex::new(None),
            halt: tokio::sync::Notify::new(),
        }
    }

    /// Stop driving the run, for `why` (the first reason given wins).
    pub(crate) fn halt(&self, why: EngineError) {
        let mut halted = self.halted.lock().unwrap();
        if halted.is_none() {
            *halted = Some(why);
        }
        self.halt.notify_one();
    }

    /// Once the run must stop: why.
    pub(crate) async fn halted(&self) -> EngineError {
        loop {
            if let Some(why) = self.halted.lock().unwrap().take() {
                return why;
            }
            self.halt.notified().await;
        }
    }

    fn left(&self) -> Duration {
        self.valid_until
            .lock()
            .unwrap()
            .saturating_duration_since(Instant::now())
    }

    /// `Ok` if the lease has at least a quarter of its time left, renewing
    /// it now if it has less: an outside action may start. Otherwise the
    /// run is halted and the error says why.
    pub(crate) async fn check(&self) -> Result<(), EngineError> {
        let margin = self.leases.store.lease_duration() / 4;
        if self.left() >= margin {
            return Ok(());
        }
        // A heartbeat late (a busy machine, a slow database): renew now
        // rather than give the run up.
        self.leases.beat().await;
        let left = self.left();
        if left >= margin {
            return Ok(());
        }
        let why = || EngineError::LeaseRunningOut {
            run: self.lease.run_id.clone(),
            left_ms: left.as_millis() as u64,
        };
        self.halt(why());
        Err(why())
    }
}

/// Every lease this host holds, renewed together.
pub(crate) struct Leases {
    store: Arc<dyn Store>,
    held: Mutex<HashMap<String, Weak<Held>>>,
    keeper: AtomicBool,
    /// Whether the last heartbeat reached the store (for readiness).
    healthy: AtomicBool,
    /// Leases the last heartbeat renewed that no run here was driven
    /// under.
    orphans: Mutex<Vec<Lease>>,
}

impl Leases {
    pub(crate) fn new(store: Arc<dyn Store>) -> Arc<Leases> {
        Arc::new(Leases {
            store,
            held: Mutex::default(),
            keeper: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            orphans: Mutex::default(),
        })
    }

    /// The lease of a run just claimed (sent at `sent`), kept from now on
    /// until the returned handle is dropped.
    pub(crate) fn hold(self: &Arc<Self>, lease: Lease, sent: Instant) -> Arc<Held> {
        self.keep();
        let held = Arc::new(Held::new(
            lease,
            self.clone(),
            sent + self.store.lease_duration(),
        ));
        self.held
            .lock()
            .unwrap()
            .insert(held.lease.run_id.clone(), Arc::downgrade(&held));
        held
    }

    /// The lease of run `run_id`, if a run is driven here under it.
    pub(crate) fn of(&self, run_id: &str) -> Option<Lease> {
        let held = self.held.lock().unwrap();
        held.get(run_id)
            .and_then(Weak::upgrade)
            .map(|h| h.lease.clone())
    }

    /// Whether the store answered the last heartbeat.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Start the keeper unless it runs: a heartbeat every third of the
    /// lease, for as long as the engine lives. It also keeps this host's
    /// queued deliveries, so it runs with no run too. A quarter: a run
    /// checks that a quarter is left before each outside action, so that
    /// only two heartbeats missed in a row stop it.
    pub(crate) fn keep(self: &Arc<Self>) {
        if self.keeper.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.keeper.store(false, Ordering::SeqCst);
            return;
        };
        let weak = Arc::downgrade(self);
        let every = self.store.lease_duration() / 4;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(leases) = weak.upgrade() else {
                    return;
                };
                leases.beat().await;
            }
        });
    }

    /// One heartbeat: renew, then halt the runs lost or run out.
    pub(crate) async fn beat(&self) {
        // The leases held before the heartbeat is sent: a run claimed
        // while it is on its way is not in its answer, and is not lost.
        let held: Vec<Arc<Held>> = {
            let mut map = self.held.lock().unwrap();
            map.retain(|_, h| h.strong_count() > 0);
            map.values().filter_map(Weak::upgrade).collect()
        };
        let sent = Instant::now();
        let answer = self.store.heartbeat().await;
        let until = sent + self.store.lease_duration();
        match answer {
            Ok(renewed) => {
                self.healthy.store(true, Ordering::Relaxed);
                // A lease this host holds but drives no run under (its task
                // ended without giving it up): given up, so that the run
                // does not stay held by a host that does not move it.
                // Two beats in a row, so that a run just claimed and about
                // to be driven is not taken for one.
                let orphans: Vec<Lease> = renewed
                    .iter()
                    .filter(|l| !held.iter().any(|h| h.lease == **l))
                    .cloned()
                    .collect();
                let before = std::mem::replace(&mut *self.orphans.lock().unwrap(), orphans.clone());
                for lease in orphans.iter().filter(|l| before.contains(l)) {
                    tracing::warn!(run_id = %lease.run_id, "held but not driven here: giving the run up");
                    let _ = self.store.release(lease).await;
                }
                for h in held {
                    if renewed.contains(&h.lease) {
                        *h.valid_until.lock().unwrap() = until;
                    } else {
                        tracing::warn!(
                            run_id = %h.lease.run_id,
                            epoch = h.lease.epoch,
                            "lost the run's lease to another host: no longer driving it"
                        );
                        h.halt(EngineError::Store(StoreError::Fenced {
                            run_id: h.lease.run_id.clone(),
                            epoch: h.lease.epoch,
                            host: self.store.host().to_string(),
                        }));
                    }
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!("cannot renew the leases of this host's runs: {e}");
                }
                let now = Instant::now();
                for h in held {
                    if *h.valid_until.lock().unwrap() <= now {
                        tracing::warn!(
                            run_id = %h.lease.run_id,
                            "the run's lease ran out while the store was unreachable: no longer driving it (it stays resumable)"
                        );
                        h.halt(EngineError::LeaseRunningOut {
                            run: h.lease.run_id.clone(),
                            left_ms: 0,
                        });
                    }
                }
            }
        }
    }
}
