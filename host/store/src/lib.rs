//! Rollcage's durable store: every run, and an append-only log of what
//! happened in it. The API, the live event stream, the CLI and a restarted
//! engine all read from here.
//!
//! [`Store`] is the trait the engine uses; [`SqliteStore`] is the embedded
//! default (one file, WAL mode); [`PostgresStore`] is for several hosts on
//! one database; [`Redacted`] wraps any store to keep
//! secret values out of what is written to it. Events are JSON documents
//! with a kind, so the store needs no change when the engine records
//! something new.
//!
//! The store also keeps the notification queue: a delivery is queued before
//! it is tried and stays queued until it ends (sent, or given up), so that
//! a host started after a crash or an exit delivers what the last one did
//! not. Ending a delivery and appending its `notification` entry to the
//! run's log are one write, which may come after the run has finished.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub mod pgtest;
mod postgres;
mod redacted;
mod sqlite;
mod writer;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use postgres::{POSTGRES_SCHEMA_VERSION, PostgresStore, mask_password};
pub use redacted::{Redacted, redact_json};
pub use sqlite::SqliteStore;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption, a locked file).
    #[error("store: {0}")]
    Database(String),
    /// No run has this id.
    #[error("no run `{0}`")]
    NoSuchRun(String),
    /// This host no longer holds the run's lease (another host claimed it,
    /// or the lease ran out): the write was refused and nothing changed.
    #[error(
        "run `{run_id}`: lease {epoch} is no longer this host's ({host}); another host drives the run"
    )]
    Fenced {
        run_id: String,
        epoch: u64,
        host: String,
    },
    /// The database was written by a newer Rollcage.
    #[error(
        "the database's schema is version {found}, newer than this Rollcage's ({supported}): upgrade Rollcage, or point it at another database"
    )]
    TooNew { found: u64, supported: u64 },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message: the driver's `Display` of a database
        // error says little more than "db error". Neither names the URL.
        StoreError::Database(postgres::describe(&e))
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, waiting for its environment or window.
    Queued,
    /// Moving.
    Running,
    /// Waiting for a person.
    AwaitingApproval,
    /// Every stage succeeded.
    Succeeded,
    /// A stage failed and was rolled back.
    RolledBack,
    /// A stage failed and could not be rolled back, or the run was refused.
    Failed,
}

impl RunStatus {
    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::RolledBack | RunStatus::Failed
        )
    }

    /// The name used in the store, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Succeeded => "succeeded",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "awaiting_approval" => RunStatus::AwaitingApproval,
            "succeeded" => RunStatus::Succeeded,
            "rolled_back" => RunStatus::RolledBack,
            "failed" => RunStatus::Failed,
            other => {
                return Err(StoreError::Database(format!(
                    "unknown run status `{other}`"
                )));
            }
        })
    }
}

/// A run as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    pub pipeline: String,
    pub release: String,
    pub notes: Option<String>,
    pub params: Vec<(String, String)>,
    /// Stages to run, in order.
    pub stages: Vec<String>,
    /// Who started it.
    pub started_by: String,
    /// Hash of the configuration it runs with, for the audit trail.
    pub config_hash: String,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub run: NewRun,
    pub status: RunStatus,
    /// The stage in progress or last reached.
    pub stage: Option<String>,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One entry of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the run's log, from 1; an SSE client resumes after it.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What kind of entry (`step`, `intent`, `measurement`...).
    pub kind: String,
    /// The stage it belongs to, if any.
    pub stage: Option<String>,
    /// The entry itself.
    pub data: serde_json::Value,
    /// The lease (its epoch) the entry was written under: a run's entries
    /// never go back to an older one.
    #[serde(default)]
    pub epoch: u64,
}

/// A person's answer to a run, asked for from anywhere (the CLI of another
/// process, the API of another host) and taken by the engine driving the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRequest {
    /// `approve` or `abort`.
    pub action: DecisionAction,
    /// Who decided.
    pub by: String,
    /// The stage the decision was allowed for. The engine drops it if the
    /// run has moved on to another stage by the time it takes it, so that
    /// an approver of one environment never decides in another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

/// What a person decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    Approve,
    Abort,
}

/// Filters for [`Store::list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    /// Only runs that go through this environment (one of their stages).
    pub environment: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs created at or after this time.
    pub since_ms: Option<u64>,
    /// Only runs older than this id (cursor pagination, newest first).
    pub before: Option<String>,
    pub limit: usize,
}

