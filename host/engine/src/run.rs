//! A run: a release taken through a pipeline's stages in order, each
//! through its gates ([`crate::gates`]). A stage that does not succeed
//! stops the run. Everything is appended to the run's log in the store as
//! it happens, and the log is all a restarted engine (on this host or
//! another) needs to resume: finished stages are skipped and the stage in
//! progress continues from its recorded steps. A run is driven only under
//! its lease ([`crate::lease`]); decisions asked for through any host reach
//! it through the store, which wakes it. Notifications are queued
//! (`rollcage_notify`) and the run goes on at once; each delivery's
//! `notification` entry is appended when it ends, maybe after the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcage_core::{
    Action, EnvironmentProvider, Event, EventKind, ExposureControl, HealthCheck, Job, Outcome,
    Redactor, Release, Strategy, Target, Version, Window,
};
use rollcage_notify::Dispatcher;
use rollcage_store::{DecisionAction, DecisionRequest, Lease, RunStatus, Store, StoreError, Wake};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::analysis::{self, AnalysisSpec};
use crate::bake::BakeSpec;
use crate::gates::RunDriver;
use crate::lease::{Held, Leases};
use crate::stage::{Decision, StageEvent, StageSink};

/// How often a run looks for decisions when nothing woke it: the store
/// wakes it when one is asked for (from any host it can hear); this is
/// the fallback for a wake-up lost.
const DECISION_FALLBACK: Duration = Duration::from_secs(2);

/// An environment ready to take runs.
pub struct EnvironmentPlan {
    pub name: String,
    pub provider: Arc<dyn EnvironmentProvider>,
    pub strategy: Arc<dyn Strategy>,
    pub strategy_params: String,
    pub checks: BTreeMap<String, Arc<dyn HealthCheck>>,
    pub default_checks: Vec<String>,
    pub analysis: AnalysisSpec,
    pub replicas: u32,
    pub progress_deadline: Duration,
    pub readiness_poll: Duration,
    /// A person approves before the stage starts.
    pub approval: bool,
    /// The approver must not be the person who started the run.
    pub require_different_approver: bool,
    pub window: Option<Window>,
    /// Outside the window: refuse (`true`) or wait (`false`).
    pub refuse_outside_window: bool,
    /// Busy with another run: refuse (`true`) or queue (`false`).
    pub refuse_when_busy: bool,
    pub pre_jobs: Vec<Job>,
    pub post_jobs: Vec<Job>,
    /// Watch the promoted release before the stage ends.
    pub bake: Option<BakeSpec>,
    pub notify: Dispatcher,
    /// Exposure controls by plugin id, for expose steps.
    pub exposures: BTreeMap<String, Arc<dyn ExposureControl>>,
    /// The environment's own exposure control, for expose steps naming none.
    pub exposure: Option<String>,
    /// How long an analysis after an exposure change waits first.
    pub settle: Duration,
}

/// A pipeline ready to take runs.
pub struct PipelinePlan {
    pub name: String,
    pub stages: Vec<String>,
    pub service: String,
    /// The provider-specific service definition, as JSON.
    pub service_spec: String,
    pub notify: Dispatcher,
}

/// What a person or a CI job asks for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub pipeline: String,
    pub release: String,
    pub notes: Option<String>,
    pub params: Vec<(String, String)>,
    /// Only these stages (in pipeline order); all when `None`.
    pub stages: Option<Vec<String>>,
    pub started_by: String,
}

