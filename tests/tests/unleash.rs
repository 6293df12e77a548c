//! `builtin:unleash` against a real Unleash server (`rollcage_tests::unleash`):
//! the exposure it sets is measured as Unleash itself evaluates the flag for
//! 1,000 user ids.

use std::collections::BTreeSet;
use std::sync::Arc;

use rollcage_core::*;
use rollcage_runtime::{Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions};
use rollcage_tests::unleash::{ADMIN_TOKEN, CLIENT_TOKEN, Unleash};
use serde_json::{Value, json};

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
    let mut previous = BTreeSet::new();
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

// ---- builtin:unleash through the runtime ------------------------------------

/// `builtin:unleash` against `unleash` with the token `token`, and `config`
/// merged over the URL and token secret.
fn plugin(unleash: &Unleash, token: &str, config: Value) -> Arc<dyn ExposureControl> {
    plugin_at(&unleash.url, unleash.port, token, config)
}

/// `builtin:unleash` at `url`, granted `127.0.0.1:<allowed>`.
fn plugin_at(url: &str, allowed: u16, token: &str, config: Value) -> Arc<dyn ExposureControl> {
    let secrets = [("UNLEASH_TOKEN".to_string(), token.to_string())]
        .into_iter()
        .collect();
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: false,
        secrets: Arc::new(MapSecrets(secrets)),
    })
    .unwrap();
    let mut table = json!({ "url": url, "token_secret": "UNLEASH_TOKEN" });
    for (k, v) in config.as_object().unwrap() {
        table[k] = v.clone();
    }
    let spec = PluginSpec {
        id: "flags".parse().unwrap(),
        kind: PluginKind::Exposure,
        source_name: "builtin:unleash".into(),
        grants: Grants {
            allow_hosts: vec![format!("127.0.0.1:{allowed}").parse().unwrap()],
            secrets: vec!["UNLEASH_TOKEN".into()],
            ..Grants::default()
        },
        limits: Limits::default(),
        config_json: table.to_string(),
    };
    rt.load(spec, rollcage_builtins::get("unleash").unwrap().wasm)
        .unwrap()
        .exposure()
        .unwrap()
}

fn share(users: &BTreeSet<u32>) -> f64 {
    users.len() as f64 * 100.0 / USERS as f64
}

/// 10 → 50 → 100 as Unleash evaluates it: each share within ±5 points, the
/// users of a step kept in the next; a repeat changes nothing; back to 0
/// exposes nobody.
#[tokio::test]
async fn exposure_follows_each_step_and_keeps_its_users() {
    let Some(unleash) = Unleash::shared() else {
        return;
    };
    unleash.create_flag("default", "checkout-v2");
    let flags = plugin(unleash, ADMIN_TOKEN, json!({}));
    let before = flags
        .get_exposure("checkout-v2", "production")
        .await
        .unwrap();
    assert_eq!((before.percent, before.enabled), (0, false));
    assert!(
        unleash
            .enabled_users("checkout-v2", "production", USERS)
            .is_empty()
    );

    let mut previous = BTreeSet::new();
    let mut revisions = vec![before.revision.clone()];
    for percent in [10u32, 50, 100] {
        flags
            .set_exposure("checkout-v2", "production", percent)
            .await
            .unwrap();
        let enabled = unleash.enabled_users("checkout-v2", "production", USERS);
        eprintln!(
            "expose {percent}: {}% of {USERS} users enabled",
            share(&enabled)
        );
        assert!(
            (share(&enabled) - percent as f64).abs() <= 5.0,
            "{}% of users enabled at {percent}%",
            share(&enabled)
        );
        assert!(
            previous.is_subset(&enabled),
            "users exposed at a lower percent stay exposed"
        );
        let status = flags
            .get_exposure("checkout-v2", "production")
            .await
            .unwrap();
        assert_eq!((status.percent, status.enabled), (percent, true));
        assert!(
            !revisions.contains(&status.revision),
            "a new revision at {percent}%"
        );
        revisions.push(status.revision);
        previous = enabled;
    }
    // Desired state: the same percent again changes nothing on the server.
    let flag = unleash.flag("default", "checkout-v2");
    flags
        .set_exposure("checkout-v2", "production", 100)
        .await
        .unwrap();
    assert_eq!(
        unleash.flag("default", "checkout-v2")["environments"],
        flag["environments"]
    );
    // Only production was touched, and one strategy of ours there.
    let envs = flag["environments"].as_array().unwrap();
    let dev = envs.iter().find(|e| e["name"] == "development").unwrap();
    assert_eq!(
        (
            dev["enabled"].clone(),
            dev["strategies"].as_array().unwrap().len()
        ),
        (json!(false), 0)
    );
    let prod = envs.iter().find(|e| e["name"] == "production").unwrap();
    let strategies = prod["strategies"].as_array().unwrap();
    assert_eq!(strategies.len(), 1, "{strategies:?}");
    assert_eq!(strategies[0]["title"], "rollcage");
    assert_eq!(strategies[0]["parameters"]["groupId"], "checkout-v2");
    assert_eq!(strategies[0]["parameters"]["stickiness"], "default");

    flags
        .set_exposure("checkout-v2", "production", 0)
        .await
        .unwrap();
    assert!(
        unleash
            .enabled_users("checkout-v2", "production", USERS)
            .is_empty()
    );
    assert_eq!(
        flags
            .get_exposure("checkout-v2", "production")
            .await
            .unwrap()
            .percent,
        0
    );
}

