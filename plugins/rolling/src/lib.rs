//! `builtin:rolling`: replaces a service's instances in batches, with
//! Kubernetes' `max_surge` / `max_unavailable` semantics, and analysis between
//! batches. One difference: a step that would leave no instance running (one
//! replica, no surge) surges by one instead, so traffic always has somewhere
//! to go.
//!
//! The new release runs in a slot named after its version; the previous
//! release's slot shrinks as the new one grows, and traffic follows the ready
//! instances. The whole plan is a function of the parameters and the replica
//! count, and `decide` returns the plan's next step after the recorded
//! history, so a run cut at any point (a crash) resumes where it was.

use rollcage_sdk::Strategy;
use rollcage_sdk::strategy::plan::{
    apply, back_to_stable, first_deployment, next, route, version_slot,
};
use rollcage_sdk::types::{Action, AnalysisRequest, DeployState, Release, StepRecord};
use serde::Deserialize;

/// A count or a percentage of the replica count (`2` or `"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl TryFrom<serde_json::Value> for Amount {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        match &v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Amount::Count)
                .ok_or_else(|| format!("{v} is not a non-negative count")),
            serde_json::Value::String(s) => {
                let pct = s
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .filter(|p| *p <= 100);
                pct.map(Amount::Percent)
                    .ok_or_else(|| format!("\"{s}\" is not a percentage such as \"25%\""))
            }
            _ => Err(format!("{v} is neither a count nor a percentage")),
        }
    }
}

impl Amount {
    /// Resolve against `replicas`; percentages round up (surge) or down (unavailable)
    /// as Kubernetes does.
    fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let scaled = replicas as u64 * p as u64;
                let r = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                r as u32
            }
        }
    }
}

/// The strategy's parameters (`strategy = { plugin = "rolling", ... }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Instances above the replica count allowed during the rollout (default 25%).
    #[serde(default = "default_surge")]
    pub max_surge: Amount,
    /// Instances below the replica count allowed during the rollout (default 0).
    #[serde(default = "default_unavailable")]
    pub max_unavailable: Amount,
    /// Run the environment's analysis after every batch (default true).
    #[serde(default = "default_true")]
    pub analysis: bool,
}

fn default_surge() -> Amount {
    Amount::Percent(25)
}
fn default_unavailable() -> Amount {
    Amount::Count(0)
}
fn default_true() -> bool {
    true
}

impl Params {
    /// Parse and check; every problem is returned.
    pub fn parse(json: &str) -> Result<Params, Vec<String>> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let params: Params = serde_json::from_str(json).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        if params.max_surge == Amount::Count(0) && params.max_unavailable == Amount::Count(0)
            || params.max_surge == Amount::Percent(0)
                && params.max_unavailable == Amount::Percent(0)
        {
            problems.push("max_surge and max_unavailable cannot both be 0".into());
        }
        if problems.is_empty() {
            Ok(params)
        } else {
            Err(problems)
        }
    }
}

/// Slot name for a release: its version, so that two releases never share a slot.
pub fn slot_name(release: &Release) -> String {
    version_slot(release)
}

/// The instance counts `(new, old)` after each batch, starting from
/// `(0, n)` and ending at `(n, 0)`.
pub fn batches(params: &Params, n: u32) -> Vec<(u32, u32)> {
    let surge = params.max_surge.resolve(n, true);
    let unavailable = params.max_unavailable.resolve(n, false);
    // Both resolving to 0 (a small percentage of few replicas) would never
    // progress; Kubernetes then allows one unavailable.
    let unavailable = if surge == 0 && unavailable == 0 {
        1
    } else {
        unavailable
    };
    let mut pairs = vec![(0, n)];
    let (mut cur_new, mut cur_old) = (0u32, n);
    while cur_new < n || cur_old > 0 {
        let mut next_new = (n + surge).saturating_sub(cur_old).min(n).max(cur_new);
        let mut next_old = n
            .saturating_sub(unavailable)
            .saturating_sub(next_new)
            .min(cur_old);
        // Never leave the service with no instance at all (one replica with
        // max_unavailable 1 and no surge would): surge by one instead.
        if next_new == 0 && next_old == 0 {
            next_new = 1;
            next_old = cur_old;
        }
        pairs.push((next_new, next_old));
        (cur_new, cur_old) = (next_new, next_old);
    }
    pairs
}

