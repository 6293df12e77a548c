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
