//! __NAME__: a strategy. Strategies are pure functions of the run's
//! recorded history: `decide` returns the next step of a plan known up
//! front, so a run can be previewed, replayed and resumed. This one starts
//! the new release beside the stable one, sends it `first_weight` percent
//! of traffic, has it analysed, then moves all traffic and removes the old
//! slot. Any failure makes the engine execute `rollback`.

use rollcage_sdk::Strategy;
use rollcage_sdk::strategy::plan;
use rollcage_sdk::types::{Action, AnalysisRequest, DeployState};
use serde::Deserialize;

/// The strategy's parameters (the rest of the environment's `strategy` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Percent of traffic for the first step (default 10).
    #[serde(default = "default_first_weight")]
    first_weight: u32,
}

fn default_first_weight() -> u32 {
    10
}

fn params(text: &str) -> Result<Params, String> {
    let p: Params = serde_json::from_str(text).map_err(|e| format!("parameters: {e}"))?;
    if !(1..=99).contains(&p.first_weight) {
        return Err(format!("first_weight = {}: expected 1 to 99", p.first_weight));
    }
    Ok(p)
}

/// The whole plan.
fn steps(state: &DeployState, p: &Params) -> Vec<Action> {
    let new = plan::version_slot(&state.release);
    // Nothing running yet, or this very release again: all at once (a split
    // between a slot and itself would mean nothing).
    let stable = state.stable.as_ref().map(plan::version_slot);
    let Some(stable) = stable.filter(|s| *s != new) else {
        return plan::first_deployment(&new, &state.release, state.replicas);
    };
    vec![
        plan::apply(&new, &state.release, state.replicas),
        plan::route(&[(&new, p.first_weight), (&stable, 100 - p.first_weight)]),
        Action::Analyze(AnalysisRequest {
            checks: vec![],
            slot: new.clone(),
        }),
        plan::route(&[(&new, 100)]),
        Action::RemoveSlot(stable),
        Action::Done,
    ]
}

struct Plugin;

impl Strategy for Plugin {
    fn validate(text: String) -> Result<(), Vec<String>> {
        params(&text).map(|_| ()).map_err(|e| vec![e])
    }

    fn decide(state: DeployState) -> Result<Action, String> {
        let p = params(&state.params)?;
        Ok(plan::next(&steps(&state, &p), state.history.len()))
    }

    fn rollback(state: DeployState) -> Result<Vec<Action>, String> {
        let stable = state.stable.as_ref().map(plan::version_slot);
        Ok(plan::back_to_stable(stable.as_deref(), &plan::version_slot(&state.release)))
    }
}

rollcage_sdk::export_strategy!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked() {
        assert!(params("{}").is_ok());
        assert!(params(r#"{"first_weight": 100}"#).is_err());
        assert!(params(r#"{"first_wieght": 5}"#).is_err());
    }
}