/// Traffic follows capacity: each slot's share of the instances.
fn split(new_slot: &str, new: u32, old_slot: &str, old: u32) -> Action {
    let w_new = new * 100 / (new + old);
    route(&[(new_slot, w_new), (old_slot, 100 - w_new)])
}

/// The full forward plan for `replicas` instances, from `old` (the running
/// release's slot, if any) to `new`. Each batch: grow the new slot, move
/// traffic, shrink the old slot, analyse.
pub fn plan(params: &Params, replicas: u32, old: Option<&Release>, new: &Release) -> Vec<Action> {
    let new_slot = slot_name(new);
    let old = match old {
        Some(old) if slot_name(old) != new_slot => old,
        // First deployment (or a redeploy of the same version): all at once.
        _ => return first_deployment(&new_slot, new, replicas),
    };
    let old_slot = slot_name(old);
    let n = replicas.max(1);
    let mut actions = Vec::new();
    for pair in batches(params, n).windows(2) {
        let [(cur_new, cur_old), (next_new, next_old)] = [pair[0], pair[1]];
        if next_new > cur_new {
            actions.push(apply(&new_slot, new, next_new));
        }
        if next_old == 0 {
            actions.push(route(&[(new_slot.as_str(), 100)]));
            actions.push(Action::RemoveSlot(old_slot.clone()));
        } else {
            actions.push(split(&new_slot, next_new, &old_slot, next_old));
            if next_old < cur_old {
                actions.push(apply(&old_slot, old, next_old));
            }
        }
        if params.analysis && next_new < n {
            actions.push(Action::Analyze(AnalysisRequest {
                checks: vec![],
                slot: new_slot.clone(),
            }));
        }
    }
    actions.push(Action::Done);
    actions
}

/// The rollback from wherever `history` got: the batches walked back in
/// reverse order (grow the old slot, move traffic back, shrink the new one),
/// then the new slot removed.
pub fn rollback_plan(
    params: &Params,
    replicas: u32,
    old: Option<&Release>,
    new: &Release,
    history: &[StepRecord],
) -> Vec<Action> {
    let new_slot = slot_name(new);
    let Some(old) = old.filter(|old| slot_name(old) != new_slot) else {
        return back_to_stable(None, &new_slot);
    };
    let old_slot = slot_name(old);
    let n = replicas.max(1);
    let pairs = batches(params, n);
    // Batches whose route was executed; a new-slot apply after the last
    // route means the next batch had begun.
    let routes = history
        .iter()
        .filter(|h| matches!(h.action, Action::Route(_)))
        .count();
    let begun = history
        .iter()
        .rev()
        .take_while(|h| !matches!(h.action, Action::Route(_)))
        .any(|h| matches!(&h.action, Action::ApplySlot(s) if s.name == new_slot));
    let reached = (routes + usize::from(begun)).min(pairs.len() - 1);
    let (mut cur_new, mut cur_old) = pairs[reached];
    let mut actions = Vec::new();
    for &(prev_new, prev_old) in pairs[..reached].iter().rev() {
        if prev_old > cur_old {
            actions.push(apply(&old_slot, old, prev_old));
        }
        if prev_new == 0 {
            actions.push(route(&[(old_slot.as_str(), 100)]));
        } else {
            actions.push(split(&new_slot, prev_new, &old_slot, prev_old));
            if prev_new < cur_new {
                actions.push(apply(&new_slot, new, prev_new));
            }
        }
        (cur_new, cur_old) = (prev_new, prev_old);
    }
    if reached == 0 {
        // Nothing of the new release took traffic yet.
        actions.push(apply(&old_slot, old, n));
        actions.push(route(&[(old_slot.as_str(), 100)]));
    }
    actions.push(Action::RemoveSlot(new_slot));
    actions
}