/// One line of the audit trail: who did what to which run, with which
/// configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAudit {
    /// Who (a token's name, or the user of a one-off command).
    pub actor: String,
    /// What: `start`, `approve`, `abort`...
    pub action: String,
    pub run_id: Option<String>,
    /// The configuration the host ran with.
    pub config_hash: String,
    /// Anything else worth keeping (pipeline, release, stage).
    pub detail: serde_json::Value,
}

/// An audit line as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing; the cursor for pagination.
    pub id: u64,
    pub at_ms: u64,
    #[serde(flatten)]
    pub entry: NewAudit,
}

/// Filters for [`Store::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub run_id: Option<String>,
    pub since_ms: Option<u64>,
    /// Only entries older than this id (newest first).
    pub before: Option<u64>,
    pub limit: usize,
}

/// A notification for one notifier, queued until it is delivered or given
/// up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The notifier's plugin id.
    pub notifier: String,
    pub run_id: String,
    /// The stage its `notification` entry is logged under, if any.
    pub stage: Option<String>,
    /// The event itself, as the dispatcher serialised it.
    pub event: serde_json::Value,
}

/// A queued delivery as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedDelivery {
    /// Increasing: the order deliveries were queued in.
    pub id: u64,
    pub queued_ms: u64,
    #[serde(flatten)]
    pub delivery: NewDelivery,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryOutcome {
    /// Tries made (0 when it was refused without one).
    pub attempts: u32,
    /// `None` when it was delivered; else why it was given up.
    pub error: Option<String>,
}

/// The data of a run's `notification` log entry: what the API's run view
/// and the CLI read (`notifier`, `attempts`, `error`).
pub fn notification_entry(notifier: &str, outcome: &DeliveryOutcome) -> serde_json::Value {
    serde_json::json!({
        "notifier": notifier,
        "attempts": outcome.attempts,
        "error": outcome.error,
    })
}

/// The right to drive one run: held by one host at a time, for a while
/// ([`Store::lease_duration`]) and renewed by [`Store::heartbeat`]. Every
/// write to the run's log and status names the lease and is refused
/// ([`StoreError::Fenced`]) unless the run is still this host's under the
/// same epoch, in the same statement that writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: String,
    /// Bumped by every claim: a host that lost the run holds an older one.
    pub epoch: u64,
}

/// What [`Store::lock_environment`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvLock {
    /// The run holds the environment (now, or already).
    Held,
    /// Another run holds it, or is ahead in its queue.
    Busy {
        /// The run that holds it, or the first one waiting for it.
        holder: String,
        /// Whether that run holds it (`false`: it is only ahead in line).
        holding: bool,
    },
}

/// What a host is woken for, from any host or process sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A decision was asked for this run.
    Decision(String),
    /// A run may be free to claim, or an environment free to lock: a run
    /// was created, released or finished.
    Runnable,
}

/// Who this store handle writes as, and how long its leases last.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    /// Unique per process: host name, process id and a random part.
    pub name: String,
    /// How long a claim or renewal holds a run.
    pub lease: std::time::Duration,
}

impl HostIdentity {
    /// This process, with leases of `lease`.
    pub fn this_process(lease: std::time::Duration) -> HostIdentity {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        HostIdentity {
            name: format!("{host}/{}/{}", std::process::id(), random_hex(3)),
            lease,
        }
    }
}

impl Default for HostIdentity {
    fn default() -> Self {
        HostIdentity::this_process(DEFAULT_LEASE)
    }
}

/// How long a lease lasts unless configured: long enough for a heartbeat
/// (every third of it) to be late twice, short enough that another host
/// takes a dead host's runs over quickly.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(15);

/// Unfinished runs, for admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unfinished {
    pub all: usize,
    pub of_pipeline: usize,
}

