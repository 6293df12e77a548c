use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::Strategy;
use rollcage_sdk::Strategy as _;
use rollcage_sdk::testing::{self, Slots, release, simulate};
use rollcage_sdk::types::RouteWeight;

use super::*;

fn params(json: &str) -> Params {
    Params::parse(json).unwrap()
}

fn forward(p: &Params, replicas: u32) -> Vec<Action> {
    plan(p, replicas, Some(&release("1.0.0")), &release("2.0.0")).unwrap()
}

fn start(replicas: u32) -> Slots {
    BTreeMap::from([("1.0.0".to_string(), replicas)])
}

fn state(p: &str, replicas: u32, history: &[Action]) -> DeployState {
    testing::state(p, Some(("1.0.0", "1.0.0")), "2.0.0", replicas, history)
}

fn weights(a: &Action) -> Option<Vec<(String, u32)>> {
    match a {
        Action::Route(w) => Some(
            w.iter()
                .map(|RouteWeight { slot, weight }| (slot.clone(), *weight))
                .collect(),
        ),
        _ => None,
    }
}

#[test]
fn default_steps_ramp_10_25_50_100_with_analysis_after_each() {
    let actions = forward(&params("{}"), 4);
    let routes: Vec<_> = actions.iter().filter_map(weights).collect();
    let w = |pairs: &[(&str, u32)]| {
        pairs
            .iter()
            .map(|(s, w)| (s.to_string(), *w))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        routes,
        [
            w(&[("2.0.0", 10), ("1.0.0", 90)]),
            w(&[("2.0.0", 25), ("1.0.0", 75)]),
            w(&[("2.0.0", 50), ("1.0.0", 50)]),
            w(&[("2.0.0", 100)]),
        ]
    );
    let analyses = actions
        .iter()
        .filter(|a| matches!(a, Action::Analyze(_)))
        .count();
    assert_eq!(analyses, 4);
    assert_eq!(
        &actions[actions.len() - 2..],
        &[Action::RemoveSlot("1.0.0".into()), Action::Done]
    );
    assert_eq!(
        simulate(&start(4), &actions).unwrap(),
        BTreeMap::from([("2.0.0".to_string(), 4)])
    );
}

#[test]
fn explicit_steps_become_pauses_approvals_and_named_analysis() {
    let p = params(
        r#"{"steps": [{"weight": 10}, {"pause": "5m"}, {"analysis": ["error-rate", "latency"]},
                     {"weight": 50, "analysis": false}, {"pause": "approval"}, 100],
            "canary_replicas": 2}"#,
    );
    let actions = forward(&p, 10);
    assert_eq!(actions[0], apply("2.0.0", &release("2.0.0"), 2));
    assert!(actions.contains(&Action::Pause(Pause::Duration(300_000))));
    assert!(actions.contains(&Action::Pause(Pause::Approval)));
    assert!(actions.contains(&Action::Analyze(AnalysisRequest {
        checks: vec!["error-rate".into(), "latency".into()],
        slot: "2.0.0".into()
    })));
    // After 10 (a pause follows, not an analysis step), the named analysis,
    // none after 50 (it says so), and after 100.
    let analyses = actions
        .iter()
        .filter(|a| matches!(a, Action::Analyze(_)))
        .count();
    assert_eq!(analyses, 3);
    simulate(&start(10), &actions).unwrap();
}