/// Why a run could not be started or steered.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown pipeline `{0}`")]
    UnknownPipeline(String),
    #[error("invalid release `{0}`: use SemVer, MAJOR.MINOR.PATCH such as 1.4.0 (or 1.4.0-rc.1)")]
    InvalidRelease(String),
    #[error("pipeline `{pipeline}` has no stage `{stage}`")]
    UnknownStage { pipeline: String, stage: String },
    #[error("`stages` is empty: a run goes through at least one stage (leave it out for all)")]
    NoStages,
    #[error("stage `{0}` is listed twice in `stages`")]
    DuplicateStage(String),
    #[error("run `{0}` is not waiting for a decision")]
    NotWaiting(String),
    #[error("run `{0}` is finished ({1})")]
    Finished(String, &'static str),
    #[error("`{environment}` needs an approver other than the one who started the run ({by})")]
    SameApprover { environment: String, by: String },
    #[error("run `{0}` is not finished ({1}): only a finished run can be {2}")]
    NotFinished(String, &'static str, &'static str),
    #[error("run `{0}` succeeded: there is nothing to retry")]
    NothingToRetry(String),
    #[error(
        "no earlier successful run of pipeline `{pipeline}` through `{environment}` to roll back to"
    )]
    NoPreviousRelease {
        pipeline: String,
        environment: String,
    },
    #[error("run `{run}` did not go through environment `{environment}`")]
    NotInRun { run: String, environment: String },
    #[error(
        "run `{run}` is driven by host {host}; it takes its decisions, and another host takes it over if that host stops"
    )]
    HeldElsewhere { run: String, host: String },
    #[error(
        "run `{run}`: its lease has {left_ms} ms left and could not be renewed (is the database reachable?); stopped driving it, it stays resumable"
    )]
    LeaseRunningOut { run: String, left_ms: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lease of a run this engine is about to drive ([`Engine::hold`]).
pub struct HeldRun(Arc<Held>);

/// Takes runs through pipelines.
pub struct Engine {
    store: Arc<dyn Store>,
    environments: BTreeMap<String, Arc<EnvironmentPlan>>,
    pipelines: BTreeMap<String, PipelinePlan>,
    /// The leases of the runs this engine drives.
    leases: Arc<Leases>,
    config_hash: String,
    /// Secret values kept out of notifications (the store and the log
    /// have their own).
    redactor: Arc<Redactor>,
    /// Seconds since the Unix epoch, for windows (replaceable in tests).
    pub clock: fn() -> u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        environments: Vec<EnvironmentPlan>,
        pipelines: Vec<PipelinePlan>,
        config_hash: String,
    ) -> Engine {
        Engine {
            leases: Leases::new(store.clone()),
            store,
            environments: environments
                .into_iter()
                .map(|e| (e.name.clone(), Arc::new(e)))
                .collect(),
            pipelines: pipelines.into_iter().map(|p| (p.name.clone(), p)).collect(),
            config_hash,
            redactor: Arc::default(),
            clock: unix_now,
        }
    }

    /// Keep the values `redactor` knows out of every notification.
    pub fn with_redactor(mut self, redactor: Arc<Redactor>) -> Engine {
        self.redactor = redactor;
        self
    }

    /// An environment's plan.
    pub fn environment(&self, name: &str) -> Option<&Arc<EnvironmentPlan>> {
        self.environments.get(name)
    }

    /// The store runs are recorded in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Every environment, by name.
    pub fn environments(&self) -> impl Iterator<Item = &Arc<EnvironmentPlan>> {
        self.environments.values()
    }

    /// Every pipeline, by name.
    pub fn pipelines(&self) -> impl Iterator<Item = &PipelinePlan> {
        self.pipelines.values()
    }

    /// A pipeline's plan.
    pub fn pipeline(&self, name: &str) -> Option<&PipelinePlan> {
        self.pipelines.get(name)
    }

    /// The hash of the configuration the engine was built from.
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// Add a line to the audit trail, with the configuration's hash.
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        run_id: &str,
        detail: serde_json::Value,
    ) -> Result<(), EngineError> {
        self.store
            .record_audit(rollcage_store::NewAudit {
                actor: actor.to_string(),
                action: action.to_string(),
                run_id: Some(run_id.to_string()),
                config_hash: self.config_hash.clone(),
                detail,
            })
            .await?;
        Ok(())
    }

    /// Start a finished run that did not succeed again: same pipeline,
    /// release, notes, parameters and stages. The new run's id.
    pub async fn retry(&self, run_id: &str, by: &str) -> Result<String, EngineError> {
        let run = self.store.run(run_id).await?;
        if !run.status.is_finished() {
            return Err(EngineError::NotFinished(
                run_id.to_string(),
                run.status.as_str(),
                "retried",
            ));
        }
        if run.status == RunStatus::Succeeded {
            return Err(EngineError::NothingToRetry(run_id.to_string()));
        }
        let mut params = run.run.params.clone();
        params.retain(|(k, _)| k != "retry_of");
        params.push(("retry_of".into(), run_id.to_string()));
        self.create(RunRequest {
            pipeline: run.run.pipeline.clone(),
            release: run.run.release.clone(),
            notes: run.run.notes.clone(),
            params,
            stages: Some(run.run.stages.clone()),
            started_by: by.to_string(),
        })
        .await
    }

    /// Take `environment` (by default the last stage of finished run
    /// `run_id`) back to the release of the pipeline's last successful run
    /// through it before `run_id`: a new run of that release, through the
    /// environment's strategy, gated like any other. The new run's id.
    pub async fn rollback(
        &self,
        run_id: &str,
        environment: Option<&str>,
        by: &str,
    ) -> Result<String, EngineError> {
        let (run, log) = self.store.run_with_log(run_id).await?;
        if !run.status.is_finished() {
            return Err(EngineError::NotFinished(
                run_id.to_string(),
                run.status.as_str(),
                "rolled back",
            ));
        }
        let environment = match environment {
            Some(e) if run.run.stages.iter().any(|s| s == e) => e.to_string(),
            Some(e) => {
                return Err(EngineError::NotInRun {
                    run: run_id.to_string(),
                    environment: e.to_string(),
                });
            }
            None => crate::position::acting_stage(&run.run.stages, &log)
                .unwrap_or_default()
                .to_string(),
        };
        let earlier = self
            .store
            .list_runs(&rollcage_store::RunFilter {
                pipeline: Some(run.run.pipeline.clone()),
                environment: Some(environment.clone()),
                status: Some(RunStatus::Succeeded),
                before: Some(run_id.to_string()),
                limit: 50,
                ..Default::default()
            })
            .await?;
        let previous = earlier
            .iter()
            .find(|r| r.run.release != run.run.release)
            .ok_or_else(|| EngineError::NoPreviousRelease {
                pipeline: run.run.pipeline.clone(),
                environment: environment.clone(),
            })?;
        self.create(RunRequest {
            pipeline: run.run.pipeline.clone(),
            release: previous.run.release.clone(),
            notes: Some(format!(
                "rollback of run {run_id} ({}) to {}",
                run.run.release, previous.run.release
            )),
            params: vec![
                ("rollback_of".into(), run_id.to_string()),
                ("rollback_to_run".into(), previous.id.clone()),
            ],
            stages: Some(vec![environment]),
            started_by: by.to_string(),
        })
        .await
    }

    /// Check a request and record the run (queued); its id. Nothing is
    /// recorded for an invalid request.
    pub async fn create(&self, req: RunRequest) -> Result<String, EngineError> {
        let pipeline = self
            .pipelines
            .get(&req.pipeline)
            .ok_or_else(|| EngineError::UnknownPipeline(req.pipeline.clone()))?;
        record(&*self.store, &pipeline.stages, &self.config_hash, req).await
    }

    /// Record a person's decision for a run. It goes through the store, so
    /// that whichever process (or host) drives the run takes it; an approval
    /// is accepted only while the run waits for one, and an abort while the
    /// run is not finished.
    pub async fn decide(&self, run_id: &str, decision: Decision) -> Result<(), EngineError> {
        let (run, log) = self.store.run_with_log(run_id).await?;
        self.decide_at(&run, &log, decision).await
    }

    /// [`Engine::decide`] on a run and its log as already read (by a caller
    /// that authorized the decision on that same position).
    pub async fn decide_at(
        &self,
        run: &rollcage_store::Run,
        log: &[rollcage_store::Event],
        decision: Decision,
    ) -> Result<(), EngineError> {
        let run_id = run.id.as_str();
        if run.status.is_finished() {
            return Err(EngineError::Finished(
                run_id.to_string(),
                run.status.as_str(),
            ));
        }
        // The stage the decision acts in, from the log: the run's summary
        // field can still name the previous stage.
        let stage = crate::position::acting_stage(&run.run.stages, log).map(str::to_string);
        let (action, by) = match &decision {
            Decision::Approve { by } => (DecisionAction::Approve, by),
            Decision::Abort { by } => (DecisionAction::Abort, by),
        };
        if action == DecisionAction::Approve {
            if run.status != RunStatus::AwaitingApproval {
                return Err(EngineError::NotWaiting(run_id.to_string()));
            }
            let env = stage.as_deref().and_then(|s| self.environments.get(s));
            if let Some(env) = env
                && env.require_different_approver
                && *by == run.run.started_by
            {
                return Err(EngineError::SameApprover {
                    environment: env.name.clone(),
                    by: by.clone(),
                });
            }
        }
        let request = DecisionRequest {
            action,
            by: by.clone(),
            stage: stage.clone(),
        };
        // The host driving the run takes it and records it in the log.
        self.store.request_decision(run_id, &request).await?;
        let action = match request.action {
            DecisionAction::Approve => "approve",
            DecisionAction::Abort => "abort",
        };
        self.audit(by, action, run_id, json!({"stage": stage}))
            .await?;
        Ok(())
    }

    /// Every unfinished run no live host drives, driven to its end here.
    pub async fn resume_all(self: &Arc<Self>) -> Result<Vec<(String, RunStatus)>, EngineError> {
        let mut out = Vec::new();
        loop {
            let sent = Instant::now();
            let Some(lease) = self.store.claim(None, 1).await?.pop() else {
                return Ok(out);
            };
            tracing::info!(run_id = %lease.run_id, "resuming run");
            let id = lease.run_id.clone();
            out.push((id, self.drive_claimed(lease, sent).await?));
        }
    }

    /// Start keeping this host's leases (and queued deliveries) alive, with
    /// no run yet: a host that delivers notifications calls it at start.
    pub fn keep_leases(&self) {
        self.leases.keep();
    }

    /// Whether the store answered the last renewal of this host's leases.
    pub fn store_healthy(&self) -> bool {
        self.leases.healthy()
    }

    /// Claim run `run_id` and drive it to its end, from wherever its log
    /// says it is. A finished run's status at once; a run another live
    /// host drives is [`EngineError::HeldElsewhere`].
    pub async fn execute(&self, run_id: &str) -> Result<RunStatus, EngineError> {
        let sent = Instant::now();
        match self.store.claim(Some(run_id), 1).await?.pop() {
            Some(lease) => self.drive_claimed(lease, sent).await,
            None => {
                let run = self.store.run(run_id).await?;
                if run.status.is_finished() {
                    return Ok(run.status);
                }
                let host = match self.store.holder(run_id).await? {
                    Some((host, _)) => host,
                    // Its lease ran out just now: the next claim gets it.
                    None => return Box::pin(self.execute(run_id)).await,
                };
                Err(EngineError::HeldElsewhere {
                    run: run_id.to_string(),
                    host,
                })
            }
        }
    }

    /// Drive a run this host claimed (the claim sent at `sent`) to its
    /// end, or until its lease is lost; then give the lease up.
    pub async fn drive_claimed(
        &self,
        lease: Lease,
        sent: Instant,
    ) -> Result<RunStatus, EngineError> {
        let held = self.hold(lease, sent);
        self.drive_held(held).await
    }

    /// Keep the lease of a run just claimed from now on, before the task
    /// that drives it starts: a lease renewed but held by no run is given
    /// up.
    pub fn hold(&self, lease: Lease, sent: Instant) -> HeldRun {
        HeldRun(self.leases.hold(lease, sent))
    }

    /// [`Engine::drive_claimed`] for a lease already held.
    pub async fn drive_held(&self, held: HeldRun) -> Result<RunStatus, EngineError> {
        let held = held.0;
        let run_id = held.lease.run_id.clone();
        let (tx, mut rx) = mpsc::channel(8);
        // Decisions are asked for through the store; carry them to the run.
        let carrier = tokio::spawn(carry_decisions(self.store.clone(), held.clone(), tx));
        // Every log line of the run (the engine's and its plugins') carries
        // the run id. A lost lease stops the drive where it is.
        // Biased: a drive that has ended wins over a halt raised meanwhile
        // (the decision carrier finds a finished run no longer this
        // host's, which is no reason to report it lost).
        let result = tokio::select! {
            biased;
            r = self
                .drive(&held, &mut rx)
                .instrument(tracing::info_span!("run", run_id = %run_id)) => r,
            why = held.halted() => Err(why),
        };
        carrier.abort();
        // A run this host just finished is no longer its own: the keeper's
        // next heartbeat (or a late write) reports it lost. It ended.
        let result = match result {
            Err(EngineError::Store(StoreError::Fenced { .. })) => {
                match self.store.run(&run_id).await {
                    Ok(run) if run.status.is_finished() => Ok(run.status),
                    _ => result,
                }
            }
            other => other,
        };
        match &result {
            Ok(_) => {}
            Err(EngineError::Store(StoreError::Fenced { .. })) => {
                tracing::warn!(run_id = %run_id, "another host drives the run now: stopped driving it here");
            }
            Err(e) => {
                tracing::warn!(run_id = %run_id, "stopped driving the run: {e}");
                // Left unfinished: any host may take it at once.
                if let Err(e) = self.store.release(&held.lease).await {
                    tracing::debug!(run_id = %run_id, "lease not given up: {e}");
                }
            }
        }
        result
    }

    /// Give up the lease of run `run_id` if it is driven here (an
    /// interrupted command), so another host may take it over at once.
    pub async fn give_up(&self, run_id: &str) {
        if let Some(lease) = self.leases.of(run_id) {
            self.release(&lease).await;
        }
    }

    /// Give up a run's lease (a clean stop), so another host may take it
    /// over at once.
    pub async fn release(&self, lease: &Lease) {
        if let Err(e) = self.store.release(lease).await {
            tracing::debug!(run_id = %lease.run_id, "lease not given up: {e}");
        }
    }

    async fn drive(
        &self,
        held: &Held,
        decisions: &mut mpsc::Receiver<Decision>,
    ) -> Result<RunStatus, EngineError> {
        let run_id = held.lease.run_id.as_str();
        let (run, log) = self.store.run_with_log(run_id).await?;
        if run.status.is_finished() {
            return Ok(run.status);
        }
        let pipeline = self
            .pipelines
            .get(&run.run.pipeline)
            .ok_or_else(|| EngineError::UnknownPipeline(run.run.pipeline.clone()))?;
        let release = Release {
            version: run.run.release.clone(),
            notes: run.run.notes.clone(),
            params: run.run.params.clone(),
        };
        let ctx = Notify {
            run_id: run_id.to_string(),
            pipeline: pipeline.name.clone(),
            release: release.clone(),
            redactor: self.redactor.clone(),
        };
        RunDriver {
            engine: self,
            held,
            run,
            log,
            pipeline,
            release,
            ctx,
            decisions,
        }
        .drive()
        .await
    }
}

