//! `builtin:canary`: runs the new release beside the stable one and shifts
//! traffic to it in weighted steps, with analysis after each weight change,
//! timed pauses and approvals between steps. On promotion the canary scales
//! to full size, takes all traffic and becomes the stable release; the old
//! stable slot is removed. Rollback: all traffic to stable, remove the canary.
//!
//! Exposure steps (`{ expose = 10 }`) move the feature flag named by
//! `flag` to a share of users through the environment's exposure plugin;
//! the engine sets every flag a failed run changed back to its exposure
//! before the run, so the rollback plan here only moves traffic.
//!
//! The plan is a pure function of the parameters, the replica count and the
//! releases; `decide` returns the step after the recorded history, so a run
//! cut at any point resumes where it was.

use rollcage_sdk::Strategy;
use rollcage_sdk::strategy::plan::{
    apply, back_to_stable, first_deployment, next, route, version_slot,
};
use rollcage_sdk::types::{Action, AnalysisRequest, DeployState, ExposureChange, Pause, Release};
use serde::Deserialize;

/// One step of `steps`: a bare weight, or a table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StepSpec {
    /// `10`: send 10% of traffic to the canary.
    Weight(u32),
    /// `{ weight = 10 }`, `{ weight = 10, analysis = false }`, `{ pause = "5m" }`,
    /// `{ pause = "approval" }`, `{ analysis = ["error-rate"] }`, `{ expose = 10 }`.
    Table(StepTable),
}

/// The table form of a step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTable {
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub pause: Option<String>,
    #[serde(default)]
    pub analysis: Option<AnalysisSpec>,
    /// Expose the feature flag `flag` to this share of users (0-100).
    #[serde(default)]
    pub expose: Option<u32>,
}

/// `analysis = false` (skip the automatic analysis) or a list of checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum AnalysisSpec {
    Enabled(bool),
    Checks(Vec<String>),
}

/// The strategy's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The steps, in order (default `[10, 25, 50, 100]`).
    #[serde(default = "default_steps")]
    pub steps: Vec<StepSpec>,
    /// Canary instances while it takes part of the traffic; by default
    /// proportional to its weight (at least one).
    #[serde(default)]
    pub canary_replicas: Option<u32>,
    /// Run analysis after every weight change unless a step says otherwise (default true).
    #[serde(default = "default_true")]
    pub analysis: bool,
    /// The feature flag `expose` steps move, by its name in the flag service.
    #[serde(default)]
    pub flag: Option<String>,
}

fn default_steps() -> Vec<StepSpec> {
    [10, 25, 50, 100].map(StepSpec::Weight).to_vec()
}
fn default_true() -> bool {
    true
}

/// A step after validation.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Weight { weight: u32, analysis: bool },
    Pause(Pause),
    Analysis(Vec<String>),
    Expose { percent: u32, analysis: bool },
}

impl Params {
    /// Parse and check; every problem is returned, each naming its step.
    pub fn parse(json: &str) -> Result<Params, Vec<String>> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let params: Params =
            serde_json::from_str(json).map_err(|e| vec![format!("canary: {e}")])?;
        params.steps().map(|_| params)
    }

    fn steps(&self) -> Result<Vec<Step>, Vec<String>> {
        let mut problems = Vec::new();
        let mut steps = Vec::new();
        let mut last_weight = 0;
        for (i, spec) in self.steps.iter().enumerate() {
            let n = i + 1;
            let step = match spec {
                StepSpec::Weight(w) => Some(Step::Weight {
                    weight: *w,
                    analysis: self.analysis,
                }),
                StepSpec::Table(StepTable {
                    weight: None,
                    pause: None,
                    analysis,
                    expose: Some(percent),
                }) if !matches!(analysis, Some(AnalysisSpec::Checks(_))) => {
                    if *percent > 100 {
                        problems.push(format!(
                            "steps[{n}]: expose {percent} is outside 0-100 (the share of users who get the flag)"
                        ));
                    }
                    if self.flag.as_deref().is_none_or(str::is_empty) {
                        problems.push(format!(
                            "steps[{n}]: an expose step needs `flag`, the feature flag's name in the flag service"
                        ));
                    }
                    Some(Step::Expose {
                        percent: *percent,
                        analysis: match analysis {
                            Some(AnalysisSpec::Enabled(a)) => *a,
                            _ => self.analysis,
                        },
                    })
                }
                StepSpec::Table(t) if t.expose.is_some() => {
                    problems.push(format!(
                        "steps[{n}]: an expose step is {{ expose = N }} (or {{ expose = N, analysis = false }}), with nothing else"
                    ));
                    None
                }
                StepSpec::Table(t) => match (t.weight, &t.pause, &t.analysis) {
                    (Some(w), None, None) => Some(Step::Weight {
                        weight: w,
                        analysis: self.analysis,
                    }),
                    (Some(w), None, Some(AnalysisSpec::Enabled(a))) => Some(Step::Weight {
                        weight: w,
                        analysis: *a,
                    }),
                    (None, Some(p), None) if p == "approval" => Some(Step::Pause(Pause::Approval)),
                    (None, Some(p), None) => match rollcage_sdk::duration::parse(p) {
                        Ok(d) => Some(Step::Pause(Pause::Duration(d.as_millis() as u64))),
                        Err(e) => {
                            problems.push(format!("steps[{n}]: pause: {e} (or \"approval\")"));
                            None
                        }
                    },
                    (None, None, Some(AnalysisSpec::Checks(checks))) => {
                        Some(Step::Analysis(checks.clone()))
                    }
                    _ => {
                        problems.push(format!(
                            "steps[{n}]: a step is one of {{ weight = N }}, {{ pause = \"5m\" }}, {{ pause = \"approval\" }}, {{ analysis = [\"check\"] }}, {{ expose = N }}"
                        ));
                        None
                    }
                },
            };
            if let Some(Step::Weight { weight, .. }) = &step {
                if *weight > 100 {
                    problems.push(format!("steps[{n}]: weight {weight} is over 100"));
                } else if *weight < last_weight {
                    problems.push(format!(
                        "steps[{n}]: weight {weight} is below the previous weight {last_weight}; weights only grow"
                    ));
                }
                last_weight = *weight;
            }
            steps.extend(step);
        }
        if self.steps.is_empty() {
            problems.push("steps: give at least one step".into());
        }
        if self.canary_replicas == Some(0) {
            problems.push("canary_replicas: must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(steps)
        } else {
            Err(problems)
        }
    }
}

