//! `builtin:blue-green`: brings the new release up in the idle colour at full
//! size with no traffic, runs pre-promotion analysis, optionally waits for an
//! approval, switches all traffic at once, runs post-promotion analysis, and
//! keeps the old colour for `scale_down_delay` as an instant rollback before
//! removing it. Rollback: all traffic to the old colour, remove the new one.

use rollcage_sdk::Strategy;
use rollcage_sdk::strategy::plan::{apply, back_to_stable, first_deployment, next, route};
use rollcage_sdk::types::{Action, AnalysisRequest, DeployState, Pause, Release};
use serde::Deserialize;

/// The strategy's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Switch without waiting for a person (default true).
    #[serde(default = "default_true")]
    pub auto_promote: bool,
    /// Checks run on the new colour before the switch; the environment's
    /// checks when absent; none when empty.
    #[serde(default)]
    pub pre_promotion_analysis: Option<Vec<String>>,
    /// Checks run after the switch; the environment's checks when absent.
    #[serde(default)]
    pub post_promotion_analysis: Option<Vec<String>>,
    /// How long the old colour stays up after the switch (default "30s").
    #[serde(default = "default_delay")]
    pub scale_down_delay: String,
}

fn default_true() -> bool {
    true
}
fn default_delay() -> String {
    "30s".into()
}

impl Params {
    /// Parse and check; every problem is returned.
    pub fn parse(json: &str) -> Result<(Params, u64), Vec<String>> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let params: Params =
            serde_json::from_str(json).map_err(|e| vec![format!("blue-green: {e}")])?;
        match rollcage_sdk::duration::parse(&params.scale_down_delay) {
            Ok(d) => Ok((params, d.as_millis() as u64)),
            Err(e) => Err(vec![format!("scale_down_delay: {e}")]),
        }
    }
}

/// The colour the new release goes to: the one the stable release is not in.
/// Once the new release was applied, the history says which colour it took,
/// so the answer never changes during a run.
pub fn colours(state: &DeployState) -> (Option<String>, String) {
    let applied = state.history.iter().find_map(|h| match &h.action {
        Action::ApplySlot(s) if s.release.version == state.release.version => Some(s.name.clone()),
        _ => None,
    });
    let stable = state.stable.as_ref().and_then(|stable| {
        state
            .status
            .slots
            .iter()
            .find(|s| s.release == stable.version && Some(&s.name) != applied.as_ref())
            .map(|s| s.name.clone())
            .or_else(|| applied.as_ref().map(|a| other(a).to_string()))
            .or_else(|| Some("blue".to_string()))
    });
    let new = applied.unwrap_or_else(|| match &stable {
        Some(s) => other(s).to_string(),
        None => "blue".to_string(),
    });
    (stable, new)
}

fn other(colour: &str) -> &'static str {
    if colour == "blue" { "green" } else { "blue" }
}

/// The full forward plan from the `stable` colour (if any) to `new`.
pub fn plan(
    params: &Params,
    delay_ms: u64,
    replicas: u32,
    stable: Option<&str>,
    new: &str,
    release: &Release,
) -> Vec<Action> {
    let Some(stable) = stable else {
        return first_deployment(new, release, replicas);
    };
    let analyze = |checks: &Option<Vec<String>>| match checks {
        Some(c) if c.is_empty() => None,
        Some(c) => Some(Action::Analyze(AnalysisRequest {
            checks: c.clone(),
            slot: new.to_string(),
        })),
        None => Some(Action::Analyze(AnalysisRequest {
            checks: vec![],
            slot: new.to_string(),
        })),
    };
    let mut actions = vec![apply(new, release, replicas.max(1))];
    actions.extend(analyze(&params.pre_promotion_analysis));
    if !params.auto_promote {
        actions.push(Action::Pause(Pause::Approval));
    }
    actions.push(route(&[(new, 100)]));
    actions.extend(analyze(&params.post_promotion_analysis));
    if delay_ms > 0 {
        actions.push(Action::Pause(Pause::Duration(delay_ms)));
    }
    actions.push(Action::RemoveSlot(stable.to_string()));
    actions.push(Action::Done);
    actions
}

/// The blue-green strategy.
pub struct BlueGreen;

impl Strategy for BlueGreen {
    fn validate(params: String) -> Result<(), Vec<String>> {
        Params::parse(&params).map(|_| ())
    }

    fn decide(state: DeployState) -> Result<Action, String> {
        let (params, delay) = Params::parse(&state.params).map_err(|p| p.join("; "))?;
        let (stable, new) = colours(&state);
        let plan = plan(
            &params,
            delay,
            state.replicas,
            stable.as_deref(),
            &new,
            &state.release,
        );
        Ok(next(&plan, state.history.len()))
    }

    fn rollback(state: DeployState) -> Result<Vec<Action>, String> {
        let (stable, new) = colours(&state);
        Ok(back_to_stable(stable.as_deref(), &new))
    }
}

rollcage_sdk::export_strategy!(BlueGreen);

#[cfg(test)]
mod tests;