/// Check a request for a pipeline of `stages` and record the run (queued)
/// with its audit line; its id. Nothing is recorded for an invalid
/// request. [`Engine::create`] without an engine: a command that must
/// queue a run before it can start a host.
pub async fn record(
    store: &dyn Store,
    stages: &[String],
    config_hash: &str,
    req: RunRequest,
) -> Result<String, EngineError> {
    req.release
        .parse::<Version>()
        .map_err(|_| EngineError::InvalidRelease(req.release.clone()))?;
    let stages = match &req.stages {
        None => stages.to_vec(),
        Some(wanted) => {
            if wanted.is_empty() {
                return Err(EngineError::NoStages);
            }
            for (i, s) in wanted.iter().enumerate() {
                if wanted[..i].contains(s) {
                    return Err(EngineError::DuplicateStage(s.clone()));
                }
                if !stages.contains(s) {
                    return Err(EngineError::UnknownStage {
                        pipeline: req.pipeline.clone(),
                        stage: s.clone(),
                    });
                }
            }
            stages
                .iter()
                .filter(|s| wanted.contains(s))
                .cloned()
                .collect()
        }
    };
    let detail = json!({
        "pipeline": req.pipeline,
        "release": req.release,
        "stages": stages,
        "params": req.params,
    });
    let by = req.started_by.clone();
    let id = store
        .create_run(rollcage_store::NewRun {
            pipeline: req.pipeline,
            release: req.release,
            notes: req.notes,
            params: req.params,
            stages,
            started_by: req.started_by,
            config_hash: config_hash.to_string(),
        })
        .await?;
    store
        .record_audit(rollcage_store::NewAudit {
            actor: by,
            action: "start".into(),
            run_id: Some(id.clone()),
            config_hash: config_hash.to_string(),
            detail,
        })
        .await?;
    Ok(id)
}

