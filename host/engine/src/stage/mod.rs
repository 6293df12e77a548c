//! One stage of a run: one environment driven from its current release to a
//! new one by a strategy, with analysis gating every step and the strategy's
//! rollback plan executed on any failure.
//!
//! The loop asks the strategy for the next action, executes it through the
//! environment provider (waiting for readiness after `apply-slot`, within the
//! progress deadline), records the action and its outcome, and asks again
//! until `done`. Strategies are pure functions of the recorded history, so
//! the history is all a stage needs to be resumed.
//!
//! Expose steps move a feature flag through an exposure control. Before a
//! stage first changes a flag it reads and logs the flag's exposure
//! ([`FlagBefore`]); a rollback sets every flag the stage changed back to
//! it before it moves traffic, so "rolled back" holds for flags too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rollcage_core::{
    Action, CheckTarget, DeployState, EnvironmentProvider, EnvironmentStatus, ExposureChange,
    ExposureControl, ExposureTarget, HealthCheck, Outcome, Pause, Release, StepRecord, Strategy,
    Target,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::analysis::{self, AnalysisSpec};

/// A person's answer to an approval pause (or to an inconclusive analysis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Approve { by: String },
    /// Stop and roll back.
    Abort { by: String },
}

/// Something the stage did, for the run's event log and the notifiers.
#[derive(Debug, Clone, PartialEq)]
pub enum StageEvent {
    /// An action is about to be executed: written before it runs, so that a
    /// crash in between is visible and the action is repeated on resume.
    Intent(Action),
    /// An action was executed, with its outcome.
    Step(StepRecord),
    /// An analysis ran; its report.
    Analysis(analysis::Report),
    /// The stage waits for a person.
    AwaitingApproval(String),
    /// A rollback began, with its reason.
    RollingBack(String),
    /// A rollback action was executed.
    RollbackStep(Action),
    /// A flag's exposure as read before the stage first changed it: what a
    /// rollback restores. Written before the change is made.
    ExposureBefore(FlagBefore),
}

/// A flag's exposure before a stage first changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagBefore {
    /// Id of the exposure control that moves the flag (never empty).
    pub control: String,
    pub flag: String,
    /// Share of users who got the flag (0 when it was disabled or absent).
    pub percent: u32,
    /// The flag service's revision of the flag then, for the log.
    #[serde(default)]
    pub revision: String,
}

/// Where a stage's events go. Awaited in order: a store-backed sink has
/// written each event (an intent, say) before the stage goes on.
#[async_trait::async_trait]
pub trait StageSink: Send + Sync {
    async fn emit(&mut self, event: StageEvent);
}

/// Collects events in memory (tests, dry runs).
#[async_trait::async_trait]
impl StageSink for Vec<StageEvent> {
    async fn emit(&mut self, event: StageEvent) {
        self.push(event);
    }
}

/// How the stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageResult {
    /// The release is fully promoted.
    Succeeded,
    /// Something failed and the rollback plan put the stable release back.
    RolledBack { reason: String },
    /// Something failed and the rollback could not complete either.
    Failed { reason: String },
}

/// Everything a stage works with.
pub struct Stage {
    pub target: Target,
    pub provider: Arc<dyn EnvironmentProvider>,
    pub strategy: Arc<dyn Strategy>,
    /// Checks by id, for analysis requests that name them.
    pub checks: BTreeMap<String, Arc<dyn HealthCheck>>,
    /// Checks run when an analysis request names none.
    pub default_checks: Vec<String>,
    pub analysis: AnalysisSpec,
    /// Time allowed for an applied slot to become ready.
    pub progress_deadline: Duration,
    /// How often readiness is polled.
    pub readiness_poll: Duration,
    /// The strategy's parameters, as JSON.
    pub params: String,
    /// Instances wanted once promoted.
    pub replicas: u32,
    /// Exposure controls by plugin id, for expose steps that name one.
    pub exposures: BTreeMap<String, Arc<dyn ExposureControl>>,
    /// The environment's exposure control (`exposure = "<id>"`), for
    /// expose steps that name none.
    pub exposure: Option<String>,
    /// How long an analysis right after an exposure change waits first:
    /// flag SDKs poll, so users see the change only after a while.
    pub settle: Duration,
}

