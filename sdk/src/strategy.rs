//! The strategy kind: [`plan`], helpers for building a strategy's plan
//! (always available, so that any crate can use and document them), and,
//! with the `strategy` feature, the `Strategy` trait and the
//! [`export_strategy!`](crate::export_strategy) macro.

#[cfg(feature = "strategy")]
use crate::types::{Action, DeployState};

#[cfg(feature = "strategy")]
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
/// ```
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
///
/// // Natively, in a test: the state of a first deployment.
/// let state = rollcage_sdk::testing::state("{}", None, "1.0.0", 1, &[]);
/// assert!(matches!(AllAtOnce::decide(state), Ok(Action::Route(_))));
/// ```
#[cfg(feature = "strategy")]
#[cfg_attr(docsrs, doc(cfg(feature = "strategy")))]
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

#[cfg(feature = "strategy")]
#[doc(hidden)]
pub use bindings::exports::rollcage::plugin::strategy_api::Guest as __Guest;

/// Export a type implementing [`Strategy`] as this component's strategy
/// (feature `strategy`).
#[cfg(feature = "strategy")]
#[cfg_attr(docsrs, doc(cfg(feature = "strategy")))]
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

/// Helpers shared by strategies: the conventional slot names, the actions
/// a plan is made of, and the plans every strategy needs (a first
/// deployment, the standard rollback).
///
/// A canary's plan, step by step, as `decide` returns it:
///
/// ```
/// use rollcage_sdk::strategy::plan;
/// use rollcage_sdk::testing::state;
/// use rollcage_sdk::types::Action;
///
/// let state = state("{}", Some(("1.0.0", "1.0.0")), "2.0.0", 2, &[]);
/// let (new, stable) = (plan::version_slot(&state.release), "1.0.0");
/// let steps = vec![
///     plan::apply(&new, &state.release, 1),
///     plan::route(&[(&new, 10), (stable, 90)]),
///     plan::route(&[(&new, 100)]),
///     Action::RemoveSlot(stable.into()),
///     Action::Done,
/// ];
/// // `decide` answers the step after the ones recorded in the history.
/// assert_eq!(plan::next(&steps, state.history.len()), steps[0]);
/// assert_eq!(plan::next(&steps, 99), Action::Done);
/// ```
pub mod plan {
    use crate::types::{Action, ExposureChange, Release, RouteWeight, SlotSpec};

    /// The conventional slot of a release: named after its version, so two
    /// releases never share a slot and a slot's name says what it runs.
    ///
    /// ```
    /// use rollcage_sdk::{strategy::plan, testing::release};
    /// assert_eq!(plan::version_slot(&release("1.4.0")), "1.4.0");
    /// ```
    pub fn version_slot(release: &Release) -> String {
        release.version.clone()
    }

    /// `apply-slot` of `replicas` instances of `release` in `slot`.
    ///
    /// ```
    /// use rollcage_sdk::{strategy::plan, testing::release, types::Action};
    /// let Action::ApplySlot(spec) = plan::apply("canary", &release("1.4.0"), 2) else {
    ///     unreachable!()
    /// };
    /// assert_eq!((spec.name.as_str(), spec.replicas), ("canary", 2));
    /// ```
    pub fn apply(slot: &str, release: &Release, replicas: u32) -> Action {
        Action::ApplySlot(SlotSpec {
            name: slot.to_string(),
            release: release.clone(),
            replicas,
        })
    }

    /// `route` with these `(slot, weight)` pairs; zero weights are left out.
    ///
    /// ```
    /// use rollcage_sdk::{strategy::plan, types::Action};
    /// let Action::Route(weights) = plan::route(&[("1.4.0", 100), ("1.3.2", 0)]) else {
    ///     unreachable!()
    /// };
    /// assert_eq!(weights.len(), 1);
    /// assert_eq!((weights[0].slot.as_str(), weights[0].weight), ("1.4.0", 100));
    /// ```
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

    /// `expose`: `flag` to `percent` of users through the environment's
    /// exposure plugin (`exposure = "<id>"` in the environment).
    ///
    /// ```
    /// use rollcage_sdk::{strategy::plan, types::Action};
    /// let Action::Expose(change) = plan::expose("checkout-v2", 10) else { unreachable!() };
    /// assert_eq!((change.flag.as_str(), change.percent, change.control.as_str()), ("checkout-v2", 10, ""));
    /// ```
    pub fn expose(flag: &str, percent: u32) -> Action {
        Action::Expose(ExposureChange {
            control: String::new(),
            flag: flag.to_string(),
            percent,
        })
    }

    /// The step of `plan` after the `done` steps already recorded (`Done`
    /// past its end). For strategies whose whole plan is known up front:
    /// the engine rolls back on any failure, so a history it asks about is
    /// a prefix of the plan, possibly cut by a crash.
    ///
    /// ```
    /// use rollcage_sdk::{strategy::plan, types::Action};
    /// let steps = [plan::route(&[("2.0.0", 100)]), Action::Done];
    /// assert_eq!(plan::next(&steps, 0), steps[0]);
    /// assert_eq!(plan::next(&steps, 5), Action::Done);
    /// ```
    pub fn next(plan: &[Action], done: usize) -> Action {
        plan.get(done).cloned().unwrap_or(Action::Done)
    }

    /// A first deployment (nothing running yet): everything at once.
    ///
    /// ```
    /// use rollcage_sdk::{strategy::plan, testing::{release, simulate, Slots}};
    /// let steps = plan::first_deployment("1.0.0", &release("1.0.0"), 3);
    /// let end = simulate(&Slots::new(), &steps).unwrap();
    /// assert_eq!(end["1.0.0"], 3);
    /// ```
    pub fn first_deployment(slot: &str, release: &Release, replicas: u32) -> Vec<Action> {
        vec![
            apply(slot, release, replicas),
            route(&[(slot, 100)]),
            Action::Done,
        ]
    }

    /// The standard rollback: all traffic back to the stable slot (if there
    /// is one), then remove the new slot.
    ///
    /// ```
    /// use rollcage_sdk::{strategy::plan, types::Action};
    /// let back = plan::back_to_stable(Some("1.3.2"), "1.4.0");
    /// assert_eq!(back, [plan::route(&[("1.3.2", 100)]), Action::RemoveSlot("1.4.0".into())]);
    /// // A first deployment has nothing to go back to: only the removal.
    /// assert_eq!(plan::back_to_stable(None, "1.4.0").len(), 1);
    /// ```
    pub fn back_to_stable(stable_slot: Option<&str>, new_slot: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(stable) = stable_slot {
            actions.push(route(&[(stable, 100)]));
        }
        actions.push(Action::RemoveSlot(new_slot.to_string()));
        actions
    }
}