/// Take the decisions asked for run `held` as the store wakes it (or now
/// and then), record each in the run's log, and pass on those that still
/// apply.
async fn carry_decisions(store: Arc<dyn Store>, held: Arc<Held>, tx: mpsc::Sender<Decision>) {
    let run_id = held.lease.run_id.clone();
    let mut woken = store.wakeups();
    loop {
        match store.take_decisions(&held.lease).await {
            Ok(taken) => {
                for d in taken {
                    if !still_applies(&*store, &held.lease, &d).await {
                        continue;
                    }
                    match store
                        .append(&held.lease, "decision", d.stage.as_deref(), json!(d))
                        .await
                    {
                        Ok(_) => {}
                        // Not this host's run any more, or finished: the
                        // keeper and the drive's own writes say which.
                        Err(StoreError::Fenced { .. }) => return,
                        Err(e) => {
                            held.halt(e.into());
                            return;
                        }
                    }
                    let decision = match d.action {
                        DecisionAction::Approve => Decision::Approve { by: d.by },
                        DecisionAction::Abort => Decision::Abort { by: d.by },
                    };
                    if tx.send(decision).await.is_err() {
                        return;
                    }
                }
            }
            // The run finished, or another host took it: nothing left to
            // carry. A lost lease is the keeper's to report (and every write
            // of the drive is refused); a run that just ended is not lost.
            Err(StoreError::Fenced { .. }) => return,
            Err(e) => tracing::warn!(run_id = %run_id, "cannot read decisions: {e}"),
        }
        let _ = tokio::time::timeout(DECISION_FALLBACK, async {
            loop {
                match woken.recv().await {
                    Ok(Wake::Decision(id)) if id == run_id => return,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                    Ok(_) => continue,
                }
            }
        })
        .await;
    }
}

