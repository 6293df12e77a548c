//! A run driven through its stages, one gate at a time. Each stage passes
//! the same gates in order: begin, environment lock, window, approval,
//! prepare, pre-deploy jobs, strategy, bake, post-deploy jobs, finish. A
//! bake or a post-deploy job that fails after promotion takes the stage
//! back to the release live before it (restore), without the slot the
//! promotion removed: the previous release is deployed again the way the
//! strategy deploys any release. A gate is
//! small and resumable on its own: it reads what the run's log says it did
//! already (a restarted host skips what is done) and either lets the stage
//! go on ([`Flow::Next`]) or ends the run ([`Flow::End`]). Every write is
//! made under the run's lease, and every outside action (prepare, a job, a
//! strategy step) is preceded by a check that the lease has time left.

use std::sync::Arc;
use std::time::Duration;

use rollcage_core::{CheckTarget, EventKind, HealthCheck, Job, Release, StepRecord, Target};
use rollcage_store::{EnvLock, Event, Run, RunStatus, Wake};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::bake::{self, Mark};
use crate::lease::Held;
use crate::run::{Engine, EngineError, EnvironmentPlan, Notify, PipelinePlan, StoreSink, run_jobs};
use crate::stage::{Decision, FlagBefore, Stage, StageEvent, StageResult, StageRun, StageSink};

/// How often a run waiting for an environment looks again when nothing
/// woke it (another host's unlock is heard through the store; this is
/// the fallback).
const LOCK_RETRY: Duration = Duration::from_secs(1);

/// How often a rollback after promotion looks whether the previous
/// release's instances are ready (at most; the environment's own poll when
/// that is shorter).
const RESTORE_READINESS_POLL: Duration = Duration::from_millis(50);

/// What a gate lets happen next.
pub(crate) enum Flow {
    /// On to the next gate.
    Next,
    /// The run ends with this status.
    End(RunStatus),
}

/// One run being driven: what every gate works with.
pub(crate) struct RunDriver<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) held: &'a Held,
    pub(crate) run: Run,
    pub(crate) log: Vec<Event>,
    pub(crate) pipeline: &'a PipelinePlan,
    pub(crate) release: Release,
    pub(crate) ctx: Notify,
    pub(crate) decisions: &'a mut mpsc::Receiver<Decision>,
}

/// One stage of the run, passing its gates.
struct StageGates<'s> {
    name: &'s str,
    env: Arc<EnvironmentPlan>,
    target: Target,
    /// The release live before the stage, once `prepare` read it.
    stable: Option<Release>,
    /// The release a failure after promotion goes back to: the last one
    /// the store saw succeed here, else `stable`; read once by `prepare`.
    previous: Option<Release>,
}

/// Whether a promoted release stays.
enum Kept {
    Yes,
    /// No: roll back to the previous release, for this reason.
    Revert(String),
}

