use std::collections::BTreeMap;

use proptest::prelude::*;
use rollcage_sdk::Strategy as _;
use rollcage_sdk::testing::{self, release, simulate};

use super::*;

/// Production runs 1.0.0 in `colour` with `replicas` instances.
fn state(p: &str, colour: &str, replicas: u32, history: &[Action]) -> DeployState {
    testing::state(p, Some(("1.0.0", colour)), "2.0.0", replicas, history)
}

/// Drive `decide` to the end, as the engine does.
fn run(p: &str, colour: &str, replicas: u32) -> Vec<Action> {
    let mut history = Vec::new();
    loop {
        let next = BlueGreen::decide(state(p, colour, replicas, &history)).unwrap();
        history.push(next.clone());
        if next == Action::Done {
            return history;
        }
    }
}

#[test]
fn the_idle_colour_comes_up_then_takes_all_traffic() {
    let actions = run("{}", "blue", 3);
    assert_eq!(
        actions,
        [
            apply("green", &release("2.0.0"), 3),
            Action::Analyze(AnalysisRequest {
                checks: vec![],
                slot: "green".into()
            }),
            route(&[("green", 100)]),
            Action::Analyze(AnalysisRequest {
                checks: vec![],
                slot: "green".into()
            }),
            Action::Pause(Pause::Duration(30_000)),
            Action::RemoveSlot("blue".into()),
            Action::Done,
        ]
    );
    let start = BTreeMap::from([("blue".to_string(), 3)]);
    assert_eq!(
        simulate(&start, &actions).unwrap(),
        BTreeMap::from([("green".to_string(), 3)])
    );
    // The next release goes back to blue.
    assert_eq!(
        run("{}", "green", 3)[0],
        apply("blue", &release("2.0.0"), 3)
    );
}

#[test]
fn manual_promotion_waits_for_approval_before_the_switch() {
    let actions = run(
        r#"{"auto_promote": false, "pre_promotion_analysis": ["smoke"], "post_promotion_analysis": [], "scale_down_delay": "0s"}"#,
        "blue",
        2,
    );
    assert_eq!(
        actions,
        [
            apply("green", &release("2.0.0"), 2),
            Action::Analyze(AnalysisRequest {
                checks: vec!["smoke".into()],
                slot: "green".into()
            }),
            Action::Pause(Pause::Approval),
            route(&[("green", 100)]),
            Action::RemoveSlot("blue".into()),
            Action::Done,
        ]
    );
}

#[test]
fn bad_params_are_reported() {
    assert_eq!(
        Params::parse(r#"{"scale_down_delay": "later"}"#).unwrap_err(),
        [
            "scale_down_delay: invalid duration `later`: use a number and a unit, such as 500ms, 30s, 5m, 1h"
        ]
    );
    assert!(
        Params::parse(r#"{"autopromote": true}"#).unwrap_err()[0]
            .contains("unknown field `autopromote`")
    );
}

proptest! {
    #[test]
    fn rollback_from_any_point_restores_the_old_colour(replicas in 1u32..10, cut in 0usize..8, auto in any::<bool>()) {
        let p = format!(r#"{{"auto_promote": {auto}}}"#);
        let full = run(&p, "blue", replicas);
        let removal = full.iter().position(|a| *a == Action::RemoveSlot("blue".into())).unwrap();
        let cut = cut % (removal + 1);
        // Resuming from the cut gives the same next step.
        let next = BlueGreen::decide(state(&p, "blue", replicas, &full[..cut])).unwrap();
        prop_assert_eq!(&next, full.get(cut).unwrap_or(&Action::Done));
        let mut replay = full[..cut].to_vec();
        replay.extend(BlueGreen::rollback(state(&p, "blue", replicas, &full[..cut])).unwrap());
        let start = BTreeMap::from([("blue".to_string(), replicas)]);
        prop_assert_eq!(simulate(&start, &replay).map_err(TestCaseError::fail)?, start);
    }
}
