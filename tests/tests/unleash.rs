//! `builtin:unleash` against a real Unleash server (`rollcage_tests::unleash`):
//! the exposure it sets is measured as Unleash itself evaluates the flag for
//! 1,000 user ids.

use rollcage_tests::unleash::Unleash;
use serde_json::json;

/// Users measured per step: the share of 1,000 is within ±5 points of the
/// rollout with a margin of more than three standard deviations (at most
/// 1.6 points at 50%).
const USERS: u32 = 1000;

/// The measurement itself: a flexible rollout set through the Admin API by
/// hand is seen by the playground as that share of users, and the users of a
/// smaller rollout stay in a larger one (the same stickiness and group).
#[test]
fn the_playground_measures_unleash_own_rollout() {
    let Some(unleash) = Unleash::shared() else {
        return;
    };
    unleash.create_flag("default", "measure-me");
    let base = "/api/admin/projects/default/features/measure-me/environments/development";
    assert!(
        unleash
            .enabled_users("measure-me", "development", USERS)
            .is_empty()
    );
    let strategy = unleash.admin(
        "POST",
        &format!("{base}/strategies"),
        Some(&json!({
            "name": "flexibleRollout",
            "parameters": { "rollout": "10", "stickiness": "default", "groupId": "measure-me" },
        })),
    );
    unleash.admin("POST", &format!("{base}/on"), None);
    let id = strategy["id"].as_str().unwrap();
    let mut previous = std::collections::BTreeSet::new();
    for percent in [10u32, 50, 100] {
        unleash.admin(
            "PATCH",
            &format!("{base}/strategies/{id}"),
            Some(&json!([{ "op": "replace", "path": "/parameters/rollout", "value": percent.to_string() }])),
        );
        let enabled = unleash.enabled_users("measure-me", "development", USERS);
        let share = enabled.len() as f64 * 100.0 / USERS as f64;
        assert!(
            (share - percent as f64).abs() <= 5.0,
            "{share}% of users enabled at a rollout of {percent}%"
        );
        assert!(
            previous.is_subset(&enabled),
            "users exposed at a lower rollout stay exposed"
        );
        previous = enabled;
    }
}