/// Whether decision `d`, taken from the store for the run of `lease`, is
/// for the stage the run is in now. One that is not (the run moved on
/// between the decision's authorization and now) is dropped, and the log
/// says so.
async fn still_applies(store: &dyn Store, lease: &Lease, d: &DecisionRequest) -> bool {
    let run_id = lease.run_id.as_str();
    let Some(wanted) = d.stage.as_deref() else {
        return true;
    };
    let (run, log) = match store.run_with_log(run_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(run_id = %run_id, "cannot read the run for a decision: {e}");
            return false;
        }
    };
    let now = crate::position::acting_stage(&run.run.stages, &log);
    if now == Some(wanted) {
        return true;
    }
    tracing::warn!(run_id = %run_id, by = %d.by, "decision for `{wanted}` dropped: the run is in {now:?}");
    let _ = store
        .append(
            lease,
            "decision-dropped",
            Some(wanted),
            json!({"decision": d, "reason": "the run moved on to another stage"}),
        )
        .await;
    false
}

/// Run `jobs` in order; the first that fails stops the rest.
pub(crate) async fn run_jobs(
    provider: &dyn EnvironmentProvider,
    target: &Target,
    jobs: &[Job],
) -> Result<(), String> {
    for job in jobs {
        match provider.run_job(target, job).await {
            Ok(r) if r.exit_code == 0 => {}
            Ok(r) => {
                let tail: String = r
                    .output
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(format!(
                    "job `{}` exited with {}: {tail}",
                    job.name, r.exit_code
                ));
            }
            Err(e) => return Err(format!("job `{}`: {e}", job.name)),
        }
    }
    Ok(())
}