impl RunDriver<'_> {
    fn has(&self, kind: &str, stage: Option<&str>) -> bool {
        self.log
            .iter()
            .any(|e| e.kind == kind && e.stage.as_deref() == stage)
    }

    async fn append(
        &self,
        kind: &str,
        stage: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, EngineError> {
        Ok(self
            .engine
            .store()
            .append(&self.held.lease, kind, stage, data)
            .await?)
    }

    async fn status(
        &self,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), EngineError> {
        Ok(self
            .engine
            .store()
            .set_status(&self.held.lease, status, stage, reason)
            .await?)
    }

    /// An outside action may start: the lease has a quarter of its time
    /// left (else the run halts, resumable by whichever host takes it).
    async fn may_act(&self) -> Result<(), EngineError> {
        self.held.check().await
    }

    /// Queue the event for the pipeline's and the environment's notifiers;
    /// each delivery is logged when it ends.
    async fn tell(
        &self,
        stage: &StageGates<'_>,
        kind: EventKind,
        message: String,
    ) -> Result<(), EngineError> {
        let event = self.ctx.event(kind, Some(stage.name), message, vec![]);
        self.pipeline.notify.send(&event).await?;
        stage.env.notify.send(&event).await?;
        Ok(())
    }

    /// End the run with `status` in `stage`.
    async fn finish(
        &self,
        stage: &StageGates<'_>,
        status: RunStatus,
        reason: String,
    ) -> Result<Flow, EngineError> {
        self.status(status, Some(stage.name), Some(&reason)).await?;
        Ok(Flow::End(status))
    }

    /// Refused before anything was touched: logged, told, failed.
    async fn refuse(&self, stage: &StageGates<'_>, reason: String) -> Result<Flow, EngineError> {
        self.append("refused", Some(stage.name), json!({"reason": reason}))
            .await?;
        self.tell(stage, EventKind::Failed, reason.clone()).await?;
        self.finish(stage, RunStatus::Failed, reason).await
    }

    /// The stage failed before its strategy ran: logged, told, failed.
    async fn fail_stage(
        &self,
        stage: &StageGates<'_>,
        reason: String,
    ) -> Result<Flow, EngineError> {
        self.append(
            "stage-finished",
            Some(stage.name),
            json!({"result": "failed", "reason": reason}),
        )
        .await?;
        self.tell(stage, EventKind::Failed, reason.clone()).await?;
        self.finish(stage, RunStatus::Failed, reason).await
    }

    /// Drive the run from wherever its log says it is to its end.
    pub(crate) async fn drive(mut self) -> Result<RunStatus, EngineError> {
        self.status(RunStatus::Running, None, None).await?;
        if !self.has("run-started", None) {
            let run = &self.run.run;
            self.append(
                "run-started",
                None,
                json!({"by": run.started_by, "config_hash": run.config_hash, "stages": run.stages}),
            )
            .await?;
            let event = self.ctx.event(
                EventKind::RunStarted,
                None,
                format!("started by {}", run.started_by),
                vec![],
            );
            self.pipeline.notify.send(&event).await?;
        }
        for name in self.run.run.stages.clone() {
            let env = self.engine.environment(&name).cloned().ok_or_else(|| {
                EngineError::UnknownStage {
                    pipeline: self.pipeline.name.clone(),
                    stage: name.clone(),
                }
            })?;
            let mut stage = StageGates {
                name: &name,
                target: Target {
                    environment: name.clone(),
                    service: self.pipeline.service.clone(),
                    service_spec: self.pipeline.service_spec.clone(),
                },
                env,
                stable: None,
                previous: None,
            };
            if self.has("stage-finished", Some(&name)) {
                // Finished before a crash that came before its unlock.
                self.engine
                    .store()
                    .unlock_environment(&self.held.lease, &name)
                    .await?;
                continue;
            }
            if let Flow::End(status) = self.stage(&mut stage).await? {
                return Ok(status);
            }
        }
        // The status is written last, on every path: a reader that sees a
        // run finished has every entry of its log (the live stream ends on
        // it) but the `notification` entries of deliveries still queued,
        // which land when they end. A crash before it queues the
        // notification again, not the entry.
        if !self.has("run-finished", None) {
            let event = self.ctx.event(
                EventKind::Succeeded,
                None,
                format!("{} is live in every stage", self.release.version),
                vec![],
            );
            self.pipeline.notify.send(&event).await?;
            self.append("run-finished", None, json!({"result": "succeeded"}))
                .await?;
        }
        self.status(RunStatus::Succeeded, None, None).await?;
        Ok(RunStatus::Succeeded)
    }

    /// One stage through its gates.
    async fn stage(&mut self, stage: &mut StageGates<'_>) -> Result<Flow, EngineError> {
        self.begin(stage).await?;
        for gate in [
            Gate::Lock,
            Gate::Window,
            Gate::Approval,
            Gate::Prepare,
            Gate::PreJobs,
        ] {
            let flow = match gate {
                Gate::Lock => self.lock(stage).await?,
                Gate::Window => self.window(stage).await?,
                Gate::Approval => self.approval(stage).await?,
                Gate::Prepare => self.prepare(stage).await?,
                Gate::PreJobs => self.pre_jobs(stage).await?,
            };
            if let Flow::End(status) = flow {
                return Ok(Flow::End(status));
            }
        }
        // A stage whose log goes past its strategy was promoted already.
        let result = if self.promoted(stage.name) {
            StageResult::Succeeded
        } else {
            self.strategy(stage).await?
        };
        if result != StageResult::Succeeded {
            return self.conclude(stage, result).await;
        }
        let kept = match self.reverting(stage.name) {
            Some(reason) => Kept::Revert(reason),
            None => match self.bake(stage).await? {
                Kept::Yes => self.post_jobs(stage).await?,
                revert => revert,
            },
        };
        let result = match kept {
            Kept::Yes => StageResult::Succeeded,
            Kept::Revert(reason) => self.restore(stage, reason).await?,
        };
        self.conclude(stage, result).await
    }

    /// The strategy of this stage promoted the release: the log has
    /// what comes after it.
    fn promoted(&self, name: &str) -> bool {
        self.has("bake-started", Some(name))
            || self.has("post-jobs-done", Some(name))
            || self.reverting(name).is_some()
    }

    /// Why the stage is rolling back after promotion, if it is.
    fn reverting(&self, name: &str) -> Option<String> {
        self.log
            .iter()
            .find(|e| {
                e.kind == "rolling-back"
                    && e.stage.as_deref() == Some(name)
                    && e.data["after_promotion"] == true
            })
            .map(|e| e.data["reason"].as_str().unwrap_or_default().to_string())
    }

    /// The stage's environment as the stage loop works with it.
    fn plan(stage: &StageGates<'_>) -> Stage {
        let env = &stage.env;
        Stage {
            target: stage.target.clone(),
            provider: env.provider.clone(),
            strategy: env.strategy.clone(),
            checks: env.checks.clone(),
            default_checks: env.default_checks.clone(),
            analysis: env.analysis,
            progress_deadline: env.progress_deadline,
            readiness_poll: env.readiness_poll,
            params: env.strategy_params.clone(),
            replicas: env.replicas,
            exposures: env.exposures.clone(),
            exposure: env.exposure.clone(),
            settle: env.settle,
        }
    }

    /// The flags the stage changed, with their exposure before, as its
    /// log recorded them.
    fn exposed_before(&self, name: &str) -> Vec<FlagBefore> {
        self.log
            .iter()
            .filter(|e| e.kind == "exposure-before" && e.stage.as_deref() == Some(name))
            .filter_map(|e| serde_json::from_value(e.data.clone()).ok())
            .collect()
    }

    /// The run's summary names the stage from the moment it begins
    /// (waiting for its lock, window or approval).
    async fn begin(&self, stage: &StageGates<'_>) -> Result<(), EngineError> {
        if self.run.stage.as_deref() != Some(stage.name) {
            self.status(RunStatus::Running, Some(stage.name), None)
                .await?;
        }
        Ok(())
    }

    /// One run per environment at a time, across every host and process
    /// sharing the store: the lock is a row in the store, held until the
    /// stage finishes (or the run does; an unfinished run left by a crash
    /// still holds it). Busy: refused, or queued first come, first served.
    async fn lock(&self, stage: &StageGates<'_>) -> Result<Flow, EngineError> {
        let store = self.engine.store();
        let queue = !stage.env.refuse_when_busy;
        let mut woken = store.wakeups();
        let mut waiting = false;
        loop {
            match store
                .lock_environment(&self.held.lease, stage.name, queue)
                .await?
            {
                EnvLock::Held => {
                    if waiting {
                        self.append("environment-locked", Some(stage.name), json!({}))
                            .await?;
                        self.status(RunStatus::Running, Some(stage.name), None)
                            .await?;
                    }
                    return Ok(Flow::Next);
                }
                EnvLock::Busy { holder, holding } => {
                    let how = if holding { "held by" } else { "queued for by" };
                    if !queue {
                        return self
                            .refuse(
                                stage,
                                format!(
                                    "environment `{}` is busy: {how} run `{holder}` (concurrency = \"refuse\")",
                                    stage.name
                                ),
                            )
                            .await;
                    }
                    if !waiting {
                        waiting = true;
                        tracing::info!(environment = %stage.name, %holder, "waiting for the environment");
                        self.status(RunStatus::Queued, Some(stage.name), None)
                            .await?;
                        self.append(
                            "waiting-for-environment",
                            Some(stage.name),
                            json!({"environment": stage.name, "holder": holder, "holding": holding}),
                        )
                        .await?;
                    }
                    wait_runnable(&mut woken, LOCK_RETRY).await;
                }
            }
        }
    }

    async fn window(&self, stage: &StageGates<'_>) -> Result<Flow, EngineError> {
        let Some(window) = &stage.env.window else {
            return Ok(Flow::Next);
        };
        let wait = window.wait_secs((self.engine.clock)());
        if wait == 0 {
            return Ok(Flow::Next);
        }
        if stage.env.refuse_outside_window {
            return self
                .refuse(
                    stage,
                    format!(
                        "environment `{}` is outside its window `{window}`",
                        stage.name
                    ),
                )
                .await;
        }
        self.append(
            "waiting-for-window",
            Some(stage.name),
            json!({"window": window.to_string(), "seconds": wait}),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        Ok(Flow::Next)
    }

    async fn approval(&mut self, stage: &StageGates<'_>) -> Result<Flow, EngineError> {
        if !stage.env.approval || self.has("approved", Some(stage.name)) {
            return Ok(Flow::Next);
        }
        self.status(RunStatus::AwaitingApproval, Some(stage.name), None)
            .await?;
        self.append(
            "awaiting-approval",
            Some(stage.name),
            json!({"gate": "stage"}),
        )
        .await?;
        self.tell(
            stage,
            EventKind::AwaitingApproval,
            format!("{} waits for approval", stage.name),
        )
        .await?;
        match self.decisions.recv().await {
            Some(Decision::Approve { by }) => {
                self.append("approved", Some(stage.name), json!({"by": by}))
                    .await?;
                self.status(RunStatus::Running, Some(stage.name), None)
                    .await?;
                Ok(Flow::Next)
            }
            Some(Decision::Abort { by }) => {
                let reason = format!("aborted by {by} before {} started", stage.name);
                self.append("aborted", Some(stage.name), json!({"by": by}))
                    .await?;
                self.finish(stage, RunStatus::Failed, reason).await
            }
            None => {
                self.finish(
                    stage,
                    RunStatus::Failed,
                    "the engine is shutting down".into(),
                )
                .await
            }
        }
    }

    /// The stable release is read once, when the stage starts, and kept in
    /// the log so that a resumed stage sees the same one.
    async fn prepare(&self, stage: &mut StageGates<'_>) -> Result<Flow, EngineError> {
        if let Some(e) = self
            .log
            .iter()
            .find(|e| e.kind == "stage-started" && e.stage.as_deref() == Some(stage.name))
        {
            stage.stable = e.data["stable"].as_str().map(Release::new);
            stage.previous = e.data["previous"]
                .as_str()
                .or(e.data["stable"].as_str())
                .filter(|v| *v != self.release.version)
                .map(Release::new);
            return Ok(Flow::Next);
        }
        self.may_act().await?;
        if let Err(e) = stage.env.provider.prepare(&stage.target).await {
            return self.fail_stage(stage, e.to_string()).await;
        }
        let status = stage.env.provider.status(&stage.target).await.ok();
        let stable = status.and_then(|s| {
            s.weights
                .iter()
                .max_by_key(|w| w.weight)
                .and_then(|w| s.slot(&w.slot).map(|slot| slot.release.clone()))
        });
        let previous = self.previous_release(stage.name).await?.or(stable.clone());
        let previous = previous.filter(|v| *v != self.release.version);
        self.append(
            "stage-started",
            Some(stage.name),
            json!({"stable": stable, "previous": previous}),
        )
        .await?;
        self.tell(
            stage,
            EventKind::StageStarted,
            format!("{} started", stage.name),
        )
        .await?;
        stage.stable = stable.map(Release::new);
        stage.previous = previous.map(Release::new);
        Ok(Flow::Next)
    }

    /// The release of the pipeline's last successful run through
    /// `environment` before this one, other than this run's.
    async fn previous_release(&self, environment: &str) -> Result<Option<String>, EngineError> {
        let earlier = self
            .engine
            .store()
            .list_runs(&rollcage_store::RunFilter {
                pipeline: Some(self.run.run.pipeline.clone()),
                environment: Some(environment.to_string()),
                status: Some(RunStatus::Succeeded),
                before: Some(self.run.id.clone()),
                limit: 50,
                ..Default::default()
            })
            .await?;
        Ok(earlier
            .into_iter()
            .map(|r| r.run.release)
            .find(|r| *r != self.release.version))
    }

    async fn pre_jobs(&self, stage: &StageGates<'_>) -> Result<Flow, EngineError> {
        if self.has("pre-jobs-done", Some(stage.name)) {
            return Ok(Flow::Next);
        }
        if !stage.env.pre_jobs.is_empty() {
            self.may_act().await?;
        }
        let jobs = with_release(&stage.env.pre_jobs, &self.release);
        if let Err(reason) = run_jobs(&*stage.env.provider, &stage.target, &jobs).await {
            return self.fail_stage(stage, reason).await;
        }
        self.append("pre-jobs-done", Some(stage.name), json!({}))
            .await?;
        Ok(Flow::Next)
    }

    /// The strategy loop, from the steps the log has (a resumed stage
    /// continues where it was).
    async fn strategy(&mut self, stage: &StageGates<'_>) -> Result<StageResult, EngineError> {
        let name = stage.name;
        let history: Vec<StepRecord> = self
            .log
            .iter()
            .filter(|e| e.kind == "step" && e.stage.as_deref() == Some(name))
            .filter_map(|e| serde_json::from_value(e.data.clone()).ok())
            .collect();
        // An intent with no step after it was in flight at a crash.
        let in_flight_since_ms = self
            .log
            .iter()
            .rev()
            .filter(|e| e.stage.as_deref() == Some(name))
            .find(|e| e.kind == "intent" || e.kind == "step")
            .filter(|e| e.kind == "intent")
            .map(|e| e.at_ms);
        let env = &stage.env;
        let plan = Self::plan(stage);
        let mut sink = StoreSink {
            engine: self.engine,
            held: self.held,
            stage: name,
            ctx: &self.ctx,
            pipeline_notify: &self.pipeline.notify,
            env_notify: &env.notify,
            restoring: false,
        };
        let exposed_before = self.exposed_before(name);
        let (result, _) = StageRun {
            stage: &plan,
            release: self.release.clone(),
            stable: stage.stable.clone(),
            history,
            events: &mut sink,
            decisions: self.decisions,
            in_flight_since_ms,
            early: None,
            exposed_before,
        }
        .run()
        .instrument(tracing::info_span!("stage", stage = %name))
        .await;
        Ok(result)
    }

    /// The post-deploy jobs (smoke tests), once; one that fails sends the
    /// promoted release back.
    async fn post_jobs(&self, stage: &StageGates<'_>) -> Result<Kept, EngineError> {
        if stage.env.post_jobs.is_empty() || self.has("post-jobs-done", Some(stage.name)) {
            return Ok(Kept::Yes);
        }
        self.may_act().await?;
        let jobs = with_release(&stage.env.post_jobs, &self.release);
        if let Err(reason) = run_jobs(&*stage.env.provider, &stage.target, &jobs).await {
            return Ok(Kept::Revert(format!("after promotion, {reason}")));
        }
        self.append("post-jobs-done", Some(stage.name), json!({}))
            .await?;
        Ok(Kept::Yes)
    }

    /// Watch the promoted release for the environment's bake (see
    /// [`crate::bake`]), from where the log says it is.
    async fn bake(&mut self, stage: &StageGates<'_>) -> Result<Kept, EngineError> {
        let Some(spec) = stage.env.bake.clone() else {
            return Ok(Kept::Yes);
        };
        let name = stage.name;
        if self.has("bake-finished", Some(name)) {
            return Ok(Kept::Yes);
        }
        let ids = if spec.checks.is_empty() {
            stage.env.default_checks.clone()
        } else {
            spec.checks.clone()
        };
        let mut checks: Vec<Arc<dyn HealthCheck>> = Vec::new();
        for id in &ids {
            match stage.env.checks.get(id) {
                Some(c) => checks.push(c.clone()),
                None => return Ok(Kept::Revert(format!("bake names unknown check `{id}`"))),
            }
        }
        let started_ms = match self
            .log
            .iter()
            .find(|e| e.kind == "bake-started" && e.stage.as_deref() == Some(name))
        {
            Some(e) => e.at_ms,
            None => {
                let now = crate::unix_ms();
                self.append(
                    "bake-started",
                    Some(name),
                    json!({
                        "release": self.release.version,
                        "duration_ms": spec.duration.as_millis() as u64,
                        "interval_ms": spec.interval.as_millis() as u64,
                        "checks": ids,
                    }),
                )
                .await?;
                now
            }
        };
        let mut rounds: Vec<Vec<Mark>> = self
            .log
            .iter()
            .filter(|e| e.kind == "bake-tick" && e.stage.as_deref() == Some(name))
            .filter_map(|e| serde_json::from_value(e.data["marks"].clone()).ok())
            .collect();
        if let Some(reason) = bake::judge(&spec, &rounds) {
            return Ok(Kept::Revert(reason));
        }
        for n in (rounds.len() as u32 + 1)..=spec.rounds() {
            let due_ms = started_ms + spec.due(n).as_millis() as u64;
            let wait = Duration::from_millis(due_ms.saturating_sub(crate::unix_ms()));
            if let Some(by) = self.abort_within(wait).await {
                return Ok(Kept::Revert(format!("aborted by {by} during the bake")));
            }
            self.may_act().await?;
            let (target, taken) = self.measure(stage, &checks).await;
            let marks: Vec<Mark> = taken
                .iter()
                .map(|t| match &t.result {
                    Ok(m) => Mark {
                        check: t.check.to_string(),
                        verdict: Some(m.verdict),
                        detail: m.detail.clone(),
                    },
                    Err(e) => Mark {
                        check: t.check.to_string(),
                        verdict: None,
                        detail: e.clone(),
                    },
                })
                .collect();
            self.append(
                "bake-tick",
                Some(name),
                json!({"round": n, "slot": target.slot, "marks": marks}),
            )
            .await?;
            rounds.push(marks);
            let failed = bake::judge(&spec, &rounds);
            // The round is also an analysis, shown and notified as one.
            let outcome = match &failed {
                Some(reason) => crate::analysis::Outcome::Failed(reason.clone()),
                None => crate::analysis::Outcome::Passed,
            };
            self.sink(stage, false)
                .emit(StageEvent::Analysis(crate::analysis::Report {
                    outcome,
                    measurements: taken,
                }))
                .await;
            if let Some(reason) = failed {
                return Ok(Kept::Revert(reason));
            }
        }
        self.append("bake-finished", Some(name), json!({"result": "passed"}))
            .await?;
        Ok(Kept::Yes)
    }

    /// Wait `wait`; the name of whoever aborted the run meanwhile, if
    /// someone did (a person, or a firing alert).
    async fn abort_within(&mut self, wait: Duration) -> Option<String> {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        let mut open = true;
        loop {
            tokio::select! {
                () = &mut sleep => return None,
                d = self.decisions.recv(), if open => match d {
                    Some(Decision::Abort { by }) => return Some(by),
                    // Nothing waits for an approval here.
                    Some(Decision::Approve { .. }) => {}
                    None => open = false,
                },
            }
        }
    }

    /// One round of the bake's measurements of the promoted release.
    async fn measure(
        &self,
        stage: &StageGates<'_>,
        checks: &[Arc<dyn HealthCheck>],
    ) -> (CheckTarget, Vec<crate::analysis::Taken>) {
        let status = stage.env.provider.status(&stage.target).await;
        let slot = status.as_ref().ok().and_then(|s| {
            s.slots
                .iter()
                .find(|slot| slot.release == self.release.version)
        });
        let target = CheckTarget {
            environment: stage.name.to_string(),
            slot: slot.map(|s| s.name.clone()).unwrap_or_default(),
            release: self.release.version.clone(),
            endpoints: slot.map(|s| s.endpoints.clone()).unwrap_or_default(),
            exposure: None,
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (i, check) in checks.iter().enumerate() {
            let (check, target) = (check.clone(), target.clone());
            tasks.spawn(async move {
                let result = check.check(&target).await.map_err(|e| e.to_string());
                (i, check.id().clone(), result, check.threshold())
            });
        }
        let mut taken = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(t) = joined {
                taken.push(t);
            }
        }
        taken.sort_by_key(|(i, _, _, _)| *i);
        let taken = taken
            .into_iter()
            .map(|(_, check, result, threshold)| crate::analysis::Taken {
                check,
                result,
                threshold,
            })
            .collect();
        (target, taken)
    }

    /// A sink writing the stage's events to the run's log.
    fn sink<'s>(&'s self, stage: &'s StageGates<'_>, restoring: bool) -> StoreSink<'s> {
        StoreSink {
            engine: self.engine,
            held: self.held,
            stage: stage.name,
            ctx: &self.ctx,
            pipeline_notify: &self.pipeline.notify,
            env_notify: &stage.env.notify,
            restoring,
        }
    }

    /// Roll a promoted release back to the previous one, from wherever
    /// the log says the rollback is (see [`StageRun::restore`]).
    async fn restore(
        &mut self,
        stage: &StageGates<'_>,
        reason: String,
    ) -> Result<StageResult, EngineError> {
        let name = stage.name;
        let Some(previous) = stage.previous.clone() else {
            return Ok(StageResult::Failed {
                reason: format!(
                    "{reason}; and no earlier release of `{}` in `{name}` to roll back to",
                    stage.target.service
                ),
            });
        };
        if self.reverting(name).is_none() {
            self.append(
                "rolling-back",
                Some(name),
                json!({"reason": reason, "after_promotion": true, "to": previous.version}),
            )
            .await?;
            self.tell(
                stage,
                EventKind::Step,
                format!(
                    "rolling back to {} after promotion: {reason}",
                    previous.version
                ),
            )
            .await?;
        }
        let history: Vec<StepRecord> = self
            .log
            .iter()
            .filter(|e| e.kind == "restore-step" && e.stage.as_deref() == Some(name))
            .filter_map(|e| serde_json::from_value(e.data.clone()).ok())
            .collect();
        let mut plan = Self::plan(stage);
        // Every poll the way back waits for is time the bad release keeps
        // its traffic.
        plan.readiness_poll = plan.readiness_poll.min(RESTORE_READINESS_POLL);
        let mut sink = StoreSink {
            engine: self.engine,
            held: self.held,
            stage: name,
            ctx: &self.ctx,
            pipeline_notify: &self.pipeline.notify,
            env_notify: &stage.env.notify,
            restoring: true,
        };
        let exposed_before = self.exposed_before(name);
        let restored = StageRun {
            stage: &plan,
            release: previous.clone(),
            stable: Some(self.release.clone()),
            history,
            events: &mut sink,
            decisions: self.decisions,
            in_flight_since_ms: None,
            early: None,
            exposed_before,
        }
        .restore()
        .instrument(tracing::info_span!("restore", stage = %name))
        .await;
        Ok(match restored {
            Ok(_) => StageResult::RolledBack { reason },
            Err(e) => StageResult::Failed {
                reason: format!(
                    "{reason}; and the rollback to {} failed {e}",
                    previous.version
                ),
            },
        })
    }

    /// Record how the stage ended; a stage that succeeded frees its
    /// environment for the next run in line.
    async fn conclude(
        &self,
        stage: &StageGates<'_>,
        result: StageResult,
    ) -> Result<Flow, EngineError> {
        let (status, kind, reason, label) = match result {
            StageResult::Succeeded => {
                self.append(
                    "stage-finished",
                    Some(stage.name),
                    json!({"result": "succeeded"}),
                )
                .await?;
                self.engine
                    .store()
                    .unlock_environment(&self.held.lease, stage.name)
                    .await?;
                return Ok(Flow::Next);
            }
            StageResult::RolledBack { reason } => (
                RunStatus::RolledBack,
                EventKind::RolledBack,
                reason,
                "rolled_back",
            ),
            StageResult::Failed { reason } => {
                (RunStatus::Failed, EventKind::Failed, reason, "failed")
            }
        };
        self.append(
            "stage-finished",
            Some(stage.name),
            json!({"result": label, "reason": reason}),
        )
        .await?;
        self.tell(stage, kind, reason.clone()).await?;
        self.finish(stage, status, reason).await
    }
}

