//! A host's share of the runs. Runs are recorded queued by whichever host
//! (or CLI) is asked for them; every host's scheduler claims unfinished
//! runs that no live host drives (new ones, and those of a host that
//! stopped or died) up to its capacity, and drives each under its lease.
//! It claims when the store wakes it (a run created, released or finished,
//! here or on another host) and now and then besides, since a lease that
//! runs out wakes nobody.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rollcage_store::{Lease, RunStatus};

use crate::gates::wait_runnable;
use crate::run::{Engine, EngineError};

/// Called as each run driven here ends: its pipeline and status.
pub type OnFinished = Arc<dyn Fn(&str, RunStatus) + Send + Sync>;

/// The runs this host drives.
pub struct Scheduler {
    engine: Arc<Engine>,
    capacity: usize,
    active: Mutex<HashMap<String, (tokio::task::AbortHandle, Lease)>>,
    wake: tokio::sync::Notify,
    /// One claim at a time, so that two never both count the same room.
    claiming: tokio::sync::Mutex<()>,
    stopping: tokio::sync::watch::Sender<bool>,
    on_finished: OnFinished,
}

impl Scheduler {
    /// Start claiming and driving runs, at most `capacity` at once.
    pub fn start(engine: Arc<Engine>, capacity: usize, on_finished: OnFinished) -> Arc<Scheduler> {
        engine.keep_leases();
        let scheduler = Arc::new(Scheduler {
            engine,
            capacity: capacity.max(1),
            active: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            claiming: tokio::sync::Mutex::new(()),
            stopping: tokio::sync::watch::channel(false).0,
            on_finished,
        });
        let s = scheduler.clone();
        let mut woken = scheduler.engine.store().wakeups();
        let mut stopping = scheduler.stopping.subscribe();
        // Often enough that a dead host's runs are taken over within about
        // a quarter of a lease after it runs out.
        let every = scheduler.engine.store().lease_duration() / 4;
        // Runs until `stop`.
        tokio::spawn(async move {
            loop {
                if *stopping.borrow() {
                    return;
                }
                s.claim().await;
                tokio::select! {
                    _ = s.wake.notified() => {}
                    _ = wait_runnable(&mut woken, every) => {}
                    _ = stopping.changed() => return,
                }
            }
        });
        scheduler
    }

    /// Look for runs to claim now (a run was just queued here).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs driven here now.
    pub fn active(&self) -> usize {
        self.active.lock().unwrap().len()
    }

    /// How many more runs this host may take.
    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.active())
    }

    /// Claim what there is room for now, and drive each run claimed;
    /// how many runs this host drives then (a host starting says so).
    pub async fn claim_now(self: &Arc<Self>) -> usize {
        self.claim().await;
        self.active()
    }

    /// Claim what there is room for, and drive each run claimed.
    async fn claim(self: &Arc<Self>) {
        let _one = self.claiming.lock().await;
        loop {
            let room = self.room();
            if room == 0 || *self.stopping.borrow() {
                return;
            }
            let sent = Instant::now();
            let leases = match self.engine.store().claim(None, room).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("cannot claim runs: {e}");
                    return;
                }
            };
            let full = leases.len() == room;
            for lease in leases {
                self.drive(lease, sent);
            }
            if !full {
                return;
            }
        }
    }

    fn drive(self: &Arc<Self>, lease: Lease, sent: Instant) {
        let mut active = self.active.lock().unwrap();
        let id = lease.run_id.clone();
        let this = self.clone();
        let (run_id, claimed) = (id.clone(), lease.clone());
        tracing::info!(run_id = %id, epoch = lease.epoch, "driving run");
        let held = self.engine.hold(claimed, sent);
        let task = tokio::spawn(async move {
            match this.engine.drive_held(held).await {
                Ok(status) => {
                    let pipeline = this
                        .engine
                        .store()
                        .run(&run_id)
                        .await
                        .map(|r| r.run.pipeline)
                        .unwrap_or_default();
                    (this.on_finished)(&pipeline, status)
                }
                Err(EngineError::Store(rollcage_store::StoreError::Fenced { .. })) => {}
                Err(e) => tracing::error!(run_id = %run_id, "run stopped: {e}"),
            }
            this.active.lock().unwrap().remove(&run_id);
            // Room for one more.
            this.wake();
        });
        active.insert(id, (task.abort_handle(), lease));
    }

    /// Stop driving runs and give their leases up: each is left where its
    /// log says, for another host (or the next start) to take at once.
    pub async fn stop(&self) {
        self.stopping.send_replace(true);
        let stopped: Vec<(String, (tokio::task::AbortHandle, Lease))> =
            self.active.lock().unwrap().drain().collect();
        for (id, (task, lease)) in stopped {
            tracing::info!(run_id = %id, "run left resumable");
            task.abort();
            self.engine.release(&lease).await;
        }
    }
}