/// The facts every notification of a run carries.
pub(crate) struct Notify {
    run_id: String,
    pipeline: String,
    release: Release,
    /// Reasons and values come from plugins: no secret reaches a notifier.
    redactor: Arc<Redactor>,
}

impl Notify {
    pub(crate) fn event(
        &self,
        kind: EventKind,
        stage: Option<&str>,
        message: String,
        fields: Vec<(String, String)>,
    ) -> Event {
        Event {
            kind,
            run_id: self.run_id.clone(),
            pipeline: self.pipeline.clone(),
            environment: stage.map(str::to_string),
            release: self.release.clone(),
            message: self.redactor.redact(&message).into_owned(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k, self.redactor.redact(&v).into_owned()))
                .collect(),
            url: None,
            timestamp_ms: (unix_now() * 1000),
        }
    }
}

/// Writes a stage's events to the run's log, and queues notifications of
/// traffic changes, failed analyses and approvals. An event it cannot
/// record (the store refused or failed) halts the run right there: the
/// stage never goes on to an action whose intent is not in the log.
pub(crate) struct StoreSink<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) held: &'a Held,
    pub(crate) stage: &'a str,
    pub(crate) ctx: &'a Notify,
    pub(crate) pipeline_notify: &'a Dispatcher,
    pub(crate) env_notify: &'a Dispatcher,
    /// The steps are those of a rollback after promotion
    /// ([`crate::stage::StageRun::restore`]): logged as `restore-intent`
    /// and `restore-step`, apart from the strategy's own history.
    pub(crate) restoring: bool,
}