#[test]
fn bad_steps_are_all_reported() {
    let problems = Params::parse(
        r#"{"steps": [50, 20, 150, {"pause": "soon"}, {"weight": 5, "pause": "1m"}], "canary_replicas": 0}"#,
    )
    .unwrap_err();
    assert_eq!(
        problems,
        [
            "steps[2]: weight 20 is below the previous weight 50; weights only grow",
            "steps[3]: weight 150 is over 100",
            "steps[4]: pause: invalid duration `soon`: use a number and a unit, such as 500ms, 30s, 5m, 1h (or \"approval\")",
            "steps[5]: a step is one of { weight = N }, { pause = \"5m\" }, { pause = \"approval\" }, { analysis = [\"check\"] }, { expose = N }",
            "canary_replicas: must be at least 1",
        ]
    );
    assert!(Params::parse(r#"{"step": [10]}"#).unwrap_err()[0].contains("unknown field `step`"));
}

#[test]
fn a_first_deployment_goes_all_at_once() {
    let actions = plan(&params("{}"), 3, None, &release("1.0.0")).unwrap();
    assert_eq!(actions.len(), 3);
    simulate(&Slots::new(), &actions).unwrap();
}

#[test]
fn decide_resumes_from_any_cut_and_rollback_restores_stable() {
    let p = r#"{"steps": [10, {"pause": "1s"}, 50, 100]}"#;
    let full = forward(&params(p), 3);
    for cut in 0..=full.len() {
        let next = Canary::decide(state(p, 3, &full[..cut])).unwrap();
        assert_eq!(next, full.get(cut).cloned().unwrap_or(Action::Done));
        // Rolling back from here (before the stable slot is gone) restores it.
        if !full[..cut].contains(&Action::RemoveSlot("1.0.0".into())) {
            let back = Canary::rollback(state(p, 3, &full[..cut])).unwrap();
            let mut replay = full[..cut].to_vec();
            replay.extend(back);
            assert_eq!(simulate(&start(3), &replay).unwrap(), start(3), "cut {cut}");
        }
    }
}

fn arb_params() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((0u32..=100, 0u8..4), 1..6),
        prop::option::of(1u32..5),
        any::<bool>(),
    )
        .prop_map(|(mut raw, canary_replicas, analysis)| {
            raw.sort_by_key(|(w, _)| *w);
            let steps: Vec<String> = raw
                .into_iter()
                .map(|(w, extra)| match extra {
                    0 => format!("{{\"pause\": \"{w}ms\"}}"),
                    1 => "{\"pause\": \"approval\"}".to_string(),
                    2 => format!("{{\"weight\": {w}, \"analysis\": false}}"),
                    _ => w.to_string(),
                })
                .collect();
            let replicas = canary_replicas
                .map(|r| format!(", \"canary_replicas\": {r}"))
                .unwrap_or_default();
            format!(
                "{{\"steps\": [{}], \"analysis\": {analysis}{replicas}}}",
                steps.join(", ")
            )
        })
}

proptest! {
    #[test]
    fn every_plan_keeps_the_invariants_and_ends_promoted(p in arb_params(), replicas in 1u32..12) {
        let actions = forward(&params(&p), replicas);
        let end = simulate(&start(replicas), &actions).map_err(TestCaseError::fail)?;
        prop_assert_eq!(end, BTreeMap::from([("2.0.0".to_string(), replicas)]));
        prop_assert_eq!(actions.last(), Some(&Action::Done));
    }

    #[test]
    fn rollback_from_any_point_keeps_the_invariants(p in arb_params(), replicas in 1u32..12, cut in 0usize..40) {
        let full = forward(&params(&p), replicas);
        // Any cut before the stable slot is removed (after that, the
        // release is promoted and there is nothing to roll back to).
        let removal = full.iter().position(|a| *a == Action::RemoveSlot("1.0.0".into())).unwrap();
        let cut = cut % (removal + 1);
        let mut replay = full[..cut].to_vec();
        replay.extend(Canary::rollback(state(&p, replicas, &full[..cut])).unwrap());
        prop_assert_eq!(simulate(&start(replicas), &replay).map_err(TestCaseError::fail)?, start(replicas));
    }
}

fn exposures(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Expose(e) => {
                assert_eq!(e.flag, "checkout-v2");
                Some(e.percent)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn expose_steps_move_the_flag_after_traffic_with_analysis() {
    let p = params(
        r#"{"flag": "checkout-v2", "steps": [{"weight": 100}, {"expose": 10},
            {"analysis": ["error-rate"]}, {"expose": 50}, {"expose": 100}]}"#,
    );
    let actions = forward(&p, 2);
    assert_eq!(exposures(&actions), [10, 50, 100]);
    // The explicit analysis follows `expose 10`; 50 and 100 get the automatic one.
    let after = |i: usize| &actions[i + 1];
    let at = |percent: u32| {
        actions
            .iter()
            .position(|a| matches!(a, Action::Expose(e) if e.percent == percent))
            .unwrap()
    };
    assert!(matches!(after(at(10)), Action::Analyze(r) if r.checks == ["error-rate"]));
    assert!(matches!(after(at(50)), Action::Analyze(r) if r.checks.is_empty()));
    assert!(matches!(after(at(100)), Action::Analyze(_)));
    simulate(&start(2), &actions).unwrap();
    // A first deployment exposes the flag too, all at once.
    let first = plan(&p, 2, None, &release("2.0.0")).unwrap();
    assert_eq!(exposures(&first), [10, 50, 100]);
}

#[test]
fn bad_expose_steps_name_their_step() {
    let problems = Params::parse(r#"{"steps": [{"weight": 50}, {"expose": 10}]}"#).unwrap_err();
    assert_eq!(
        problems,
        ["steps[2]: an expose step needs `flag`, the feature flag's name in the flag service"]
    );
    let problems =
        Params::parse(r#"{"flag": "f", "steps": [{"expose": 150}, {"expose": 5, "weight": 5}]}"#)
            .unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("steps[1]: expose 150 is outside 0-100"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("steps[2]: an expose step is"),
        "{problems:?}"
    );
}
