//! Test helpers for plugin authors: sample inputs ([`state`],
//! [`sample_event`], [`release`]) and, for strategies, a simulator.
//! Plain functions of the contract's types, run natively by `cargo test`;
//! always available (the `testing` feature, which templates name in their
//! dev-dependencies, is kept and adds nothing).
//!
//! [`simulate`] replays a list of actions against an imaginary environment
//! whose slots become ready as soon as they are applied (the engine waits
//! for readiness before asking the strategy again), and checks after every
//! step the invariants every strategy must keep: a route's weights sum to
//! 100, no weight goes to a slot without instances, and no slot that
//! receives traffic is scaled to zero or removed, and an `expose` names a
//! flag and a percent within 0-100.
//!
//! For exposure plugins: [`exposure_status`] and [`problem`] build the
//! values `get_exposure` and `validate` answer, and [`FlagBook`] is an
//! in-memory flag service to keep a plugin's logic testable natively.

use std::collections::BTreeMap;

use crate::types::Action;

/// Slot name to instance count.
///
/// ```
/// use rollcage_sdk::testing::Slots;
/// let running = Slots::from([("1.3.2".to_string(), 3)]);
/// assert_eq!(running["1.3.2"], 3);
/// ```
pub type Slots = BTreeMap<String, u32>;

/// Replay `actions` from `initial` slots; the slots at the end, or the first
/// broken invariant with the step it broke at.
///
/// ```
/// use rollcage_sdk::strategy::plan;
/// use rollcage_sdk::testing::{release, simulate, Slots};
/// use rollcage_sdk::types::Action;
///
/// let running = Slots::from([("1.0.0".to_string(), 2)]);
/// let good = [
///     plan::apply("2.0.0", &release("2.0.0"), 2),
///     plan::route(&[("2.0.0", 100)]),
///     Action::RemoveSlot("1.0.0".into()),
/// ];
/// assert_eq!(simulate(&running, &good).unwrap(), Slots::from([("2.0.0".to_string(), 2)]));
///
/// // Traffic to a slot that does not exist yet breaks an invariant.
/// let bad = [plan::route(&[("2.0.0", 100)])];
/// let e = simulate(&running, &bad).unwrap_err();
/// assert!(e.starts_with("step 0: 100% of traffic routed to slot `2.0.0`"), "{e}");
/// ```
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
            Action::Expose(change) => {
                if change.percent > 100 {
                    return Err(format!(
                        "step {i}: flag `{}` exposed to {}%, outside 0-100",
                        change.flag, change.percent
                    ));
                }
                if change.flag.is_empty() {
                    return Err(format!("step {i}: expose names no flag"));
                }
            }
            Action::Pause(_) | Action::Analyze(_) | Action::Done => {}
        }
    }
    Ok(slots)
}

use crate::types::{
    DeployState, EnvironmentStatus, Event, EventKind, ExposureStatus, Outcome, Problem, Release,
    SlotStatus, StepRecord,
};

/// A release with only a version.
///
/// ```
/// let r = rollcage_sdk::testing::release("1.4.0");
/// assert_eq!((r.version.as_str(), r.notes, r.params.len()), ("1.4.0", None, 0));
/// ```
pub fn release(version: &str) -> Release {
    Release {
        version: version.into(),
        notes: None,
        params: vec![],
    }
}