/// The variable that tells a job (a migration, a smoke test) which
/// release it runs for; the configuration's own value wins.
pub(crate) const RELEASE_VAR: &str = "ROLLCAGE_RELEASE";

/// `jobs`, each told the release being deployed.
fn with_release(jobs: &[Job], release: &Release) -> Vec<Job> {
    jobs.iter()
        .cloned()
        .map(|mut job| {
            if !job.env.iter().any(|(k, _)| k == RELEASE_VAR) {
                job.env
                    .push((RELEASE_VAR.to_string(), release.version.clone()));
            }
            job
        })
        .collect()
}

/// The gates a stage passes before its strategy runs, in order.
#[derive(Clone, Copy)]
enum Gate {
    Lock,
    Window,
    Approval,
    Prepare,
    PreJobs,
}

/// Until the store says a run may be free to go on (or be claimed), or
/// `at_most`: a lease that runs out wakes nobody.
pub(crate) async fn wait_runnable(
    woken: &mut tokio::sync::broadcast::Receiver<Wake>,
    at_most: Duration,
) {
    let _ = tokio::time::timeout(at_most, async {
        loop {
            match woken.recv().await {
                Ok(Wake::Runnable) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    return;
                }
                Ok(Wake::Decision(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // Nothing will wake it: the timeout will.
                    std::future::pending::<()>().await
                }
            }
        }
    })
    .await;
}
