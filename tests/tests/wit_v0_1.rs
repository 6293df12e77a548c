//! A component of the frozen contract 0.1.0 (the `legacy-strategy`
//! fixture, built by wit-bindgen from `wit/v0.1.0`) is still loaded and
//! called: the runtime reads the version its exports name and adapts the
//! current values to it (a 0.1 strategy never sees an expose step).

use std::collections::BTreeMap;
use std::sync::Arc;

use rollcage_core::*;
use rollcage_runtime::{Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions};

fn state(history: Vec<StepRecord>) -> DeployState {
    DeployState {
        environment: "production".into(),
        release: Release::new("2.0.0"),
        stable: Some(Release::new("1.0.0")),
        replicas: 3,
        params: "{}".into(),
        history,
        status: EnvironmentStatus::default(),
    }
}

fn ok(action: Action) -> StepRecord {
    StepRecord {
        action,
        outcome: Outcome::Ok,
    }
}

#[tokio::test]
async fn a_strategy_of_contract_0_1_0_loads_and_decides() {
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: false,
        secrets: Arc::new(MapSecrets(BTreeMap::new())),
    })
    .unwrap();
    let spec = PluginSpec {
        id: "legacy".parse().unwrap(),
        kind: PluginKind::Strategy,
        source_name: "test:legacy".into(),
        grants: Grants::default(),
        limits: Limits::default(),
        config_json: "{}".into(),
    };
    let plugin = rt
        .load(spec, &rollcage_tests::fixture_bytes("legacy-strategy"))
        .unwrap();
    assert_eq!(plugin.wit_version(), "0.1.0");
    let strategy = plugin.strategy().unwrap();

    strategy.validate("{}").await.unwrap();
    assert!(strategy.validate(r#"{"steps": [10]}"#).await.is_err());

    let first = strategy.decide(&state(vec![])).await.unwrap();
    let Action::ApplySlot(slot) = &first else {
        panic!("{first:?}");
    };
    assert_eq!((slot.name.as_str(), slot.replicas), ("2.0.0", 3));
    // An expose step recorded by the engine is not part of the 0.1 history:
    // the strategy goes on as if it were not there.
    let exposed = ok(Action::Expose(ExposureChange {
        control: String::new(),
        flag: "checkout-v2".into(),
        percent: 10,
    }));
    let next = strategy
        .decide(&state(vec![ok(first.clone()), exposed]))
        .await
        .unwrap();
    assert_eq!(next.to_string(), "route 2.0.0=100%");
    let last = strategy
        .decide(&state(vec![ok(first.clone()), ok(next.clone())]))
        .await
        .unwrap();
    assert_eq!(
        last,
        Action::RemoveSlot {
            slot: "1.0.0".into()
        }
    );
    let done = strategy
        .decide(&state(vec![ok(first), ok(next), ok(last)]))
        .await
        .unwrap();
    assert_eq!(done, Action::Done);
    let back = strategy.rollback(&state(vec![])).await.unwrap();
    let back: Vec<String> = back.iter().map(|a| a.to_string()).collect();
    assert_eq!(back, ["route 1.0.0=100%", "remove slot 2.0.0"]);
}
