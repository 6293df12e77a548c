//! The conformance suite against a throwaway PostgreSQL cluster, and what
//! only PostgreSQL has: concurrent migrations, a newer schema, connection
//! errors, connections killed under the store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::DecisionAction;
use crate::conformance::{Database, claimed};
use crate::pgtest::Cluster;

/// A fresh database on the shared cluster.
struct Pg {
    url: String,
}

#[async_trait]
impl Database for Pg {
    async fn open(&self, identity: HostIdentity) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect(&self.url, identity).await.unwrap())
    }
}

/// `None` (the cluster said why) where PostgreSQL is not installed.
async fn fresh() -> Option<Pg> {
    let cluster = Cluster::shared()?;
    Some(Pg {
        url: cluster.database("conformance").await,
    })
}

crate::store_conformance!(optional fresh());

fn identity(name: &str) -> HostIdentity {
    HostIdentity {
        name: name.into(),
        lease: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_three_hosts_connect_at_once() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database("migrate").await;
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url, identity("a")),
        PostgresStore::connect(&url, identity("b")),
        PostgresStore::connect(&url, identity("c")),
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let steps: Vec<i64> = a
        .client()
        .await
        .unwrap()
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        steps,
        (1..=POSTGRES_SCHEMA_VERSION as i64).collect::<Vec<_>>()
    );
    // And the schema works.
    let lease = claimed(&a, "api").await;
    assert_eq!(
        a.append(&lease, "step", None, serde_json::json!({}))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_version_is_refused_naming_both_versions() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database("newer").await;
    let store = PostgresStore::connect(&url, identity("a")).await.unwrap();
    store
        .client()
        .await
        .unwrap()
        .execute("INSERT INTO schema_version (version) VALUES (99)", &[])
        .await
        .unwrap();
    let err = PostgresStore::connect(&url, identity("b"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::TooNew { found: 99, supported } if supported == POSTGRES_SCHEMA_VERSION),
        "{err}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("version 99") && shown.contains(&format!("({POSTGRES_SCHEMA_VERSION})")),
        "{shown}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_naming_the_url_without_its_password() {
    // A port nothing listens on: taken, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://rollcage:s3cret@127.0.0.1:{port}/rollcage?connect_timeout=5");
    let err = PostgresStore::connect(&url, identity("a"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!(
            "postgres://rollcage:***@127.0.0.1:{port}/rollcage"
        )),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_s_appends_and_finished_runs_wake_this_one() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database("across").await;
    let driver = PostgresStore::connect(&url, identity("driver"))
        .await
        .unwrap();
    let reader = PostgresStore::connect(&url, identity("reader"))
        .await
        .unwrap();
    let mut appended = reader.appended();
    let mut woken = reader.wakeups();
    let lease = claimed(&driver, "api").await;
    driver
        .append(&lease, "step", None, serde_json::json!({}))
        .await
        .unwrap();
    let id = tokio::time::timeout(Duration::from_secs(10), appended.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, lease.run_id);
    // Once, though the reader is a store on the same database too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(appended.try_recv().is_err());
    while woken.try_recv().is_ok() {}
    driver
        .set_status(&lease, RunStatus::Failed, None, Some("aborted"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, woken.recv()).await {
            Ok(Ok(Wake::Runnable)) => break,
            Ok(_) => continue,
            Err(_) => panic!("another host's finished run woke no one"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_asked_while_the_listener_was_down_wakes_the_driver_on_reconnect() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database("missed").await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let driver = PostgresStore::connect(&url, identity("driver"))
        .await
        .unwrap();
    let lease = claimed(&driver, "api").await;
    let asker = PostgresStore::connect(&url, identity("asker"))
        .await
        .unwrap();
    let mut woken = driver.wakeups();
    let admin = cluster.admin().await;
    // Asked right after the listeners' connections died, before they are
    // back (they wait 100 ms first): the NOTIFY reaches no one.
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND query LIKE 'LISTEN %'",
            &[&name],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(killed, 2);
    let started = tokio::time::Instant::now();
    asker
        .request_decision(
            &lease.run_id,
            &DecisionRequest {
                action: DecisionAction::Abort,
                by: "bob".into(),
                stage: None,
            },
        )
        .await
        .unwrap();
    let deadline = started + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, woken.recv()).await {
            Ok(Ok(Wake::Decision(id))) if id == lease.run_id => break,
            Ok(_) => continue,
            Err(_) => panic!("the missed decision woke no one"),
        }
    }
    eprintln!(
        "a decision missed while disconnected woke the driver after {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(driver.take_decisions(&lease).await.unwrap().len(), 1);
}

/// Terminate every connection to database `name` but the caller's.
async fn kill_connections(admin: &tokio_postgres::Client, name: &str) -> u64 {
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .unwrap()
        .len() as u64
}

/// Whether a connection to database `name` is LISTENing (its last
/// statement was the LISTEN).
async fn listening(admin: &tokio_postgres::Client, name: &str) -> bool {
    let rows = admin
        .query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN %'",
            &[&name],
        )
        .await
        .unwrap();
    !rows.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced_and_the_listener_comes_back() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database("killed").await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let driver = PostgresStore::connect(&url, identity("driver"))
        .await
        .unwrap();
    let other = PostgresStore::connect(&url, identity("other"))
        .await
        .unwrap();
    let lease = claimed(&driver, "api").await;
    driver
        .append(&lease, "step", None, serde_json::json!({"n": 1}))
        .await
        .unwrap();
    let admin = cluster.admin().await;
    assert!(listening(&admin, &name).await);
    let killed = kill_connections(&admin, &name).await;
    assert!(killed >= 3, "only {killed} connections to kill");
    // The pool notices the closed connections and opens new ones.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        driver
            .append(&lease, "step", None, serde_json::json!({"n": 2}))
            .await
            .unwrap(),
        2
    );
    other.ping().await.unwrap();
    // The listeners reconnect by themselves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !listening(&admin, &name).await {
        assert!(tokio::time::Instant::now() < deadline, "no LISTEN again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both listeners, not just one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut woken = driver.wakeups();
    other
        .request_decision(
            &lease.run_id,
            &DecisionRequest {
                action: DecisionAction::Approve,
                by: "bob".into(),
                stage: None,
            },
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, woken.recv()).await {
            Ok(Ok(Wake::Decision(id))) if id == lease.run_id => break,
            Ok(_) => continue,
            Err(_) => panic!("the driver was not woken after its connections were killed"),
        }
    }
    assert_eq!(driver.take_decisions(&lease).await.unwrap().len(), 1);
    let log = other.events(&lease.run_id, 0).await.unwrap();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_cut_off_by_killed_connections_leave_no_gap() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database("cutoff").await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let store = PostgresStore::connect(&url, identity("a")).await.unwrap();
    let lease = claimed(&store, "api").await;
    let admin = cluster.admin().await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, lease) = (store.clone(), lease.clone());
        writers.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..50 {
                let data = serde_json::json!({"w": w, "i": i});
                if store.append(&lease, "step", None, data).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    // Kill the store's connections while the appends are under way.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        kill_connections(&admin, &name).await;
    }
    let mut ok = 0;
    for w in writers {
        ok += w.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Whatever was cut off, the log has no gap, and writing goes on.
    let next = store
        .append(&lease, "step", None, serde_json::json!({}))
        .await
        .unwrap();
    let log = store.events(&lease.run_id, 0).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=next).collect::<Vec<_>>()
    );
    eprintln!(
        "{ok} of 200 appends answered while connections were killed; the log has {next} entries, gapless"
    );
    // An append whose answer was lost may have been written all the same.
    assert!(next as usize > ok, "{ok} appends answered, next is {next}");
    assert!(ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_tasks_end_with_the_last_handle() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database("dropped").await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let store = PostgresStore::connect(&url, identity("a")).await.unwrap();
    let clone = store.clone();
    drop(store);
    let admin = cluster.admin().await;
    assert!(listening(&admin, &name).await, "a clone keeps it listening");
    drop(clone);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listening(&admin, &name).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listening after the last handle went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