/// The state a strategy sees in `production` when moving to a new release,
/// after the actions of `history` all succeeded:
///
/// * `params`: the strategy's parameters as JSON text, as the host passes
///   them (the environment's `strategy = { ... }` without `plugin`), for
///   example `r#"{"first_weight": 10}"#`;
/// * `stable`: `Some((version, slot))` when a release already runs: its
///   version and the slot it runs in, with `replicas` ready instances
///   taking all traffic; `None` for a first deployment;
/// * `release_version`: the version being deployed;
/// * `replicas`: the instances the service runs once fully promoted;
/// * `history`: the actions already executed, oldest first, each recorded
///   with the outcome `ok` (what the strategy sees on its next `decide`).
///
/// The environment status is the one before the run: the stable slot only.
///
/// ```
/// use rollcage_sdk::strategy::plan;
/// use rollcage_sdk::testing::state;
///
/// let first = plan::apply("2.0.0", &rollcage_sdk::testing::release("2.0.0"), 1);
/// let s = state(r#"{"first_weight": 10}"#, Some(("1.0.0", "1.0.0")), "2.0.0", 3, &[first]);
/// assert_eq!(s.stable.unwrap().version, "1.0.0");
/// assert_eq!(s.status.slots[0].ready, 3);
/// assert_eq!(s.history.len(), 1);
///
/// let fresh = state("{}", None, "1.0.0", 2, &[]);
/// assert!(fresh.stable.is_none() && fresh.status.slots.is_empty());
/// ```
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
///
/// ```
/// use rollcage_sdk::testing::sample_event;
/// use rollcage_sdk::types::EventKind;
/// let e = sample_event(EventKind::RolledBack);
/// assert_eq!((e.pipeline.as_str(), e.release.version.as_str()), ("api", "1.2.0"));
/// assert!(matches!(e.kind, EventKind::RolledBack));
/// ```
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

/// An exposure status as `get_exposure` answers it; a disabled flag has
/// percent 0.
///
/// ```
/// use rollcage_sdk::testing::exposure_status;
/// let s = exposure_status(25, true, "7");
/// assert_eq!((s.percent, s.enabled, s.revision.as_str()), (25, true, "7"));
/// assert_eq!(exposure_status(25, false, "").percent, 0);
/// ```
pub fn exposure_status(percent: u32, enabled: bool, revision: &str) -> ExposureStatus {
    ExposureStatus {
        percent: if enabled { percent } else { 0 },
        enabled,
        revision: revision.into(),
    }
}

/// A problem about `field` (a dotted path, empty for the whole value).
///
/// ```
/// use rollcage_sdk::testing::problem;
/// let p = problem("url", "missing");
/// assert_eq!((p.field.as_str(), p.message.as_str()), ("url", "missing"));
/// ```
pub fn problem(field: &str, message: &str) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
    }
}

/// An in-memory flag service: flag and environment to exposure, with a
/// revision counted up on every change. For testing the logic of an
/// exposure plugin natively (what it would send, what it reads back) the
/// way the host uses it: set, read, set back.
///
/// ```
/// use rollcage_sdk::testing::FlagBook;
///
/// let mut flags = FlagBook::default();
/// assert!(!flags.get("checkout-v2", "production").enabled);
/// flags.set("checkout-v2", "production", 10).unwrap();
/// let now = flags.get("checkout-v2", "production");
/// assert_eq!((now.percent, now.enabled, now.revision.as_str()), (10, true, "1"));
/// // Setting the same exposure again is harmless (desired state).
/// flags.set("checkout-v2", "production", 10).unwrap();
/// assert_eq!(flags.get("checkout-v2", "production").percent, 10);
/// assert!(flags.set("checkout-v2", "production", 150).is_err());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FlagBook {
    flags: BTreeMap<(String, String), (u32, u64)>,
    revision: u64,
}

impl FlagBook {
    /// Expose `flag` in `environment` to `percent` of users (0 disables it).
    pub fn set(&mut self, flag: &str, environment: &str, percent: u32) -> Result<(), String> {
        crate::exposure::percent(percent)?;
        let key = (flag.to_string(), environment.to_string());
        if self.flags.get(&key).map(|(p, _)| *p) != Some(percent) {
            self.revision += 1;
            self.flags.insert(key, (percent, self.revision));
        }
        Ok(())
    }

    /// The flag's exposure: disabled (0%) when it was never set or set to 0.
    pub fn get(&self, flag: &str, environment: &str) -> ExposureStatus {
        match self.flags.get(&(flag.to_string(), environment.to_string())) {
            Some((percent, revision)) => {
                exposure_status(*percent, *percent > 0, &revision.to_string())
            }
            None => exposure_status(0, false, ""),
        }
    }
}
