//! A run: a release taken through a pipeline's stages in order. Per stage:
//! the environment lock (one run per environment), the window gate, the
//! approval gate, `prepare`, pre-deploy jobs, the strategy loop, post-deploy
//! jobs. A stage that does not succeed stops the run. Everything is appended
//! to the run's log in the store as it happens, and the log is all a
//! restarted engine needs to resume: finished stages are skipped and the
//! stage in progress continues from its recorded steps. Notifications are
//! queued (`rollcage_notify`) and the run goes on at once; each delivery's
//! `notification` entry is appended when it ends, maybe after the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rollcage_core::{
    Action, EnvironmentProvider, Event, EventKind, HealthCheck, Job, Outcome, Redactor, Release,
    StepRecord, Strategy, Target, Version, Window,
};
use rollcage_notify::Dispatcher;
use rollcage_store::{DecisionAction, DecisionRequest, RunStatus, Store, StoreError};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::analysis::{self, AnalysisSpec};
use crate::stage::{Decision, Stage, StageEvent, StageResult, StageRun, StageSink};

/// How often a run looks for decisions asked for through the store.
const DECISION_POLL: Duration = Duration::from_millis(200);

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
    pub notify: Dispatcher,
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Takes runs through pipelines.
pub struct Engine {
    store: Arc<dyn Store>,
    environments: BTreeMap<String, Arc<EnvironmentPlan>>,
    pipelines: BTreeMap<String, PipelinePlan>,
    locks: BTreeMap<String, Arc<tokio::sync::Mutex<()>>>,
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
        let locks = environments
            .iter()
            .map(|e| (e.name.clone(), Arc::default()))
            .collect();
        Engine {
            store,
            environments: environments
                .into_iter()
                .map(|e| (e.name.clone(), Arc::new(e)))
                .collect(),
            pipelines: pipelines.into_iter().map(|p| (p.name.clone(), p)).collect(),
            locks,
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
        req.release
            .parse::<Version>()
            .map_err(|_| EngineError::InvalidRelease(req.release.clone()))?;
        let stages = match &req.stages {
            None => pipeline.stages.clone(),
            Some(wanted) => {
                if wanted.is_empty() {
                    return Err(EngineError::NoStages);
                }
                for (i, s) in wanted.iter().enumerate() {
                    if wanted[..i].contains(s) {
                        return Err(EngineError::DuplicateStage(s.clone()));
                    }
                    if !pipeline.stages.contains(s) {
                        return Err(EngineError::UnknownStage {
                            pipeline: pipeline.name.clone(),
                            stage: s.clone(),
                        });
                    }
                }
                pipeline
                    .stages
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
        let id = self
            .store
            .create_run(rollcage_store::NewRun {
                pipeline: req.pipeline,
                release: req.release,
                notes: req.notes,
                params: req.params,
                stages,
                started_by: req.started_by,
                config_hash: self.config_hash.clone(),
            })
            .await?;
        self.audit(&by, "start", &id, detail).await?;
        Ok(id)
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
        self.store.request_decision(run_id, &request).await?;
        self.store
            .append(run_id, "decision", stage.as_deref(), json!(request))
            .await?;
        let action = match request.action {
            DecisionAction::Approve => "approve",
            DecisionAction::Abort => "abort",
        };
        self.audit(by, action, run_id, json!({"stage": stage}))
            .await?;
        Ok(())
    }

    /// Every run the store has not seen finish, driven to its end.
    pub async fn resume_all(self: &Arc<Self>) -> Result<Vec<(String, RunStatus)>, EngineError> {
        let mut out = Vec::new();
        for run in self.store.unfinished_runs().await? {
            tracing::info!(run_id = %run.id, "resuming run");
            out.push((run.id.clone(), self.execute(&run.id).await?));
        }
        Ok(out)
    }

    /// Drive run `run_id` to its end, from wherever its log says it is.
    pub async fn execute(&self, run_id: &str) -> Result<RunStatus, EngineError> {
        let (tx, mut rx) = mpsc::channel(8);
        // Decisions are asked for through the store; carry them to the run.
        let (store, id) = (self.store.clone(), run_id.to_string());
        let poller = tokio::spawn(async move {
            loop {
                match store.take_decisions(&id).await {
                    Ok(taken) => {
                        for d in taken {
                            if !still_applies(&*store, &id, &d).await {
                                continue;
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
                    Err(e) => tracing::warn!(run_id = %id, "cannot read decisions: {e}"),
                }
                tokio::time::sleep(DECISION_POLL).await;
            }
        });
        // Every log line of the run (the engine's and its plugins') carries
        // the run id.
        let result = self
            .drive(run_id, &mut rx)
            .instrument(tracing::info_span!("run", run_id = %run_id))
            .await;
        poller.abort();
        result
    }

    async fn drive(
        &self,
        run_id: &str,
        decisions: &mut mpsc::Receiver<Decision>,
    ) -> Result<RunStatus, EngineError> {
        let run = self.store.run(run_id).await?;
        if run.status.is_finished() {
            return Ok(run.status);
        }
        let log = self.store.events(run_id, 0).await?;
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
        let has = |kind: &str, stage: Option<&str>| {
            log.iter()
                .any(|e| e.kind == kind && e.stage.as_deref() == stage)
        };
        self.store
            .set_status(run_id, RunStatus::Running, None, None)
            .await?;
        if !has("run-started", None) {
            self.store
                .append(run_id, "run-started", None, json!({"by": run.run.started_by, "config_hash": run.run.config_hash, "stages": run.run.stages}))
                .await?;
            let event = ctx.event(
                EventKind::RunStarted,
                None,
                format!("started by {}", run.run.started_by),
                vec![],
            );
            pipeline.notify.send(&event).await?;
        }
        for stage_name in &run.run.stages {
            if has("stage-finished", Some(stage_name)) {
                continue;
            }
            let env = self.environments[stage_name].clone();
            // The run's summary says which stage it is in from the moment
            // the stage begins (waiting for its lock, window or approval).
            if run.stage.as_deref() != Some(stage_name.as_str()) {
                self.store
                    .set_status(run_id, RunStatus::Running, Some(stage_name), None)
                    .await?;
            }
            // Queue the event for the pipeline's and the environment's
            // notifiers; each delivery is logged when it ends.
            let tell = |kind: EventKind, message: String| {
                let event = ctx.event(kind, Some(stage_name), message, vec![]);
                let (p, e) = (pipeline.notify.clone(), env.notify.clone());
                async move {
                    p.send(&event).await?;
                    e.send(&event).await?;
                    Ok::<_, EngineError>(())
                }
            };
            let finish = |status: RunStatus, reason: String| async move {
                self.store
                    .set_status(run_id, status, Some(stage_name), Some(&reason))
                    .await?;
                Ok::<_, EngineError>(status)
            };

            // Refused before anything was touched: logged, told, failed.
            let refuse = |reason: String| async move {
                self.store
                    .append(
                        run_id,
                        "refused",
                        Some(stage_name),
                        json!({"reason": reason}),
                    )
                    .await?;
                tell(EventKind::Failed, reason.clone()).await?;
                finish(RunStatus::Failed, reason).await
            };

            // The stage failed before its strategy ran: logged, told, failed.
            let fail_stage = |reason: String| async move {
                self.store
                    .append(
                        run_id,
                        "stage-finished",
                        Some(stage_name),
                        json!({"result": "failed", "reason": reason}),
                    )
                    .await?;
                tell(EventKind::Failed, reason.clone()).await?;
                finish(RunStatus::Failed, reason).await
            };

            // One run per environment at a time.
            let lock = self.locks[stage_name].clone();
            let _guard = if env.refuse_when_busy {
                match lock.try_lock_owned() {
                    Ok(g) => g,
                    Err(_) => {
                        return refuse(format!(
                            "environment `{stage_name}` is busy with another run"
                        ))
                        .await;
                    }
                }
            } else {
                lock.lock_owned().await
            };

            if let Some(window) = &env.window {
                let wait = window.wait_secs((self.clock)());
                if wait > 0 {
                    if env.refuse_outside_window {
                        return refuse(format!(
                            "environment `{stage_name}` is outside its window `{window}`"
                        ))
                        .await;
                    }
                    self.store
                        .append(
                            run_id,
                            "waiting-for-window",
                            Some(stage_name),
                            json!({"window": window.to_string(), "seconds": wait}),
                        )
                        .await?;
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
            }

            if env.approval && !has("approved", Some(stage_name)) {
                self.store
                    .set_status(run_id, RunStatus::AwaitingApproval, Some(stage_name), None)
                    .await?;
                self.store
                    .append(
                        run_id,
                        "awaiting-approval",
                        Some(stage_name),
                        json!({"gate": "stage"}),
                    )
                    .await?;
                tell(
                    EventKind::AwaitingApproval,
                    format!("{stage_name} waits for approval"),
                )
                .await?;
                match decisions.recv().await {
                    Some(Decision::Approve { by }) => {
                        self.store
                            .append(run_id, "approved", Some(stage_name), json!({"by": by}))
                            .await?;
                        self.store
                            .set_status(run_id, RunStatus::Running, Some(stage_name), None)
                            .await?;
                    }
                    Some(Decision::Abort { by }) => {
                        let reason = format!("aborted by {by} before {stage_name} started");
                        self.store
                            .append(run_id, "aborted", Some(stage_name), json!({"by": by}))
                            .await?;
                        return finish(RunStatus::Failed, reason).await;
                    }
                    None => {
                        return finish(RunStatus::Failed, "the engine is shutting down".into())
                            .await;
                    }
                }
            }

            let target = Target {
                environment: stage_name.clone(),
                service: pipeline.service.clone(),
                service_spec: pipeline.service_spec.clone(),
            };
            // The stable release is read once, when the stage starts, and
            // kept in the log so that a resumed stage sees the same one.
            let stable: Option<Release> = match log.iter().find(|e| {
                e.kind == "stage-started" && e.stage.as_deref() == Some(stage_name.as_str())
            }) {
                Some(e) => e.data["stable"].as_str().map(Release::new),
                None => {
                    if let Err(e) = env.provider.prepare(&target).await {
                        return fail_stage(e.to_string()).await;
                    }
                    let status = env.provider.status(&target).await.ok();
                    let stable = status.and_then(|s| {
                        s.weights
                            .iter()
                            .max_by_key(|w| w.weight)
                            .and_then(|w| s.slot(&w.slot).map(|slot| slot.release.clone()))
                    });
                    self.store
                        .append(
                            run_id,
                            "stage-started",
                            Some(stage_name),
                            json!({"stable": stable}),
                        )
                        .await?;
                    tell(EventKind::StageStarted, format!("{stage_name} started")).await?;
                    stable.map(Release::new)
                }
            };

            if !has("pre-jobs-done", Some(stage_name)) {
                if let Err(reason) = run_jobs(&*env.provider, &target, &env.pre_jobs).await {
                    return fail_stage(reason).await;
                }
                self.store
                    .append(run_id, "pre-jobs-done", Some(stage_name), json!({}))
                    .await?;
            }

            let history: Vec<StepRecord> = log
                .iter()
                .filter(|e| e.kind == "step" && e.stage.as_deref() == Some(stage_name.as_str()))
                .filter_map(|e| serde_json::from_value(e.data.clone()).ok())
                .collect();
            // An intent with no step after it was in flight at a crash.
            let in_flight_since_ms = log
                .iter()
                .rev()
                .filter(|e| e.stage.as_deref() == Some(stage_name.as_str()))
                .find(|e| e.kind == "intent" || e.kind == "step")
                .filter(|e| e.kind == "intent")
                .map(|e| e.at_ms);
            let stage = Stage {
                target: target.clone(),
                provider: env.provider.clone(),
                strategy: env.strategy.clone(),
                checks: env.checks.clone(),
                default_checks: env.default_checks.clone(),
                analysis: env.analysis,
                progress_deadline: env.progress_deadline,
                readiness_poll: env.readiness_poll,
                params: env.strategy_params.clone(),
                replicas: env.replicas,
            };
            let mut sink = StoreSink {
                engine: self,
                run_id,
                stage: stage_name,
                ctx: &ctx,
                pipeline_notify: &pipeline.notify,
                env_notify: &env.notify,
                failed: None,
            };
            let (result, _) = StageRun {
                stage: &stage,
                release: release.clone(),
                stable,
                history,
                events: &mut sink,
                decisions,
                in_flight_since_ms,
                early: None,
            }
            .run()
            .instrument(tracing::info_span!("stage", stage = %stage_name))
            .await;
            if let Some(e) = sink.failed {
                return Err(e);
            }
            let result = match result {
                StageResult::Succeeded => {
                    match run_jobs(&*env.provider, &target, &env.post_jobs).await {
                        Ok(()) => StageResult::Succeeded,
                        Err(reason) => StageResult::Failed { reason },
                    }
                }
                other => other,
            };
            let (status, kind, reason) = match &result {
                StageResult::Succeeded => {
                    self.store
                        .append(
                            run_id,
                            "stage-finished",
                            Some(stage_name),
                            json!({"result": "succeeded"}),
                        )
                        .await?;
                    continue;
                }
                StageResult::RolledBack { reason } => {
                    (RunStatus::RolledBack, EventKind::RolledBack, reason.clone())
                }
                StageResult::Failed { reason } => {
                    (RunStatus::Failed, EventKind::Failed, reason.clone())
                }
            };
            let label = if status == RunStatus::RolledBack {
                "rolled_back"
            } else {
                "failed"
            };
            self.store
                .append(
                    run_id,
                    "stage-finished",
                    Some(stage_name),
                    json!({"result": label, "reason": reason}),
                )
                .await?;
            tell(kind, reason.clone()).await?;
            return finish(status, reason).await;
        }
        // The status is written last, on every path: a reader that sees a
        // run finished has every entry of its log (the live stream ends on
        // it) but the `notification` entries of deliveries still queued,
        // which land when they end. A crash before it queues the
        // notification again, not the entry.
        if !has("run-finished", None) {
            let event = ctx.event(
                EventKind::Succeeded,
                None,
                format!("{} is live in every stage", release.version),
                vec![],
            );
            pipeline.notify.send(&event).await?;
            self.store
                .append(run_id, "run-finished", None, json!({"result": "succeeded"}))
                .await?;
        }
        self.store
            .set_status(run_id, RunStatus::Succeeded, None, None)
            .await?;
        Ok(RunStatus::Succeeded)
    }
}

/// Whether decision `d`, taken from the store for run `run_id`, is for the
/// stage the run is in now. One that is not (the run moved on between the
/// decision's authorization and now) is dropped, and the log says so.
async fn still_applies(store: &dyn Store, run_id: &str, d: &DecisionRequest) -> bool {
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
            run_id,
            "decision-dropped",
            Some(wanted),
            json!({"decision": d, "reason": "the run moved on to another stage"}),
        )
        .await;
    false
}

/// Run `jobs` in order; the first that fails stops the rest.
async fn run_jobs(
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
struct Notify {
    run_id: String,
    pipeline: String,
    release: Release,
    /// Reasons and values come from plugins: no secret reaches a notifier.
    redactor: Arc<Redactor>,
}

impl Notify {
    fn event(
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
/// traffic changes, failed analyses and approvals.
struct StoreSink<'a> {
    engine: &'a Engine,
    run_id: &'a str,
    stage: &'a str,
    ctx: &'a Notify,
    pipeline_notify: &'a Dispatcher,
    env_notify: &'a Dispatcher,
    /// The first store error: the stage cannot be recorded (or its
    /// notifications queued), so the run stops.
    failed: Option<EngineError>,
}

impl StoreSink<'_> {
    async fn append(&mut self, kind: &str, data: serde_json::Value) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self
            .engine
            .store
            .append(self.run_id, kind, Some(self.stage), data)
            .await
        {
            self.failed = Some(e.into());
        }
    }

    /// Queue an event for the notifiers; the stage does not wait for them.
    async fn notify(&mut self, kind: EventKind, message: String, fields: Vec<(String, String)>) {
        let event = self.ctx.event(kind, Some(self.stage), message, fields);
        for d in [self.pipeline_notify, self.env_notify] {
            if let Err(e) = d.send(&event).await {
                self.failed.get_or_insert(e.into());
            }
        }
    }
}

#[async_trait::async_trait]
impl StageSink for StoreSink<'_> {
    async fn emit(&mut self, event: StageEvent) {
        match event {
            StageEvent::Intent(action) => self.append("intent", json!(action)).await,
            StageEvent::Step(record) => {
                self.append("step", json!(record)).await;
                // A person answered: the run moves again.
                if matches!(record.action, Action::Pause { .. } | Action::Analyze(_))
                    && let Err(e) = self
                        .engine
                        .store
                        .set_status(self.run_id, RunStatus::Running, Some(self.stage), None)
                        .await
                {
                    self.failed.get_or_insert(e.into());
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
                        Ok(m) => json!({"check": t.check.as_str(), "verdict": m.verdict, "value": m.value, "detail": m.detail}),
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
                if let Err(e) = self
                    .engine
                    .store
                    .set_status(
                        self.run_id,
                        RunStatus::AwaitingApproval,
                        Some(self.stage),
                        None,
                    )
                    .await
                {
                    self.failed.get_or_insert(e.into());
                }
                self.notify(EventKind::AwaitingApproval, why, vec![]).await;
            }
            StageEvent::RollingBack(reason) => {
                self.append("rolling-back", json!({"reason": reason})).await
            }
            StageEvent::RollbackStep(action) => self.append("rollback-step", json!(action)).await,
        }
    }
}

#[cfg(test)]
mod tests;