impl StoreSink<'_> {
    /// Halt the run for `e` and never return: the drive is dropped by the
    /// run's halt signal.
    async fn halt(&self, e: EngineError) -> ! {
        self.held.halt(e);
        std::future::pending().await
    }

    async fn append(&mut self, kind: &str, data: serde_json::Value) {
        // An intent announces an outside action: the lease must have time
        // left for it.
        if (kind == "intent" || kind == "restore-intent")
            && let Err(e) = self.held.check().await
        {
            self.halt(e).await;
        }
        if let Err(e) = self
            .engine
            .store
            .append(&self.held.lease, kind, Some(self.stage), data)
            .await
        {
            self.halt(e.into()).await;
        }
    }

    async fn set_status(&mut self, status: RunStatus) {
        if let Err(e) = self
            .engine
            .store
            .set_status(&self.held.lease, status, Some(self.stage), None)
            .await
        {
            self.halt(e.into()).await;
        }
    }

    /// Queue an event for the notifiers; the stage does not wait for them.
    async fn notify(&mut self, kind: EventKind, message: String, fields: Vec<(String, String)>) {
        let event = self.ctx.event(kind, Some(self.stage), message, fields);
        for d in [self.pipeline_notify, self.env_notify] {
            if let Err(e) = d.send(&event).await {
                self.halt(e.into()).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl StageSink for StoreSink<'_> {
    async fn emit(&mut self, event: StageEvent) {
        match event {
            StageEvent::Intent(action) if self.restoring => {
                self.append("restore-intent", json!(action)).await
            }
            StageEvent::Intent(action) => self.append("intent", json!(action)).await,
            StageEvent::Step(record) => {
                let kind = if self.restoring {
                    "restore-step"
                } else {
                    "step"
                };
                self.append(kind, json!(record)).await;
                // A person answered: the run moves again.
                if matches!(record.action, Action::Pause { .. } | Action::Analyze(_)) {
                    self.set_status(RunStatus::Running).await;
                }
                if let (Action::Expose(c), Outcome::Ok) = (&record.action, &record.outcome) {
                    self.notify(
                        EventKind::Step,
                        format!("flag {} exposed to {}%", c.flag, c.percent),
                        vec![("flag".into(), c.flag.clone())],
                    )
                    .await;
                }
                if let (Action::Route { weights }, Outcome::Ok) = (&record.action, &record.outcome)
                {
                    let split = weights
                        .iter()
                        .map(|w| format!("{}={}%", w.slot, w.weight))
                        .collect::<Vec<_>>()
                        .join(" ");
                    self.notify(
                        EventKind::Step,
                        format!("traffic {split}"),
                        vec![("traffic".into(), split.clone())],
                    )
                    .await;
                }
            }
            StageEvent::Analysis(report) => {
                let measurements: Vec<serde_json::Value> = report
                    .measurements
                    .iter()
                    .map(|t| match &t.result {
                        // The threshold and comparison go beside the value,
                        // so that a chart can draw what it was judged against.
                        Ok(m) => json!({"check": t.check.as_str(), "verdict": m.verdict, "value": m.value, "detail": m.detail, "threshold": t.threshold}),
                        Err(e) => json!({"check": t.check.as_str(), "error": e}),
                    })
                    .collect();
                let outcome = format!("{:?}", report.outcome);
                self.append(
                    "analysis",
                    json!({"outcome": outcome, "measurements": measurements}),
                )
                .await;
                if let analysis::Outcome::Failed(why) | analysis::Outcome::Error(why) =
                    &report.outcome
                {
                    let values: Vec<(String, String)> = report
                        .measurements
                        .iter()
                        .filter_map(|t| {
                            t.result
                                .as_ref()
                                .ok()
                                .and_then(|m| m.value.map(|v| (t.check.to_string(), v.to_string())))
                        })
                        .collect();
                    self.notify(EventKind::AnalysisFailed, why.clone(), values)
                        .await;
                }
            }
            StageEvent::AwaitingApproval(why) => {
                self.append("awaiting-approval", json!({"gate": "step", "why": why}))
                    .await;
                self.set_status(RunStatus::AwaitingApproval).await;
                self.notify(EventKind::AwaitingApproval, why, vec![]).await;
            }
            StageEvent::RollingBack(reason) => {
                self.append("rolling-back", json!({"reason": reason})).await
            }
            StageEvent::RollbackStep(action) => {
                self.append("rollback-step", json!(action)).await;
                if let Action::Expose(c) = &action {
                    self.notify(
                        EventKind::Step,
                        format!("flag {} restored to {}%", c.flag, c.percent),
                        vec![("flag".into(), c.flag.clone())],
                    )
                    .await;
                }
            }
            StageEvent::ExposureBefore(before) => {
                self.append("exposure-before", json!(before)).await
            }
        }
    }
}

#[cfg(test)]
mod tests;
