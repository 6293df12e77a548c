//! Test helpers for strategy authors (feature `testing`).
//!
//! [`simulate`] replays a list of actions against an imaginary environment
//! whose slots become ready as soon as they are applied (the engine waits
//! for readiness before asking the strategy again), and checks after every
//! step the invariants every strategy must keep: a route's weights sum to
//! 100, no weight goes to a slot without instances, and no slot that
//! receives traffic is scaled to zero or removed.

use std::collections::BTreeMap;

use crate::types::Action;

/// Slot name to instance count.
pub type Slots = BTreeMap<String, u32>;

/// Replay `actions` from `initial` slots; the slots at the end, or the first
/// broken invariant with the step it broke at.
pub fn simulate(initial: &Slots, actions: &[Action]) -> Result<Slots, String> {
    let mut slots = initial.clone();
    // Before any route, traffic goes to the initial slots.
    let mut routed: Vec<String> = initial.keys().cloned().collect();
    for (i, action) in actions.iter().enumerate() {
        match action {
            Action::ApplySlot(spec) => {
                if spec.replicas == 0 && routed.contains(&spec.name) {
                    return Err(format!(
                        "step {i}: slot `{}` scaled to zero while it receives traffic",
                        spec.name
                    ));
                }
                slots.insert(spec.name.clone(), spec.replicas);
            }
            Action::RemoveSlot(name) => {
                if routed.contains(name) {
                    return Err(format!(
                        "step {i}: slot `{name}` removed while it receives traffic"
                    ));
                }
                slots.remove(name);
            }
            Action::Route(weights) => {
                routed = weights
                    .iter()
                    .filter(|w| w.weight > 0)
                    .map(|w| w.slot.clone())
                    .collect();
                let sum: u32 = weights.iter().map(|w| w.weight).sum();
                if sum != 100 {
                    return Err(format!("step {i}: route weights sum to {sum}: {weights:?}"));
                }
                for w in weights.iter().filter(|w| w.weight > 0) {
                    if slots.get(&w.slot).copied().unwrap_or(0) == 0 {
                        return Err(format!(
                            "step {i}: {}% of traffic routed to slot `{}`, which has no instance",
                            w.weight, w.slot
                        ));
                    }
                }
            }
            Action::Pause(_) | Action::Analyze(_) | Action::Done => {}
        }
    }
    Ok(slots)
}

use crate::types::{
    DeployState, EnvironmentStatus, Event, EventKind, Outcome, Release, SlotStatus, StepRecord,
};

/// A release with only a version.
pub fn release(version: &str) -> Release {
    Release {
        version: version.into(),
        notes: None,
        params: vec![],
    }
}

/// The state a strategy sees in `production` when moving from `stable`
/// (running in `stable_slot` with `replicas` instances, if any) to
/// `release`, after `history` succeeded.
pub fn state(
    params: &str,
    stable: Option<(&str, &str)>,
    release_version: &str,
    replicas: u32,
    history: &[Action],
) -> DeployState {
    DeployState {
        environment: "production".into(),
        release: release(release_version),
        stable: stable.map(|(version, _)| release(version)),
        replicas,
        params: params.into(),
        history: history
            .iter()
            .map(|a| StepRecord {
                action: a.clone(),
                outcome: Outcome::Ok,
            })
            .collect(),
        status: EnvironmentStatus {
            slots: stable
                .map(|(version, slot)| SlotStatus {
                    name: slot.into(),
                    release: version.into(),
                    desired: replicas,
                    ready: replicas,
                    endpoints: vec![],
                })
                .into_iter()
                .collect(),
            weights: vec![],
        },
    }
}

/// A sample event of `kind`: pipeline `api`, release 1.2.0 in production,
/// with analysis fields, a run link and an `issue_key` parameter.
pub fn sample_event(kind: EventKind) -> Event {
    Event {
        kind,
        run_id: "run-42".into(),
        pipeline: "api".into(),
        environment: Some("production".into()),
        release: Release {
            version: "1.2.0".into(),
            notes: Some("faster checkout".into()),
            params: vec![("issue_key".into(), "OPS-12".into())],
        },
        message: "error ratio 0.31 above 0.05".into(),
        fields: vec![
            ("error_ratio".into(), "0.31".into()),
            ("weight".into(), "10".into()),
        ],
        url: Some("http://127.0.0.1:7070/v1/runs/run-42".into()),
        timestamp_ms: 1_700_000_000_000,
    }
}
