//! The strategy kind: [`Strategy`] and [`export_strategy!`](crate::export_strategy).

use crate::types::{Action, DeployState};

#[doc(hidden)]
pub mod bindings {
    crate::kind_world!(
        pure "rollcage:plugin/strategy",
        "__export_strategy_world",
        "rollcage_sdk::strategy::bindings"
    );
}

/// A deployment strategy. Strategies are pure: they are granted nothing, and
/// their answers depend only on the state they are given, so a run can be
/// replayed, previewed and resumed after a crash.
///
/// ```ignore
/// use rollcage_sdk::{Strategy, types::{Action, DeployState, RouteWeight}};
///
/// struct AllAtOnce;
///
/// impl Strategy for AllAtOnce {
///     fn decide(state: DeployState) -> Result<Action, String> {
///         if state.history.is_empty() {
///             Ok(Action::Route(vec![RouteWeight { slot: "stable".into(), weight: 100 }]))
///         } else {
///             Ok(Action::Done)
///         }
///     }
///     fn rollback(_state: DeployState) -> Result<Vec<Action>, String> {
///         Ok(vec![])
///     }
/// }
///
/// rollcage_sdk::export_strategy!(AllAtOnce);
/// ```
pub trait Strategy {
    /// Check the strategy's parameters (JSON); return every problem found.
    /// The default accepts anything.
    fn validate(params: String) -> Result<(), Vec<String>> {
        let _ = params;
        Ok(())
    }
    /// The next action, given everything done so far.
    fn decide(state: DeployState) -> Result<Action, String>;
    /// The actions that put the environment back on the stable release.
    fn rollback(state: DeployState) -> Result<Vec<Action>, String>;
}

#[doc(hidden)]
pub use bindings::exports::rollcage::plugin::strategy_api::Guest as __Guest;

/// Export a type implementing [`Strategy`] as this component's strategy.
#[macro_export]
macro_rules! export_strategy {
    ($t:ident) => {
        impl $crate::strategy::__Guest for $t {
            fn validate(params: String) -> Result<(), Vec<String>> {
                <$t as $crate::Strategy>::validate(params)
            }
            fn decide(
                state: $crate::types::DeployState,
            ) -> Result<$crate::types::Action, String> {
                <$t as $crate::Strategy>::decide(state)
            }
            fn rollback(
                state: $crate::types::DeployState,
            ) -> Result<Vec<$crate::types::Action>, String> {
                <$t as $crate::Strategy>::rollback(state)
            }
        }
        $crate::strategy::bindings::__export_strategy_world!($t with_types_in $crate::strategy::bindings);
    };
}

/// Helpers shared by strategies.
pub mod plan {
    use crate::types::{Action, Release, RouteWeight, SlotSpec};

    /// The conventional slot of a release: named after its version, so two
    /// releases never share a slot and a slot's name says what it runs.
    pub fn version_slot(release: &Release) -> String {
        release.version.clone()
    }

    /// `apply-slot` of `replicas` instances of `release` in `slot`.
    pub fn apply(slot: &str, release: &Release, replicas: u32) -> Action {
        Action::ApplySlot(SlotSpec {
            name: slot.to_string(),
            release: release.clone(),
            replicas,
        })
    }

    /// `route` with these `(slot, weight)` pairs; zero weights are left out.
    pub fn route(weights: &[(&str, u32)]) -> Action {
        Action::Route(
            weights
                .iter()
                .filter(|(_, w)| *w > 0)
                .map(|(slot, weight)| RouteWeight {
                    slot: slot.to_string(),
                    weight: *weight,
                })
                .collect(),
        )
    }

    /// The step of `plan` after the `done` steps already recorded (`Done`
    /// past its end). For strategies whose whole plan is known up front:
    /// the engine rolls back on any failure, so a history it asks about is
    /// a prefix of the plan, possibly cut by a crash.
    pub fn next(plan: &[Action], done: usize) -> Action {
        plan.get(done).cloned().unwrap_or(Action::Done)
    }

    /// A first deployment (nothing running yet): everything at once.
    pub fn first_deployment(slot: &str, release: &Release, replicas: u32) -> Vec<Action> {
        vec![
            apply(slot, release, replicas),
            route(&[(slot, 100)]),
            Action::Done,
        ]
    }

    /// The standard rollback: all traffic back to the stable slot (if there
    /// is one), then remove the new slot.
    pub fn back_to_stable(stable_slot: Option<&str>, new_slot: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(stable) = stable_slot {
            actions.push(route(&[(stable, 100)]));
        }
        actions.push(Action::RemoveSlot(new_slot.to_string()));
        actions
    }
}