impl Stage {
    /// The control an expose step names (empty: the environment's), with
    /// its id; `Err` says why there is none.
    pub fn control(&self, named: &str) -> Result<(String, Arc<dyn ExposureControl>), String> {
        let id = match (named, &self.exposure) {
            ("", Some(id)) => id.as_str(),
            ("", None) => {
                return Err(format!(
                    "environment `{}` has no exposure control: set `exposure = \"<plugin id>\"` in [environments.{}]",
                    self.target.environment, self.target.environment
                ));
            }
            (id, _) => id,
        };
        match self.exposures.get(id) {
            Some(c) => Ok((id.to_string(), c.clone())),
            None => Err(format!(
                "exposure control `{id}` is not an exposure plugin of this host"
            )),
        }
    }
}

/// A strategy that never says `done` is stopped here.
const MAX_STEPS: usize = 10_000;

/// The running stage: its inputs, its history so far, and where events and
/// decisions flow.
pub struct StageRun<'a> {
    pub stage: &'a Stage,
    pub release: Release,
    pub stable: Option<Release>,
    pub history: Vec<StepRecord>,
    pub events: &'a mut dyn StageSink,
    pub decisions: &'a mut mpsc::Receiver<Decision>,
    /// When the action in flight at a crash was announced (ms since the
    /// Unix epoch): a timed pause resumed after a restart waits only for
    /// what is left of it.
    pub in_flight_since_ms: Option<u64>,
    /// A decision that came before anything waited for it (start with
    /// `None`): kept for the next approval point.
    pub early: Option<Decision>,
    /// The flags this stage changed, with their exposure before (read
    /// back from the log on resume).
    pub exposed_before: Vec<FlagBefore>,
}