/// A percent over 100 never reaches Unleash (which would store a rollout of
/// 150); a missing flag, a client token and an unknown environment are each
/// said in words naming the flag.
#[tokio::test]
async fn mistakes_are_refused_in_words() {
    let Some(unleash) = Unleash::shared() else {
        return;
    };
    unleash.create_flag("default", "search-v3");
    let flags = plugin(
        unleash,
        ADMIN_TOKEN,
        json!({ "environments": { "prod": "production" } }),
    );
    flags.set_exposure("search-v3", "prod", 20).await.unwrap();
    let before = unleash.flag("default", "search-v3");
    let e = flags
        .set_exposure("search-v3", "prod", 150)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("150% is not a percent (0-100)"), "{e}");
    assert!(
        e.contains("flag `search-v3` in Unleash environment `production`"),
        "{e}"
    );
    assert_eq!(
        unleash.flag("default", "search-v3")["environments"],
        before["environments"]
    );

    let e = flags
        .set_exposure("no-such-flag", "prod", 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("flag `no-such-flag`") && e.contains("does not exist in project `default`"),
        "{e}"
    );

    let e = flags
        .get_exposure("search-v3", "qa")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Unleash environment `qa` is not enabled in project `default`"),
        "{e}"
    );

    let client = plugin(unleash, CLIENT_TOKEN, json!({}));
    let e = client
        .set_exposure("search-v3", "production", 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused the token in secret `UNLEASH_TOKEN` (403"),
        "{e}"
    );
    assert!(
        e.contains("admin API token or a personal access token"),
        "{e}"
    );
}

/// A host outside `allow_hosts` is denied by the host, and said so; a
/// granted address where nothing listens is a refused connection.
#[tokio::test]
async fn denied_and_refused_are_told_apart() {
    let Some(unleash) = Unleash::shared() else {
        return;
    };
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let denied = plugin_at(&unleash.url, free, ADMIN_TOKEN, json!({}));
    let e = denied
        .get_exposure("checkout-v2", "production")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("flag `checkout-v2`") && e.contains("denied"),
        "{e}"
    );
    assert!(!e.contains("refused"), "{e}");
    let refused = plugin_at(
        &format!("http://127.0.0.1:{free}"),
        free,
        ADMIN_TOKEN,
        json!({}),
    );
    let e = refused
        .get_exposure("checkout-v2", "production")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("flag `checkout-v2`") && e.contains("connection refused"),
        "{e}"
    );
}