/// Canary instances at `weight`% of `replicas`.
fn canary_size(params: &Params, replicas: u32, weight: u32) -> u32 {
    if weight >= 100 {
        return replicas.max(1);
    }
    params
        .canary_replicas
        .unwrap_or_else(|| (replicas * weight).div_ceil(100))
        .max(1)
}

/// The full forward plan.
pub fn plan(
    params: &Params,
    replicas: u32,
    stable: Option<&Release>,
    new: &Release,
) -> Result<Vec<Action>, Vec<String>> {
    let steps = params.steps()?;
    let canary = version_slot(new);
    let expose = |percent: u32| {
        Action::Expose(ExposureChange {
            control: String::new(),
            flag: params.flag.clone().unwrap_or_default(),
            percent,
        })
    };
    let stable_slot = match stable.map(version_slot) {
        Some(s) if s != canary => s,
        _ => {
            // Nothing to compare with: everything at once, the flag too.
            let mut actions = first_deployment(&canary, new, replicas);
            let done = actions.pop();
            for step in &steps {
                if let Step::Expose { percent, .. } = step {
                    actions.push(expose(*percent));
                }
            }
            actions.extend(done);
            return Ok(actions);
        }
    };
    let analyze = |checks: Vec<String>| {
        Action::Analyze(AnalysisRequest {
            checks,
            slot: canary.clone(),
        })
    };
    let mut actions = Vec::new();
    let mut size = 0;
    let mut weight = 0;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Weight {
                weight: w,
                analysis,
            } => {
                let wanted = if *w == 0 {
                    0
                } else {
                    canary_size(params, replicas, *w)
                };
                if wanted > size {
                    actions.push(apply(&canary, new, wanted));
                    size = wanted;
                }
                if *w != weight {
                    actions.push(route(&[
                        (canary.as_str(), *w),
                        (stable_slot.as_str(), 100 - w),
                    ]));
                    weight = *w;
                }
                // An explicit analysis step right after replaces the automatic one.
                let explicit_next = matches!(steps.get(i + 1), Some(Step::Analysis(_)));
                if *analysis && !explicit_next && *w > 0 {
                    actions.push(analyze(vec![]));
                }
            }
            Step::Pause(p) => actions.push(Action::Pause(*p)),
            Step::Analysis(checks) => actions.push(analyze(checks.clone())),
            Step::Expose { percent, analysis } => {
                actions.push(expose(*percent));
                let explicit_next = matches!(steps.get(i + 1), Some(Step::Analysis(_)));
                if *analysis && !explicit_next && *percent > 0 {
                    actions.push(analyze(vec![]));
                }
            }
        }
    }
    // Promotion: the canary becomes the new stable release.
    if size != replicas.max(1) {
        actions.push(apply(&canary, new, replicas.max(1)));
    }
    if weight != 100 {
        actions.push(route(&[(canary.as_str(), 100)]));
    }
    actions.push(Action::RemoveSlot(stable_slot));
    actions.push(Action::Done);
    Ok(actions)
}

/// The canary strategy.
pub struct Canary;

impl Strategy for Canary {
    fn validate(params: String) -> Result<(), Vec<String>> {
        Params::parse(&params).map(|_| ())
    }

    fn decide(state: DeployState) -> Result<Action, String> {
        let params = Params::parse(&state.params).map_err(|p| p.join("; "))?;
        let plan = plan(
            &params,
            state.replicas,
            state.stable.as_ref(),
            &state.release,
        )
        .map_err(|p| p.join("; "))?;
        Ok(next(&plan, state.history.len()))
    }

    fn rollback(state: DeployState) -> Result<Vec<Action>, String> {
        let canary = version_slot(&state.release);
        let stable = state
            .stable
            .as_ref()
            .map(version_slot)
            .filter(|s| *s != canary);
        Ok(back_to_stable(stable.as_deref(), &canary))
    }
}

rollcage_sdk::export_strategy!(Canary);

#[cfg(test)]
mod tests;