impl StageRun<'_> {
    /// Drive the stage to its end.
    pub async fn run(mut self) -> (StageResult, Vec<StepRecord>) {
        // A resumed stage first lets the environment settle: after a host
        // restart its instances may be starting again, and a check run now
        // would measure nothing.
        let resumed = !self.history.is_empty() || self.in_flight_since_ms.is_some();
        let settled = if resumed { self.settle().await } else { Ok(()) };
        let result = match settled {
            Ok(()) => self.forward().await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(()) => StageResult::Succeeded,
            Err(reason) => self.roll_back(reason).await,
        };
        (result, self.history)
    }

    async fn status(&self) -> Result<EnvironmentStatus, String> {
        self.stage
            .provider
            .status(&self.stage.target)
            .await
            .map_err(|e| e.to_string())
    }

    async fn state(&self) -> Result<DeployState, String> {
        Ok(DeployState {
            environment: self.stage.target.environment.clone(),
            release: self.release.clone(),
            stable: self.stable.clone(),
            replicas: self.stage.replicas,
            params: self.stage.params.clone(),
            history: self.history.clone(),
            status: self.status().await?,
        })
    }

    /// The forward loop; `Err` is the reason to roll back.
    async fn forward(&mut self) -> Result<(), String> {
        for _ in 0..MAX_STEPS {
            // An abort asked for between steps stops the stage here; an
            // approval nobody waits for has nothing to approve.
            match self.decisions.try_recv() {
                Ok(Decision::Abort { by }) => return Err(format!("aborted by {by}")),
                Ok(approve) => self.early = Some(approve),
                Err(_) => {}
            }
            let state = self.state().await?;
            let action = self
                .stage
                .strategy
                .decide(&state)
                .await
                .map_err(|e| e.to_string())?;
            if action == Action::Done {
                return Ok(());
            }
            self.events.emit(StageEvent::Intent(action.clone())).await;
            let outcome = self.execute(&action, &state.status).await;
            self.in_flight_since_ms = None;
            let record = StepRecord {
                action,
                outcome: outcome.clone(),
            };
            self.history.push(record.clone());
            self.events.emit(StageEvent::Step(record)).await;
            match outcome {
                Outcome::Ok | Outcome::AnalysisPassed => {}
                Outcome::AnalysisFailed(reason) | Outcome::Failed(reason) => return Err(reason),
            }
        }
        Err(format!(
            "the strategy did not finish within {MAX_STEPS} steps"
        ))
    }

    async fn execute(&mut self, action: &Action, status: &EnvironmentStatus) -> Outcome {
        let stage = self.stage;
        let failed = |e: rollcage_core::PluginError| Outcome::Failed(e.to_string());
        match action {
            Action::ApplySlot(spec) => {
                if let Err(e) = stage.provider.apply_slot(&stage.target, spec).await {
                    return failed(e);
                }
                match self.wait_ready(&spec.name, spec.replicas).await {
                    Ok(()) => Outcome::Ok,
                    Err(reason) => Outcome::Failed(reason),
                }
            }
            Action::Route { weights } => match stage.provider.route(&stage.target, weights).await {
                Ok(()) => Outcome::Ok,
                Err(e) => failed(e),
            },
            Action::RemoveSlot { slot } => {
                match stage.provider.remove_slot(&stage.target, slot).await {
                    Ok(()) => Outcome::Ok,
                    Err(e) => failed(e),
                }
            }
            Action::Pause { pause } => self.pause(pause).await,
            Action::Analyze(request) => {
                let ids = if request.checks.is_empty() {
                    &stage.default_checks
                } else {
                    &request.checks
                };
                let mut checks = Vec::new();
                for id in ids {
                    match stage.checks.get(id) {
                        Some(c) => checks.push(c.clone()),
                        None => {
                            return Outcome::Failed(format!("analysis names unknown check `{id}`"));
                        }
                    }
                }
                if checks.is_empty() {
                    // No checks configured: nothing to gate on.
                    return Outcome::AnalysisPassed;
                }
                let after_expose = matches!(
                    self.history.last(),
                    Some(StepRecord {
                        action: Action::Expose(_),
                        ..
                    })
                );
                if after_expose && !stage.settle.is_zero() {
                    // Flag SDKs poll: measure once users see the change.
                    let settle = Pause::DurationMs(stage.settle.as_millis() as u64);
                    if let Outcome::Failed(reason) = self.pause(&settle).await {
                        return Outcome::AnalysisFailed(reason);
                    }
                }
                let exposure = self.history.iter().rev().find_map(|r| match r {
                    StepRecord {
                        action: Action::Expose(c),
                        outcome: Outcome::Ok,
                    } => Some(ExposureTarget {
                        flag: c.flag.clone(),
                        percent: c.percent,
                    }),
                    _ => None,
                });
                let slot = status.slot(&request.slot);
                let target = CheckTarget {
                    environment: stage.target.environment.clone(),
                    slot: request.slot.clone(),
                    release: slot.map(|s| s.release.clone()).unwrap_or_default(),
                    endpoints: slot.map(|s| s.endpoints.clone()).unwrap_or_default(),
                    exposure,
                };
                let report = analysis::run(&checks, &target, &stage.analysis).await;
                let outcome = report.outcome.clone();
                self.events.emit(StageEvent::Analysis(report)).await;
                match outcome {
                    analysis::Outcome::Passed => Outcome::AnalysisPassed,
                    analysis::Outcome::Failed(r) | analysis::Outcome::Error(r) => {
                        Outcome::AnalysisFailed(r)
                    }
                    analysis::Outcome::Inconclusive(r) => {
                        self.events
                            .emit(StageEvent::AwaitingApproval(format!(
                                "analysis inconclusive: {r}"
                            )))
                            .await;
                        match self.next_decision().await {
                            Some(Decision::Approve { .. }) => Outcome::AnalysisPassed,
                            Some(Decision::Abort { by }) => {
                                Outcome::AnalysisFailed(format!("{r}; aborted by {by}"))
                            }
                            None => Outcome::AnalysisFailed(r),
                        }
                    }
                }
            }
            Action::Expose(change) => self.expose(change).await,
            Action::Done => Outcome::Ok,
        }
    }

    /// Move a flag; the first time this stage moves it, its exposure is
    /// read and logged first, for a rollback to restore.
    async fn expose(&mut self, change: &ExposureChange) -> Outcome {
        let environment = &self.stage.target.environment;
        let cannot = |why: String| {
            Outcome::Failed(format!(
                "cannot expose flag `{}` in `{environment}`: {why}",
                change.flag
            ))
        };
        if change.percent > 100 {
            return cannot(format!("{}% is outside 0-100", change.percent));
        }
        let (id, control) = match self.stage.control(&change.control) {
            Ok(c) => c,
            Err(why) => return cannot(why),
        };
        let known = self
            .exposed_before
            .iter()
            .any(|b| b.control == id && b.flag == change.flag);
        if !known {
            match control.get_exposure(&change.flag, environment).await {
                Ok(status) => {
                    let before = FlagBefore {
                        control: id.clone(),
                        flag: change.flag.clone(),
                        percent: status.effective_percent(),
                        revision: status.revision,
                    };
                    self.events
                        .emit(StageEvent::ExposureBefore(before.clone()))
                        .await;
                    self.exposed_before.push(before);
                }
                Err(e) => return cannot(format!("its exposure before the change: {e}")),
            }
        }
        match control
            .set_exposure(&change.flag, environment, change.percent)
            .await
        {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Set every flag this stage changed back to its exposure before the
    /// stage, each logged as a rollback step. Desired state: repeating it
    /// after a crash is harmless. `Err` names the flag that could not be
    /// restored.
    async fn restore_flags(&mut self) -> Result<(), String> {
        for before in self.exposed_before.clone() {
            let action = Action::Expose(ExposureChange {
                control: before.control.clone(),
                flag: before.flag.clone(),
                percent: before.percent,
            });
            let set = match self.stage.control(&before.control) {
                Ok((_, control)) => control
                    .set_exposure(&before.flag, &self.stage.target.environment, before.percent)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            self.events.emit(StageEvent::RollbackStep(action)).await;
            if let Err(e) = set {
                return Err(format!(
                    "flag `{}` could not be restored to {}%: {e}",
                    before.flag, before.percent
                ));
            }
        }
        Ok(())
    }

    async fn pause(&mut self, pause: &Pause) -> Outcome {
        match pause {
            Pause::DurationMs(ms) => {
                let elapsed = self
                    .in_flight_since_ms
                    .take()
                    .map_or(0, |since| crate::unix_ms().saturating_sub(since));
                let sleep = tokio::time::sleep(Duration::from_millis(ms.saturating_sub(elapsed)));
                tokio::pin!(sleep);
                // An abort cuts a timed pause short; an approval ends it early.
                tokio::select! {
                    () = &mut sleep => Outcome::Ok,
                    d = self.next_decision() => match d {
                        Some(Decision::Abort { by }) => Outcome::Failed(format!("aborted by {by}")),
                        Some(Decision::Approve { .. }) => Outcome::Ok,
                        // Nobody can decide any more: the pause runs its course.
                        None => {
                            sleep.as_mut().await;
                            Outcome::Ok
                        }
                    },
                }
            }
            Pause::Approval => {
                self.events
                    .emit(StageEvent::AwaitingApproval(
                        "the strategy asks for approval".into(),
                    ))
                    .await;
                match self.next_decision().await {
                    Some(Decision::Approve { .. }) => Outcome::Ok,
                    Some(Decision::Abort { by }) => Outcome::Failed(format!("aborted by {by}")),
                    None => Outcome::Failed("no one can approve: the run is closing".into()),
                }
            }
        }
    }

    /// The next decision: one that arrived before anyone waited for it, or
    /// the next to come.
    async fn next_decision(&mut self) -> Option<Decision> {
        match self.early.take() {
            Some(d) => Some(d),
            None => self.decisions.recv().await,
        }
    }

    /// Wait until every slot has its instances ready, within the progress
    /// deadline.
    async fn settle(&self) -> Result<(), String> {
        let status = self.status().await?;
        for slot in &status.slots {
            self.wait_ready(&slot.name, slot.desired).await?;
        }
        Ok(())
    }

    /// Poll until `slot` has `replicas` ready instances, within the deadline.
    async fn wait_ready(&self, slot: &str, replicas: u32) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.stage.progress_deadline;
        loop {
            let status = self.status().await?;
            let ready = status.slot(slot).map_or(0, |s| s.ready);
            if ready >= replicas {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "slot `{slot}` had {ready} of {replicas} instances ready at its progress deadline of {} s",
                    self.stage.progress_deadline.as_secs()
                ));
            }
            tokio::time::sleep(self.stage.readiness_poll).await;
        }
    }

    /// Bring `release` (the one live before) back after `stable` (the
    /// promoted one) failed, the way the strategy deploys any release: the
    /// strategy is asked for the next action after `history`, as for a
    /// deployment of `release` over `stable`, so traffic shifts back in the
    /// strategy's steps and the bad slot is removed at the end. Pauses and
    /// analyses are recorded as done without waiting (a rollback does not
    /// wait), and decisions are not read (a rollback is not aborted).
    /// `Err` is why it could not complete.
    pub async fn restore(mut self) -> Result<Vec<StepRecord>, String> {
        // Flags first: the code they expose goes away with the release.
        self.restore_flags().await?;
        for _ in 0..MAX_STEPS {
            let state = self.state().await?;
            let action = self
                .stage
                .strategy
                .decide(&state)
                .await
                .map_err(|e| e.to_string())?;
            let outcome = match &action {
                Action::Done => return Ok(self.history),
                Action::Pause { .. } => Outcome::Ok,
                Action::Analyze(_) => Outcome::AnalysisPassed,
                // The flags are back where they were before the run; the
                // previous release's plan does not move them again.
                Action::Expose(_) => Outcome::Ok,
                _ => {
                    self.events.emit(StageEvent::Intent(action.clone())).await;
                    self.execute(&action, &state.status).await
                }
            };
            let record = StepRecord {
                action: action.clone(),
                outcome: outcome.clone(),
            };
            self.history.push(record.clone());
            self.events.emit(StageEvent::Step(record)).await;
            if let Outcome::Failed(e) | Outcome::AnalysisFailed(e) = outcome {
                return Err(format!("at {action}: {e}"));
            }
        }
        Err(format!(
            "the strategy did not finish within {MAX_STEPS} steps"
        ))
    }

    /// Execute the strategy's rollback plan. Pauses and analyses in it are
    /// skipped: a rollback does not wait.
    async fn roll_back(&mut self, reason: String) -> StageResult {
        self.events
            .emit(StageEvent::RollingBack(reason.clone()))
            .await;
        let plan = match self.state().await {
            Ok(state) => self
                .stage
                .strategy
                .rollback(&state)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        // Flags first: users stop getting the new code path before its
        // release loses its traffic.
        if let Err(e) = self.restore_flags().await {
            return StageResult::Failed {
                reason: format!("{reason}; and the rollback failed: {e}"),
            };
        }
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                return StageResult::Failed {
                    reason: format!("{reason}; and no rollback plan: {e}"),
                };
            }
        };
        for action in plan {
            let status = EnvironmentStatus::default();
            let outcome = match &action {
                Action::Pause { .. } | Action::Analyze(_) | Action::Done => continue,
                _ => self.execute(&action, &status).await,
            };
            self.events
                .emit(StageEvent::RollbackStep(action.clone()))
                .await;
            if let Outcome::Failed(e) = outcome {
                return StageResult::Failed {
                    reason: format!("{reason}; and the rollback failed at {action:?}: {e}"),
                };
            }
        }
        StageResult::RolledBack { reason }
    }
}

#[cfg(test)]
mod tests;
