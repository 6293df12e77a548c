//! Rollcage's durable store: every run, and an append-only log of what
//! happened in it. The API, the live event stream, the CLI and a restarted
//! engine all read from here.
//!
//! [`Store`] is the trait the engine uses; [`SqliteStore`] is the embedded
//! default (one file, WAL mode); [`Redacted`] wraps any store to keep
//! secret values out of what is written to it. Events are JSON documents
//! with a kind, so the store needs no change when the engine records
//! something new.
//!
//! The store also keeps the notification queue: a delivery is queued before
//! it is tried and stays queued until it ends (sent, or given up), so that
//! a host started after a crash or an exit delivers what the last one did
//! not. Ending a delivery and appending its `notification` entry to the
//! run's log are one write, which may come after the run has finished.

mod redacted;
mod sqlite;
mod writer;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
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

/// What the engine and the API need from storage.
#[async_trait]
pub trait Store: Send + Sync {
    /// Record a new run (status `queued`); its id.
    async fn create_run(&self, run: NewRun) -> Result<String, StoreError>;
    /// Append to a run's log; the entry's sequence number.
    async fn append(
        &self,
        run_id: &str,
        kind: &str,
        stage: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, StoreError>;
    /// Entries of a run's log after `after_seq`, oldest first.
    async fn events(&self, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError>;
    /// Set a run's status, current stage and reason.
    async fn set_status(
        &self,
        run_id: &str,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
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
    /// Runs not finished: what a restarted engine picks up.
    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError>;
    /// Queue a decision for a run; the engine driving it takes it.
    async fn request_decision(
        &self,
        run_id: &str,
        decision: &DecisionRequest,
    ) -> Result<(), StoreError>;
    /// Take (remove) the decisions queued for a run, oldest first.
    async fn take_decisions(&self, run_id: &str) -> Result<Vec<DecisionRequest>, StoreError>;
    /// Add a line to the audit trail.
    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError>;
    /// The audit trail, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
    /// Queue deliveries, all in one transaction; their ids, in order.
    /// `NoSuchRun` (and nothing queued) if a run does not exist.
    async fn queue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<Vec<u64>, StoreError>;
    /// Every delivery still queued, oldest first: what a restarted host
    /// delivers.
    async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError>;
    /// End delivery `id`: take it off the queue and append its
    /// `notification` entry ([`notification_entry`]) to its run's log, in
    /// one write, whether or not the run has finished. `false`, with
    /// nothing written, when it is no longer queued (ended already).
    async fn end_delivery(&self, id: u64, outcome: &DeliveryOutcome) -> Result<bool, StoreError>;
    /// Whether the database answers (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Ids of runs as entries are appended to their logs, from this
    /// process. Live readers wait on it instead of polling; they still
    /// poll now and then for entries written by other processes.
    fn appended(&self) -> tokio::sync::broadcast::Receiver<String>;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