/// The rolling strategy.
pub struct Rolling;

impl Strategy for Rolling {
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
        );
        Ok(next(&plan, state.history.len()))
    }

    /// Walk the batches back in reverse order to the old release at full
    /// size, then remove the new slot. Without an old release, remove the
    /// new slot.
    fn rollback(state: DeployState) -> Result<Vec<Action>, String> {
        let params = Params::parse(&state.params).map_err(|p| p.join("; "))?;
        Ok(rollback_plan(
            &params,
            state.replicas,
            state.stable.as_ref(),
            &state.release,
            &state.history,
        ))
    }
}

rollcage_sdk::export_strategy!(Rolling);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::testing::{Slots, release, simulate, state};

    fn params(json: &str) -> Params {
        Params::parse(json).unwrap()
    }

    /// The shared simulator's invariants, plus rolling's own: never more
    /// than `replicas + max_surge` instances.
    fn check_invariants(p: &Params, replicas: u32, actions: &[Action]) {
        let start = Slots::from([("1.0.0".to_string(), replicas)]);
        let end = simulate(&start, actions).unwrap_or_else(|e| panic!("{e}: {actions:?}"));
        assert_eq!(end, Slots::from([("2.0.0".to_string(), replicas)]));
        let surge = p.max_surge.resolve(replicas, true).max(1);
        for cut in 1..=actions.len() {
            let total: u32 = simulate(&start, &actions[..cut]).unwrap().values().sum();
            assert!(total <= replicas + surge, "surge exceeded in {actions:?}");
        }
    }

    #[test]
    fn surge_of_one_replaces_one_at_a_time() {
        let p = params(r#"{"max_surge": 1, "max_unavailable": 0}"#);
        let actions = plan(&p, 3, Some(&release("1.0.0")), &release("2.0.0"));
        let applies: Vec<(String, u32)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::ApplySlot(s) => Some((s.name.clone(), s.replicas)),
                _ => None,
            })
            .collect();
        assert_eq!(
            applies,
            [
                ("2.0.0", 1),
                ("1.0.0", 2),
                ("2.0.0", 2),
                ("1.0.0", 1),
                ("2.0.0", 3)
            ]
            .map(|(s, n)| (s.to_string(), n))
        );
        assert_eq!(actions.last(), Some(&Action::Done));
        check_invariants(&p, 3, &actions);
    }

    #[test]
    fn invariants_hold_for_many_shapes() {
        for replicas in [1, 2, 3, 4, 5, 10, 17] {
            for (s, u) in [
                ("1", "0"),
                ("0", "1"),
                ("\"25%\"", "0"),
                ("\"50%\"", "\"50%\""),
                ("2", "1"),
                ("\"10%\"", "\"10%\""),
            ] {
                let p = params(&format!(r#"{{"max_surge": {s}, "max_unavailable": {u}}}"#));
                let actions = plan(&p, replicas, Some(&release("1.0.0")), &release("2.0.0"));
                check_invariants(&p, replicas, &actions);
            }
        }
    }

    #[test]
    fn first_deployment_goes_all_at_once() {
        let actions = plan(&params("{}"), 3, None, &release("1.0.0"));
        assert_eq!(actions.len(), 3);
        assert!(matches!(&actions[0], Action::ApplySlot(s) if s.replicas == 3));
    }

    #[test]
    fn decide_resumes_from_any_cut_of_the_history() {
        let p = r#"{"max_surge": 1}"#;
        let full = plan(&params(p), 4, Some(&release("1.0.0")), &release("2.0.0"));
        for cut in 0..=full.len() {
            let next =
                Rolling::decide(state(p, Some(("1.0.0", "1.0.0")), "2.0.0", 4, &full[..cut]))
                    .unwrap();
            assert_eq!(next, full.get(cut).cloned().unwrap_or(Action::Done));
        }
    }

    #[test]
    fn rollback_walks_the_batches_back_from_any_cut() {
        let p = r#"{"max_surge": 1}"#;
        let full = plan(&params(p), 3, Some(&release("1.0.0")), &release("2.0.0"));
        let start = Slots::from([("1.0.0".to_string(), 3)]);
        let removal = full
            .iter()
            .position(|a| *a == Action::RemoveSlot("1.0.0".into()))
            .unwrap();
        for cut in 0..=removal {
            let st = state(p, Some(("1.0.0", "1.0.0")), "2.0.0", 3, &full[..cut]);
            let back = Rolling::rollback(st).unwrap();
            let mut replay = full[..cut].to_vec();
            replay.extend(back.clone());
            let end = simulate(&start, &replay).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(end, start, "cut {cut}: {back:?}");
            // Never more than one instance above the replica count on the way back.
            for step in 1..=replay.len() {
                let total: u32 = simulate(&start, &replay[..step]).unwrap().values().sum();
                assert!(total <= 4, "cut {cut}: {replay:?}");
            }
        }
        // From the middle, the old slot grows back one batch at a time.
        let st = state(p, Some(("1.0.0", "1.0.0")), "2.0.0", 3, &full[..8]);
        let old_sizes: Vec<u32> = Rolling::rollback(st)
            .unwrap()
            .iter()
            .filter_map(|a| match a {
                Action::ApplySlot(s) if s.name == "1.0.0" => Some(s.replicas),
                _ => None,
            })
            .collect();
        assert_eq!(old_sizes, [2, 3]);
    }

    #[test]
    fn bad_params_are_reported() {
        assert!(Params::parse(r#"{"max_surge": 0, "max_unavailable": 0}"#).is_err());
        assert!(Params::parse(r#"{"max_surge": "x%"}"#).is_err());
        assert!(Params::parse(r#"{"surge": 1}"#).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::Strategy;
    use rollcage_sdk::testing::{Slots, release, simulate};

    fn amount() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u32..5).prop_map(|n| n.to_string()),
            (0u32..=100).prop_map(|p| format!("\"{p}%\"")),
        ]
    }

    proptest! {
        #[test]
        fn any_surge_and_unavailability_keep_the_invariants(
            surge in amount(), unavailable in amount(), replicas in 1u32..25, analysis in any::<bool>()
        ) {
            let json = format!(r#"{{"max_surge": {surge}, "max_unavailable": {unavailable}, "analysis": {analysis}}}"#);
            prop_assume!(Params::parse(&json).is_ok());
            let p = Params::parse(&json).unwrap();
            let actions = plan(&p, replicas, Some(&release("1.0.0")), &release("2.0.0"));
            let start = Slots::from([("1.0.0".to_string(), replicas)]);
            let end = simulate(&start, &actions).map_err(TestCaseError::fail)?;
            prop_assert_eq!(end, Slots::from([("2.0.0".to_string(), replicas)]));
        }

        #[test]
        fn rollback_from_any_point_restores_the_old_release(
            surge in amount(), unavailable in amount(), replicas in 1u32..25, cut in 0usize..200
        ) {
            let json = format!(r#"{{"max_surge": {surge}, "max_unavailable": {unavailable}}}"#);
            prop_assume!(Params::parse(&json).is_ok());
            let p = Params::parse(&json).unwrap();
            let (old, new) = (release("1.0.0"), release("2.0.0"));
            let full = plan(&p, replicas, Some(&old), &new);
            let removal = full.iter().position(|a| *a == Action::RemoveSlot("1.0.0".into())).unwrap();
            let cut = cut % (removal + 1);
            let history: Vec<StepRecord> = full[..cut]
                .iter()
                .map(|a| StepRecord { action: a.clone(), outcome: rollcage_sdk::types::Outcome::Ok })
                .collect();
            let mut replay = full[..cut].to_vec();
            replay.extend(rollback_plan(&p, replicas, Some(&old), &new, &history));
            let start = Slots::from([("1.0.0".to_string(), replicas)]);
            prop_assert_eq!(simulate(&start, &replay).map_err(TestCaseError::fail)?, start);
        }
    }
}