/// What the engine and the API need from storage.
///
/// Writes about a run in progress (its log, its status, its environment
/// locks, taking its decisions) are fenced by a [`Lease`]; everything else
/// (creating runs, asking for decisions, the audit trail) may come from any
/// host at any time.
#[async_trait]
pub trait Store: Send + Sync {
    /// Who this handle writes as.
    fn host(&self) -> &str;
    /// How long a claim or a renewal holds a run.
    fn lease_duration(&self) -> std::time::Duration;
    /// Record a new run (status `queued`, held by no host); its id.
    async fn create_run(&self, run: NewRun) -> Result<String, StoreError>;
    /// Claim unfinished runs no live host holds (never held, released, or
    /// with a lease run out), oldest first, at most `limit`; only `run_id`
    /// when given. Each claim bumps the run's epoch. Another host claiming
    /// at the same moment never gets the same run.
    async fn claim(&self, run_id: Option<&str>, limit: usize) -> Result<Vec<Lease>, StoreError>;
    /// Renew every lease this host holds (runs and queued deliveries);
    /// the runs still held. A run missing from the answer was lost.
    async fn heartbeat(&self) -> Result<Vec<Lease>, StoreError>;
    /// Give a run up (a clean stop): any host may claim it at once.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Give up everything this host holds, runs and queued deliveries (a
    /// host that stops cleanly): the next host takes them at once.
    async fn release_all(&self) -> Result<(), StoreError>;
    /// The host holding run `run_id` and until when (ms since the Unix
    /// epoch, on the database's clock), if a live host does.
    async fn holder(&self, run_id: &str) -> Result<Option<(String, u64)>, StoreError>;
    /// Append to a run's log; the entry's sequence number. Sequence
    /// numbers have no gaps.
    async fn append(
        &self,
        lease: &Lease,
        kind: &str,
        stage: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, StoreError>;
    /// Entries of a run's log after `after_seq`, oldest first.
    async fn events(&self, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError>;
    /// Set a run's status, current stage and reason. A finished status
    /// also frees every environment the run held or waited for, and the
    /// run's lease.
    async fn set_status(
        &self,
        lease: &Lease,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Take `environment` for the run, unless another run holds it or is
    /// ahead in its queue; with `queue`, the run waits in line (first come,
    /// first served) until it takes it or finishes.
    async fn lock_environment(
        &self,
        lease: &Lease,
        environment: &str,
        queue: bool,
    ) -> Result<EnvLock, StoreError>;
    /// Free `environment` if the run holds it.
    async fn unlock_environment(&self, lease: &Lease, environment: &str) -> Result<(), StoreError>;
    /// The run holding each environment held.
    async fn environment_locks(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// One run.
    async fn run(&self, run_id: &str) -> Result<Run, StoreError>;
    /// One run and its whole log, consistent with each other: a finished
    /// run's log is complete but for the `notification` entries of
    /// deliveries still queued, which are appended when they end. The run is read first (its status is the
    /// last write of a run), so this default is consistent too; a store
    /// that can read both at once should.
    async fn run_with_log(&self, run_id: &str) -> Result<(Run, Vec<Event>), StoreError> {
        let run = self.run(run_id).await?;
        let log = self.events(run_id, 0).await?;
        Ok((run, log))
    }
    /// Runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError>;
    /// Runs not finished, oldest first.
    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError>;
    /// How many runs are unfinished, in all and of `pipeline`.
    async fn unfinished_count(&self, pipeline: &str) -> Result<Unfinished, StoreError>;
    /// Queue a decision for a run and wake the host driving it.
    async fn request_decision(
        &self,
        run_id: &str,
        decision: &DecisionRequest,
    ) -> Result<(), StoreError>;
    /// Take (remove) the decisions queued for a run, oldest first.
    async fn take_decisions(&self, lease: &Lease) -> Result<Vec<DecisionRequest>, StoreError>;
    /// Add a line to the audit trail.
    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError>;
    /// The audit trail, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
    /// Queue deliveries, all in one transaction, held by this host; their
    /// ids, in order. `NoSuchRun` (and nothing queued) if a run does not
    /// exist.
    async fn queue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<Vec<u64>, StoreError>;
    /// Every delivery still queued, by any host, oldest first.
    async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError>;
    /// Claim every queued delivery no live host holds (its host stopped or
    /// died), oldest first: what this host delivers in their place.
    async fn claim_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError>;
    /// End delivery `id`: take it off the queue and append its
    /// `notification` entry ([`notification_entry`]) to its run's log, in
    /// one write, whether or not the run has finished. `false`, with
    /// nothing written, when this host no longer holds it (ended already,
    /// or claimed by another host).
    async fn end_delivery(&self, id: u64, outcome: &DeliveryOutcome) -> Result<bool, StoreError>;
    /// Whether the database answers (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Ids of runs as entries are appended to their logs (by this process;
    /// by every host where the store can tell). Live readers wait on it
    /// instead of polling; they still poll now and then.
    fn appended(&self) -> tokio::sync::broadcast::Receiver<String>;
    /// Decisions asked for and runs that may be claimed, from every host
    /// and process the store can hear from.
    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<Wake>;
}

/// `n` random bytes from the OS, in hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new run id: time-ordered (milliseconds, then random), so that ids
/// sort as runs were created.
pub(crate) fn new_id() -> String {
    format!("r{:012x}{}", now_ms(), random_hex(4))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
