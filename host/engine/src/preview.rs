//! Dry runs: the plan a strategy would follow if every check passed, and
//! its rollback plan, computed by asking the real strategy against an
//! environment simulated in memory. Nothing outside is touched: strategies
//! are pure functions of the recorded history, which is what makes this
//! preview the same plan a real run takes.

use rollcage_core::{
    Action, DeployState, EnvironmentStatus, Outcome, Pause, PluginKind, Release, RouteWeight,
    SlotStatus, StepRecord, Strategy,
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
    /// The flags the plan moves (control as the step names it, flag), in
    /// the order first moved: a rollback sets each back to its exposure
    /// before the run, before the strategy's rollback plan.
    pub flags: Vec<(String, String)>,
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
        flags: vec![],
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
            Action::Expose(c) => {
                let flag = (c.control.clone(), c.flag.clone());
                if !preview.flags.contains(&flag) {
                    preview.flags.push(flag);
                }
            }
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

/// What is wrong with the expose steps of `plan` in `environment`, each
/// naming the step, its flag and the control: a control must exist and
/// be an exposure plugin; a step naming none needs the environment's
/// `exposure`. `kind_of` says what kind of plugin an id is (`None`: no
/// such plugin).
pub fn exposure_problems(
    environment: &str,
    plan: &[Action],
    default: Option<&str>,
    kind_of: &dyn Fn(&str) -> Option<PluginKind>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, action) in plan.iter().enumerate() {
        let Action::Expose(change) = action else {
            continue;
        };
        let at = format!(
            "environment `{environment}`: plan step {} ({action})",
            i + 1
        );
        if change.percent > 100 {
            problems.push(format!("{at}: {}% is outside 0-100", change.percent));
        }
        let id = match (change.control.as_str(), default) {
            ("", Some(id)) => id,
            ("", None) => {
                problems.push(format!(
                    "{at}: no exposure control: set `exposure = \"<plugin id>\"` in [environments.{environment}]"
                ));
                continue;
            }
            (id, _) => id,
        };
        match kind_of(id) {
            Some(PluginKind::Exposure) => {}
            Some(kind) => problems.push(format!(
                "{at}: plugin `{id}` is a {kind}, not an exposure plugin"
            )),
            None => problems.push(format!(
                "{at}: exposure control `{id}` is not a configured plugin"
            )),
        }
    }
    problems
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
        assert!(p.flags.is_empty());
    }

    fn expose(control: &str, percent: u32) -> Action {
        Action::Expose(rollcage_core::ExposureChange {
            control: control.into(),
            flag: "checkout-v2".into(),
            percent,
        })
    }

    #[tokio::test]
    async fn the_preview_lists_the_flags_a_rollback_restores() {
        let strategy = PlanStrategy {
            id: "canary".parse().unwrap(),
            plan: vec![route(&[("2.0.0", 100)]), expose("", 10), expose("", 50)],
            rollback: vec![route(&[("1.0.0", 100)])],
        };
        let p = preview(
            &strategy,
            "production",
            Release::new("2.0.0"),
            None,
            2,
            "{}",
        )
        .await
        .unwrap();
        assert_eq!(p.plan[1].to_string(), "expose checkout-v2 10%");
        assert_eq!(p.flags, [(String::new(), "checkout-v2".to_string())]);
    }

    #[test]
    fn expose_steps_need_a_control_of_the_exposure_kind() {
        let kind_of = |id: &str| match id {
            "flags" => Some(PluginKind::Exposure),
            "slack" => Some(PluginKind::Notifier),
            _ => None,
        };
        let plan = [route(&[("2.0.0", 100)]), expose("", 10)];
        assert_eq!(
            exposure_problems("production", &plan, None, &kind_of),
            [
                "environment `production`: plan step 2 (expose checkout-v2 10%): no exposure control: set `exposure = \"<plugin id>\"` in [environments.production]"
            ]
        );
        assert!(exposure_problems("production", &plan, Some("flags"), &kind_of).is_empty());
        let plan = [expose("slack", 10), expose("nope", 150)];
        assert_eq!(
            exposure_problems("production", &plan, Some("flags"), &kind_of),
            [
                "environment `production`: plan step 1 (expose checkout-v2 10% (via slack)): plugin `slack` is a notifier, not an exposure plugin",
                "environment `production`: plan step 2 (expose checkout-v2 150% (via nope)): 150% is outside 0-100",
                "environment `production`: plan step 2 (expose checkout-v2 150% (via nope)): exposure control `nope` is not a configured plugin",
            ]
        );
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
