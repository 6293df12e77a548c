//! Dry runs: the plan a strategy would follow if every check passed, and
//! its rollback plan, computed by asking the real strategy against an
//! environment simulated in memory. Nothing outside is touched: strategies
//! are pure functions of the recorded history, which is what makes this
//! preview the same plan a real run takes.

use rollcage_core::{
    Action, DeployState, EnvironmentStatus, Outcome, Pause, Release, RouteWeight, SlotStatus,
    StepRecord, Strategy,
};

/// A strategy that never says `done` is cut off here.
const MAX_STEPS: usize = 1_000;

/// What a stage would do.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// Every action, in order, up to `done`.
    pub plan: Vec<Action>,
    /// The rollback plan if the first analysis (or, without analysis, the
    /// first step) failed.
    pub rollback: Vec<Action>,
    /// Where the rollback plan applies: the step after which it was asked.
    pub rollback_after: usize,
    /// Total time of timed pauses, in milliseconds.
    pub paused_ms: u64,
    /// Whether a person is asked to approve on the way.
    pub approvals: usize,
}

/// An environment in memory that does what it is told, at once.
#[derive(Debug, Clone, Default)]
pub struct SimulatedEnvironment {
    pub status: EnvironmentStatus,
}

impl SimulatedEnvironment {
    /// One slot running `release`, named after it (the strategies' slot
    /// convention), taking all traffic.
    pub fn running(release: &str, replicas: u32) -> Self {
        SimulatedEnvironment {
            status: EnvironmentStatus {
                slots: vec![SlotStatus {
                    name: release.into(),
                    release: release.into(),
                    desired: replicas,
                    ready: replicas,
                    endpoints: vec![],
                }],
                weights: vec![RouteWeight {
                    slot: release.into(),
                    weight: 100,
                }],
            },
        }
    }

    /// Apply `action` as if it succeeded.
    pub fn apply(&mut self, action: &Action) {
        let status = &mut self.status;
        match action {
            Action::ApplySlot(spec) => {
                let slot = SlotStatus {
                    name: spec.name.clone(),
                    release: spec.release.version.clone(),
                    desired: spec.replicas,
                    ready: spec.replicas,
                    endpoints: vec![],
                };
                match status.slots.iter_mut().find(|s| s.name == spec.name) {
                    Some(s) => *s = slot,
                    None => status.slots.push(slot),
                }
            }
            Action::Route { weights } => status.weights = weights.clone(),
            Action::RemoveSlot { slot } => status.slots.retain(|s| &s.name != slot),
            Action::Pause { .. } | Action::Analyze(_) | Action::Expose(_) | Action::Done => {}
        }
    }
}

/// Ask `strategy` for its whole plan from `stable` to `release`.
pub async fn preview(
    strategy: &dyn Strategy,
    environment: &str,
    release: Release,
    stable: Option<Release>,
    replicas: u32,
    params: &str,
) -> Result<Preview, String> {
    let mut env = match &stable {
        Some(s) => SimulatedEnvironment::running(&s.version, replicas),
        None => SimulatedEnvironment::default(),
    };
    let mut state = DeployState {
        environment: environment.to_string(),
        release,
        stable,
        replicas,
        params: params.to_string(),
        history: vec![],
        status: env.status.clone(),
    };
    let mut preview = Preview {
        plan: vec![],
        rollback: vec![],
        rollback_after: 0,
        paused_ms: 0,
        approvals: 0,
    };
    let mut rollback_state: Option<DeployState> = None;
    for _ in 0..MAX_STEPS {
        let action = strategy.decide(&state).await.map_err(|e| e.to_string())?;
        if action == Action::Done {
            break;
        }
        env.apply(&action);
        let outcome = match &action {
            Action::Analyze(_) => Outcome::AnalysisPassed,
            _ => Outcome::Ok,
        };
        match &action {
            Action::Pause {
                pause: Pause::DurationMs(ms),
            } => preview.paused_ms += ms,
            Action::Pause {
                pause: Pause::Approval,
            } => preview.approvals += 1,
            _ => {}
        }
        let first_analysis = matches!(action, Action::Analyze(_))
            && !preview.plan.iter().any(|a| matches!(a, Action::Analyze(_)));
        preview.plan.push(action.clone());
        state.history.push(StepRecord {
            action: action.clone(),
            outcome,
        });
        state.status = env.status.clone();
        if first_analysis || rollback_state.is_none() {
            // The rollback as asked when this step's analysis fails.
            let mut failed = state.clone();
            if let Some(last) = failed.history.last_mut()
                && matches!(last.action, Action::Analyze(_))
            {
                last.outcome = Outcome::AnalysisFailed("preview".into());
            }
            rollback_state = Some(failed);
            preview.rollback_after = preview.plan.len();
        }
        if preview.plan.len() == MAX_STEPS {
            return Err(format!(
                "the strategy did not finish within {MAX_STEPS} steps"
            ));
        }
    }
    if let Some(failed) = rollback_state {
        preview.rollback = strategy
            .rollback(&failed)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(preview)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{PlanStrategy, apply, route};
    use rollcage_core::AnalysisRequest;

    #[tokio::test]
    async fn the_plan_and_the_rollback_come_from_the_strategy() {
        let strategy = PlanStrategy {
            id: "canary".parse().unwrap(),
            plan: vec![
                apply("2.0.0", "2.0.0", 1),
                route(&[("1.0.0", 90), ("2.0.0", 10)]),
                Action::Pause {
                    pause: Pause::DurationMs(30_000),
                },
                Action::Analyze(AnalysisRequest {
                    checks: vec![],
                    slot: "2.0.0".into(),
                }),
                route(&[("2.0.0", 100)]),
            ],
            rollback: vec![route(&[("1.0.0", 100)])],
        };
        let p = preview(
            &strategy,
            "production",
            Release::new("2.0.0"),
            Some(Release::new("1.0.0")),
            2,
            "{}",
        )
        .await
        .unwrap();
        assert_eq!(p.plan.len(), 5);
        assert_eq!(p.paused_ms, 30_000);
        assert_eq!(p.rollback, vec![route(&[("1.0.0", 100)])]);
        assert_eq!(p.rollback_after, 4);
        assert_eq!(p.plan[1].to_string(), "route 1.0.0=90% 2.0.0=10%");
    }

    #[test]
    fn the_simulated_environment_follows_actions() {
        let mut env = SimulatedEnvironment::running("1.0.0", 2);
        env.apply(&apply("2.0.0", "2.0.0", 1));
        env.apply(&route(&[("1.0.0", 50), ("2.0.0", 50)]));
        env.apply(&Action::RemoveSlot {
            slot: "1.0.0".into(),
        });
        assert_eq!(env.status.slots.len(), 1);
        assert_eq!(env.status.slots[0].release, "2.0.0");
        assert_eq!(env.status.weights.len(), 2);
    }
}
