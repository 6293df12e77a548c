//! Firing alerts from Alertmanager: a run in progress in the alert's
//! environment is aborted and rolls back; a release promoted less than
//! `after_promotion` ago is rolled back by a new run, once; everything is
//! audited, what was ignored too.

use super::*;
use crate::alerts::{Alert, AlertRules, Handled, Matcher, Place};
use crate::bake::BakeSpec;
use rollcage_store::AuditFilter;

fn rules(after_promotion: Duration) -> AlertRules {
    AlertRules {
        matchers: vec![Matcher {
            alertnames: vec!["HighErrorRate".into()],
            labels: BTreeMap::new(),
            environment: Place::Label("environment".into()),
            service: Some(Place::Label("service".into())),
        }],
        after_promotion,
    }
}

fn firing(env: &str) -> Alert {
    Alert {
        status: "firing".into(),
        labels: BTreeMap::from([
            ("alertname".into(), "HighErrorRate".into()),
            ("environment".into(), env.into()),
        ]),
        fingerprint: "abc123".into(),
        ..Alert::default()
    }
}

/// One environment baking for an hour, so that a run is in progress.
fn baking() -> World {
    let mut w = world(&[("production", Verdict::Pass)], &[], None);
    let engine = Arc::get_mut(&mut w.engine).unwrap();
    let env = engine.environments.remove("production").unwrap();
    let mut env = Arc::try_unwrap(env).ok().unwrap();
    env.bake = Some(BakeSpec {
        duration: Duration::from_secs(3600),
        interval: Duration::from_secs(600),
        checks: vec![],
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
    });
    engine
        .environments
        .insert("production".into(), Arc::new(env));
    w
}

#[tokio::test]
async fn a_firing_alert_aborts_the_run_baking_there_and_is_audited() {
    let w = baking();
    let id = w.engine.create(request("2.0.0")).await.unwrap();
    let (engine, run) = (w.engine.clone(), id.clone());
    let driven = tokio::spawn(async move { engine.execute(&run).await });
    until_run(&w.engine, &id, "baking", |_, log| {
        log.iter().any(|e| e.kind == "bake-started")
    })
    .await;
    let rules = rules(Duration::ZERO);
    // Another environment, a resolved alert, an unknown alert: nothing.
    for (alert, why) in [
        (firing("staging"), "environment `staging` is not configured"),
        (
            Alert {
                status: "resolved".into(),
                ..firing("production")
            },
            "the alert is resolved",
        ),
        (
            Alert {
                labels: BTreeMap::from([("alertname".into(), "DiskFull".into())]),
                ..firing("production")
            },
            "no [[alerts.matchers]] maps it to an environment",
        ),
    ] {
        assert_eq!(
            w.engine
                .alert(&rules, &alert, "alertmanager", &[])
                .await
                .unwrap(),
            Handled::Ignored(why.into())
        );
    }
    assert_eq!(
        w.engine
            .alert(&rules, &firing("production"), "alertmanager", &[])
            .await
            .unwrap(),
        Handled::Aborted {
            run: id.clone(),
            environment: "production".into()
        }
    );
    assert_eq!(driven.await.unwrap().unwrap(), RunStatus::RolledBack);
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(
        run.reason.as_deref(),
        Some("aborted by alert `HighErrorRate` during the bake")
    );
    let audit = w
        .engine
        .store()
        .audit(&AuditFilter {
            actor: Some("alertmanager".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 4, "{audit:?}");
    assert!(audit.iter().all(|a| a.entry.action == "alert"));
    let outcomes: Vec<&str> = audit
        .iter()
        .map(|a| a.entry.detail["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["aborted", "ignored", "ignored", "ignored"]);
    assert_eq!(audit[0].entry.detail["fingerprint"], "abc123");
}

#[tokio::test(start_paused = true)]
async fn after_promotion_a_firing_alert_rolls_the_release_back_once() {
    let w = world(&[("production", Verdict::Pass)], &[], None);
    for release in ["1.5.0", "2.0.0"] {
        let id = w.engine.create(request(release)).await.unwrap();
        assert_eq!(w.engine.execute(&id).await.unwrap(), RunStatus::Succeeded);
    }
    let promoted = w
        .engine
        .store()
        .list_runs(&Default::default())
        .await
        .unwrap()[0]
        .id
        .clone();
    // Outside the window: nothing.
    let handled = w
        .engine
        .alert(&rules(Duration::ZERO), &firing("production"), "am", &[])
        .await
        .unwrap();
    assert!(
        matches!(&handled, Handled::Ignored(why) if why.contains("over [alerts] after_promotion")),
        "{handled:?}"
    );
    let rules = rules(Duration::from_secs(1800));
    let Handled::RolledBack { run, rollback, .. } = w
        .engine
        .alert(&rules, &firing("production"), "am", &[])
        .await
        .unwrap()
    else {
        panic!("not rolled back")
    };
    assert_eq!(run, promoted);
    let back = w.engine.store().run(&rollback).await.unwrap();
    assert_eq!(back.run.release, "1.5.0");
    assert_eq!(back.run.started_by, "alert `HighErrorRate`");
    // Alertmanager repeats the alert: the rollback is not started twice.
    let again = w
        .engine
        .alert(&rules, &firing("production"), "am", &[])
        .await
        .unwrap();
    assert!(
        matches!(&again, Handled::Ignored(why) if why.contains("rolling `production` back already")),
        "{again:?}"
    );
    // A token limited to other environments does nothing here.
    let limited = w
        .engine
        .alert(&rules, &firing("production"), "am", &["staging".into()])
        .await
        .unwrap();
    assert_eq!(
        limited,
        Handled::Ignored("token `am` may not act in environment `production`".into())
    );
}
