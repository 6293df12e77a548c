//! The PostgreSQL schema, embedded in the binary and applied in order.
//! Hosts starting at once take a session advisory lock first, so one of
//! them migrates and the others find the work done; a database of a newer
//! version than this build knows is refused.

use tokio_postgres::Client;

use crate::StoreError;

/// One step per version; `schema_version` lists the steps applied.
pub(crate) const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_schema.sql")];

/// The advisory lock's key: any constant that no other application on
/// the same database is likely to use ("rollcage" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x726f_6c6c_6361_6765;

/// Bring the schema up to date under the migration lock. The lock is a
/// session lock: it is released here, and by PostgreSQL if the connection
/// drops half-way.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied = apply_missing(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    applied?;
    unlocked?;
    Ok(())
}

/// The version found, refused if newer; then each missing step in a
/// transaction of its own, recorded with it.
async fn apply_missing(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version     BIGINT PRIMARY KEY,
                applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let found = current_version(client).await?;
    let supported = MIGRATIONS.len() as u64;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = n as i64 + 1;
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Database(format!("schema step {version}: {}", describe(&e)))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The newest step applied (0 for an empty database).
pub(crate) async fn current_version(client: &Client) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// A PostgreSQL error's own message where there is one: the driver's
/// `Display` says only "db error".
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}
