//! The PostgreSQL store, for any number of hosts on one database.
//!
//! Connections come from a deadpool pool and every statement is prepared
//! once per connection. Fenced writes carry the lease in the statement
//! that writes (`... WHERE id = $1 AND owner = $2 AND epoch = $3`), or take
//! the run's row lock with that check first in the transaction that
//! writes, so that a claim by another host cannot come between the check
//! and the write. Times are the database's clock. Writes NOTIFY in their
//! transaction (see [`listen`]): other hosts hear of appends, decisions and
//! runs to claim at commit.

mod listen;
mod migrate;
mod url;

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::{
    AuditEntry, AuditFilter, DecisionRequest, DeliveryOutcome, EnvLock, Event, HostIdentity, Lease,
    NewAudit, NewDelivery, NewRun, QueuedDelivery, Run, RunFilter, RunStatus, Store, StoreError,
    Unfinished, Wake, new_id, notification_entry,
};
use listen::Wakers;
pub(crate) use migrate::describe;

pub use url::mask_password;

/// The schema version this build writes.
pub const POSTGRES_SCHEMA_VERSION: u64 = migrate::MIGRATIONS.len() as u64;

/// Connections per store handle: runs write at once, API reads beside.
const POOL_SIZE: usize = 16;

/// How long connecting may take when the URL does not say.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest wait for a free pooled connection.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

const UNFINISHED: &str = "status NOT IN ('succeeded', 'rolled_back', 'failed')";

const RUN_COLUMNS: &str = "id, spec, status, stage, reason, created_ms, updated_ms";

/// Runs and events in a PostgreSQL database, shared by several hosts.
/// Clones share the pool; the background tasks end with the last clone.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    identity: HostIdentity,
    wakers: Wakers,
    /// Dropped with the last handle: the listener and the poll see the
    /// channel close and end.
    _stop: tokio::sync::watch::Sender<()>,
}

impl PostgresStore {
    /// Connect to `url` as `identity`, bring the schema up to date and start
    /// listening for other hosts' writes. An unreachable database is an
    /// error naming the URL, its password masked.
    pub async fn connect(url: &str, identity: HostIdentity) -> Result<PostgresStore, StoreError> {
        let (config, pool) = open_pool(url).await?;
        let (stop, stopped) = tokio::sync::watch::channel(());
        let wakers = Wakers::new();
        let catch_up = listen::CatchUp {
            pool: pool.clone(),
            host: identity.name.clone(),
            wakers: wakers.clone(),
        };
        listen::start_listener(config, catch_up.clone(), stopped.clone()).await;
        listen::start_poll(catch_up, stopped);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                identity,
                wakers,
                _stop: stop,
            }),
        })
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Database(format!("postgres pool: {}", with_causes(&e))))
    }

    fn host_name(&self) -> &str {
        &self.inner.identity.name
    }

    /// The lease, in milliseconds.
    fn lease_ms(&self) -> i64 {
        self.inner.identity.lease.as_millis().min(i64::MAX as u128) as i64
    }

    fn fenced(&self, lease: &Lease) -> StoreError {
        StoreError::Fenced {
            run_id: lease.run_id.clone(),
            epoch: lease.epoch,
            host: self.host_name().to_string(),
        }
    }

    /// Why a fenced write matched no row: the run is unknown, or no longer
    /// this host's under this epoch.
    async fn refusal(&self, c: &impl GenericClient, lease: &Lease) -> StoreError {
        match query(c, "SELECT 1 FROM runs WHERE id = $1", &[&lease.run_id]).await {
            Ok(rows) if rows.is_empty() => StoreError::NoSuchRun(lease.run_id.clone()),
            Ok(_) => self.fenced(lease),
            Err(e) => e,
        }
    }

    /// `Fenced` (or `NoSuchRun`) unless `lease` is this host's current
    /// claim; otherwise the run's row stays share-locked until the
    /// transaction ends, so no claim can commit before the writes after it.
    async fn fence(&self, tx: &impl GenericClient, lease: &Lease) -> Result<(), StoreError> {
        let rows = query(
            tx,
            "SELECT owner, epoch FROM runs WHERE id = $1 FOR SHARE",
            &[&lease.run_id],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Err(StoreError::NoSuchRun(lease.run_id.clone()));
        };
        let owner: Option<String> = row.get(0);
        let epoch: i64 = row.get(1);
        if owner.as_deref() == Some(self.host_name()) && epoch == lease.epoch as i64 {
            Ok(())
        } else {
            Err(self.fenced(lease))
        }
    }
}

/// The pool for `url`, its first connection made (errors name the URL,
/// its password masked) and the schema brought up to date on it.
async fn open_pool(url: &str) -> Result<(tokio_postgres::Config, Pool), StoreError> {
    let shown = mask_password(url);
    let failed = |e: String| StoreError::Database(format!("{shown}: {e}"));
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| failed(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("rollcage");
    let pool = pool(config.clone()).map_err(failed)?;
    let client = pool.get().await.map_err(|e| failed(with_causes(&e)))?;
    // A connection of its own, closed afterwards: the migration lock is a
    // session lock and goes with it whatever happens.
    let mut client = Object::take(client);
    migrate::migrate(&mut client).await?;
    Ok((config, pool))
}

/// `e` and the errors under it (`error connecting to server: Connection
/// refused`): the pool's and the driver's messages leave their causes out.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut shown = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !shown.contains(&more) {
            shown = format!("{shown}: {more}");
        }
        cause = c.source();
    }
    shown
}

/// The connection pool for `config`. A connection found closed (the
/// server restarted it, or it was terminated) is replaced on checkout.
fn pool(config: tokio_postgres::Config) -> Result<Pool, String> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        // Every connection busy for this long means a wedged database:
        // an error, rather than a run waiting without end.
        .wait_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| e.to_string())
}

/// Run `sql`, prepared once per connection.
async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

/// Run `sql` (prepared once per connection); the rows it changed.
async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Database(e.to_string()))
}

/// A run from a row of [`RUN_COLUMNS`].
fn row_to_run(row: &tokio_postgres::Row) -> Result<Run, StoreError> {
    Ok(Run {
        id: row.get(0),
        run: parse_json(row.get(1))?,
        status: RunStatus::parse(row.get(2))?,
        stage: row.get(3),
        reason: row.get(4),
        created_ms: row.get::<_, i64>(5) as u64,
        updated_ms: row.get::<_, i64>(6) as u64,
    })
}

fn row_to_event(row: &tokio_postgres::Row) -> Result<Event, StoreError> {
    Ok(Event {
        seq: row.get::<_, i64>(0) as u64,
        at_ms: row.get::<_, i64>(1) as u64,
        kind: row.get(2),
        stage: row.get(3),
        data: parse_json(row.get(4))?,
        epoch: row.get::<_, i64>(5) as u64,
    })
}

fn row_to_delivery(row: &tokio_postgres::Row) -> Result<QueuedDelivery, StoreError> {
    Ok(QueuedDelivery {
        id: row.get::<_, i64>(0) as u64,
        queued_ms: row.get::<_, i64>(1) as u64,
        delivery: NewDelivery {
            notifier: row.get(2),
            run_id: row.get(3),
            stage: row.get(4),
            event: parse_json(row.get(5))?,
        },
    })
}

fn row_to_audit(row: &tokio_postgres::Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: row.get::<_, i64>(0) as u64,
        at_ms: row.get::<_, i64>(1) as u64,
        entry: NewAudit {
            actor: row.get(2),
            action: row.get(3),
            run_id: row.get(4),
            config_hash: row.get(5),
            detail: parse_json(row.get(6))?,
        },
    })
}

fn row_to_lease(row: &tokio_postgres::Row) -> Lease {
    Lease {
        run_id: row.get(0),
        epoch: row.get::<_, i64>(1) as u64,
    }
}

async fn read_events(
    c: &impl GenericClient,
    run_id: &str,
    after_seq: u64,
) -> Result<Vec<Event>, StoreError> {
    query(
        c,
        "SELECT seq, at_ms, kind, stage, data, epoch FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        &[&run_id, &(after_seq.min(i64::MAX as u64) as i64)],
    )
    .await?
    .iter()
    .map(row_to_event)
    .collect()
}

async fn read_run(c: &impl GenericClient, run_id: &str) -> Result<Run, StoreError> {
    let rows = query(
        c,
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
        &[&run_id],
    )
    .await?;
    match rows.first() {
        Some(row) => row_to_run(row),
        None => Err(StoreError::NoSuchRun(run_id.to_string())),
    }
}

/// Page size: the default when none is asked, and the most allowed.
fn page(limit: usize) -> usize {
    if limit == 0 { 50 } else { limit.min(500) }
}

/// A `WHERE` built clause by clause, with its parameters numbered as added.
#[derive(Default)]
struct Filter {
    sql: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filter {
    /// Add `clause`, where `$` stands for the new parameter.
    fn and(&mut self, clause: &str, arg: impl ToSql + Sync + Send + 'static) {
        self.args.push(Box::new(arg));
        let n = format!("${}", self.args.len());
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause.replace('$', &n));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn host(&self) -> &str {
        self.host_name()
    }

    fn lease_duration(&self) -> std::time::Duration {
        self.inner.identity.lease
    }

    async fn create_run(&self, run: NewRun) -> Result<String, StoreError> {
        let id = new_id();
        let spec = json_text(&run)?;
        let c = self.client().await?;
        execute(
            &c,
            "INSERT INTO runs (id, pipeline, spec, stages, status, created_ms, updated_ms)
             SELECT $1::text, $2::text, $3::text, $4::text[], 'queued', now, now FROM (SELECT rollcage_now_ms() AS now) t
             RETURNING rollcage_wake('r')",
            &[&id, &run.pipeline, &spec, &run.stages],
        )
        .await?;
        self.inner.wakers.local("r");
        Ok(id)
    }

    async fn claim(&self, run_id: Option<&str>, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        // SKIP LOCKED: rows another host is claiming right now are left to
        // it; a row claimed and committed since this statement began is
        // checked again on its new version, and left out as it is held.
        let rows = query(
            &c,
            &format!(
                "WITH free AS (
                    SELECT id FROM runs
                    WHERE {UNFINISHED}
                      AND (owner IS NULL OR (lease_until_ms < rollcage_now_ms() AND owner <> $1))
                      AND ($3::text IS NULL OR id = $3)
                    ORDER BY id LIMIT $2
                    FOR UPDATE SKIP LOCKED
                 )
                 UPDATE runs r SET owner = $1, epoch = r.epoch + 1,
                        lease_until_ms = rollcage_now_ms() + $4
                 FROM free WHERE r.id = free.id
                 RETURNING r.id, r.epoch"
            ),
            &[&self.host_name(), &limit, &run_id, &self.lease_ms()],
        )
        .await?;
        let mut leases: Vec<Lease> = rows.iter().map(row_to_lease).collect();
        leases.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(leases)
    }

    async fn heartbeat(&self) -> Result<Vec<Lease>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (host, lease_ms) = (self.host_name(), self.lease_ms());
        execute(
            &tx,
            "UPDATE deliveries SET lease_until_ms = rollcage_now_ms() + $2 WHERE owner = $1",
            &[&host, &lease_ms],
        )
        .await?;
        let rows = query(
            &tx,
            &format!(
                "UPDATE runs SET lease_until_ms = rollcage_now_ms() + $2
                 WHERE owner = $1 AND {UNFINISHED} RETURNING id, epoch"
            ),
            &[&host, &lease_ms],
        )
        .await?;
        tx.commit().await?;
        let mut leases: Vec<Lease> = rows.iter().map(row_to_lease).collect();
        leases.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(leases)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let c = self.client().await?;
        let released = execute(
            &c,
            "UPDATE runs SET owner = NULL, lease_until_ms = 0
             WHERE id = $1 AND owner = $2 AND epoch = $3
             RETURNING rollcage_wake('r')",
            &[&lease.run_id, &self.host_name(), &(lease.epoch as i64)],
        )
        .await?;
        if released == 0 {
            return Err(self.refusal(&c, lease).await);
        }
        self.inner.wakers.local("r");
        Ok(())
    }

    async fn release_all(&self) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        execute(
            &tx,
            "UPDATE runs SET owner = NULL, lease_until_ms = 0 WHERE owner = $1",
            &[&self.host_name()],
        )
        .await?;
        execute(
            &tx,
            "UPDATE deliveries SET owner = NULL, lease_until_ms = 0 WHERE owner = $1",
            &[&self.host_name()],
        )
        .await?;
        execute(&tx, "SELECT rollcage_wake('r')", &[]).await?;
        tx.commit().await?;
        self.inner.wakers.local("r");
        Ok(())
    }

    async fn holder(&self, run_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        let c = self.client().await?;
        let rows = query(
            &c,
            &format!(
                "SELECT owner, lease_until_ms FROM runs
                 WHERE id = $1 AND {UNFINISHED} AND owner IS NOT NULL
                   AND lease_until_ms >= rollcage_now_ms()"
            ),
            &[&run_id],
        )
        .await?;
        Ok(rows.first().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)))
    }

    async fn append(
        &self,
        lease: &Lease,
        kind: &str,
        stage: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, StoreError> {
        let data = data.to_string();
        let c = self.client().await?;
        // One statement, so one transaction and one round trip: bumping the
        // run's counter is the fence (owner and epoch) and takes the row's
        // lock, so concurrent appends number one after the other; the entry
        // is written with that number, or nothing is.
        let rows = query(
            &c,
            "WITH next AS (
                UPDATE runs SET last_seq = last_seq + 1
                WHERE id = $1 AND owner = $2 AND epoch = $3
                RETURNING last_seq
             ), entry AS (
                INSERT INTO events (run_id, seq, at_ms, kind, stage, data, epoch)
                SELECT $1, last_seq, rollcage_now_ms(), $4, $5, $6, $3 FROM next
                RETURNING seq
             )
             SELECT seq, rollcage_wake('a:' || $1) FROM entry",
            &[
                &lease.run_id,
                &self.host_name(),
                &(lease.epoch as i64),
                &kind,
                &stage,
                &data,
            ],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Err(self.refusal(&c, lease).await);
        };
        self.inner.wakers.local(&format!("a:{}", lease.run_id));
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn events(&self, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError> {
        let c = self.client().await?;
        read_events(&c, run_id, after_seq).await
    }

    async fn set_status(
        &self,
        lease: &Lease,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = status.is_finished();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // A finished run holds nothing: no host holds it any more...
        let updated = execute(
            &tx,
            "UPDATE runs SET status = $4, stage = COALESCE($5, stage),
                    reason = COALESCE($6, reason), updated_ms = rollcage_now_ms(),
                    owner = CASE WHEN $7 THEN NULL ELSE owner END,
                    lease_until_ms = CASE WHEN $7 THEN 0 ELSE lease_until_ms END
             WHERE id = $1 AND owner = $2 AND epoch = $3",
            &[
                &lease.run_id,
                &self.host_name(),
                &(lease.epoch as i64),
                &status.as_str(),
                &stage,
                &reason,
                &finished,
            ],
        )
        .await?;
        if updated == 0 {
            return Err(self.refusal(&tx, lease).await);
        }
        if finished {
            // ... and its environments go to the next in line.
            execute(
                &tx,
                "DELETE FROM env_locks WHERE run_id = $1",
                &[&lease.run_id],
            )
            .await?;
            execute(
                &tx,
                "DELETE FROM env_queue WHERE run_id = $1",
                &[&lease.run_id],
            )
            .await?;
            query(&tx, "SELECT rollcage_wake('r')", &[]).await?;
        }
        tx.commit().await?;
        if finished {
            self.inner.wakers.local("r");
        }
        Ok(())
    }

    async fn lock_environment(
        &self,
        lease: &Lease,
        environment: &str,
        queue: bool,
    ) -> Result<EnvLock, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        self.fence(&tx, lease).await?;
        // One lock taker per environment at a time: the holder and the
        // line are read and changed as one step.
        query(
            &tx,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&environment],
        )
        .await?;
        let me = lease.run_id.as_str();
        let outcome = lock_step(&tx, environment, me, queue).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn unlock_environment(&self, lease: &Lease, environment: &str) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        self.fence(&tx, lease).await?;
        execute(
            &tx,
            "DELETE FROM env_locks WHERE environment = $1 AND run_id = $2",
            &[&environment, &lease.run_id],
        )
        .await?;
        query(&tx, "SELECT rollcage_wake('r')", &[]).await?;
        tx.commit().await?;
        self.inner.wakers.local("r");
        Ok(())
    }

    async fn environment_locks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let c = self.client().await?;
        let rows = query(
            &c,
            "SELECT environment, run_id FROM env_locks ORDER BY environment",
            &[],
        )
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn run(&self, run_id: &str) -> Result<Run, StoreError> {
        let c = self.client().await?;
        read_run(&c, run_id).await
    }

    async fn run_with_log(&self, run_id: &str) -> Result<(Run, Vec<Event>), StoreError> {
        let mut c = self.client().await?;
        // One snapshot for both reads: the log is the one the status was
        // read with.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let run = read_run(&tx, run_id).await?;
        let log = read_events(&tx, run_id, 0).await?;
        tx.commit().await?;
        Ok((run, log))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let mut w = Filter::default();
        if let Some(p) = &filter.pipeline {
            w.and("pipeline = $", p.clone());
        }
        if let Some(s) = filter.status {
            w.and("status = $", s.as_str());
        }
        if let Some(e) = &filter.environment {
            w.and("$ = ANY (stages)", e.clone());
        }
        if let Some(t) = filter.since_ms {
            w.and("created_ms >= $", t.min(i64::MAX as u64) as i64);
        }
        if let Some(b) = &filter.before {
            w.and("id < $", b.clone());
        }
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE true{} ORDER BY id DESC LIMIT {}",
            w.sql,
            page(filter.limit)
        );
        let c = self.client().await?;
        query(&c, &sql, &w.params())
            .await?
            .iter()
            .map(row_to_run)
            .collect()
    }

    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError> {
        let c = self.client().await?;
        query(
            &c,
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE {UNFINISHED} ORDER BY id"),
            &[],
        )
        .await?
        .iter()
        .map(row_to_run)
        .collect()
    }

    async fn unfinished_count(&self, pipeline: &str) -> Result<Unfinished, StoreError> {
        let c = self.client().await?;
        let rows = query(
            &c,
            &format!(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE pipeline = $1) FROM runs WHERE {UNFINISHED}"
            ),
            &[&pipeline],
        )
        .await?;
        let row = &rows[0];
        Ok(Unfinished {
            all: row.get::<_, i64>(0) as usize,
            of_pipeline: row.get::<_, i64>(1) as usize,
        })
    }

    async fn request_decision(
        &self,
        run_id: &str,
        decision: &DecisionRequest,
    ) -> Result<(), StoreError> {
        let data = json_text(decision)?;
        let c = self.client().await?;
        let queued = execute(
            &c,
            "INSERT INTO decisions (run_id, data) SELECT id, $2 FROM runs WHERE id = $1
             RETURNING rollcage_wake('d:' || run_id)",
            &[&run_id, &data],
        )
        .await?;
        if queued == 0 {
            return Err(StoreError::NoSuchRun(run_id.to_string()));
        }
        self.inner.wakers.local(&format!("d:{run_id}"));
        Ok(())
    }

    async fn take_decisions(&self, lease: &Lease) -> Result<Vec<DecisionRequest>, StoreError> {
        let c = self.client().await?;
        // The fence is in the statement that deletes; nothing deleted is
        // either nothing waiting or a fenced host, told apart after.
        let rows = query(
            &c,
            "DELETE FROM decisions WHERE run_id = $1 AND EXISTS (
                SELECT 1 FROM runs WHERE id = $1 AND owner = $2 AND epoch = $3 FOR SHARE
             ) RETURNING id, data",
            &[&lease.run_id, &self.host_name(), &(lease.epoch as i64)],
        )
        .await?;
        if rows.is_empty() {
            self.fence(&c, lease).await?;
            return Ok(vec![]);
        }
        let mut taken: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        taken.sort_by_key(|(id, _)| *id);
        taken.iter().map(|(_, d)| parse_json(d)).collect()
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        let detail = entry.detail.to_string();
        let c = self.client().await?;
        execute(
            &c,
            "INSERT INTO audit (at_ms, actor, action, run_id, config_hash, detail)
             VALUES (rollcage_now_ms(), $1, $2, $3, $4, $5)",
            &[
                &entry.actor,
                &entry.action,
                &entry.run_id,
                &entry.config_hash,
                &detail,
            ],
        )
        .await?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut w = Filter::default();
        if let Some(a) = &filter.actor {
            w.and("actor = $", a.clone());
        }
        if let Some(r) = &filter.run_id {
            w.and("run_id = $", r.clone());
        }
        if let Some(t) = filter.since_ms {
            w.and("at_ms >= $", t.min(i64::MAX as u64) as i64);
        }
        if let Some(b) = filter.before {
            w.and("id < $", b.min(i64::MAX as u64) as i64);
        }
        let sql = format!(
            "SELECT id, at_ms, actor, action, run_id, config_hash, detail FROM audit
             WHERE true{} ORDER BY id DESC LIMIT {}",
            w.sql,
            page(filter.limit)
        );
        let c = self.client().await?;
        query(&c, &sql, &w.params())
            .await?
            .iter()
            .map(row_to_audit)
            .collect()
    }

    async fn queue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<Vec<u64>, StoreError> {
        if deliveries.is_empty() {
            return Ok(vec![]);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let mut ids = Vec::with_capacity(deliveries.len());
        for d in &deliveries {
            let rows = query(
                &tx,
                "INSERT INTO deliveries (notifier, run_id, stage, event, queued_ms, owner, lease_until_ms)
                 SELECT $1::text, id, $3::text, $4::text, rollcage_now_ms(), $5::text, rollcage_now_ms() + $6
                 FROM runs WHERE id = $2
                 RETURNING id",
                &[
                    &d.notifier,
                    &d.run_id,
                    &d.stage,
                    &d.event.to_string(),
                    &self.host_name(),
                    &self.lease_ms(),
                ],
            )
            .await?;
            // Dropping the transaction undoes the batch.
            let Some(row) = rows.first() else {
                return Err(StoreError::NoSuchRun(d.run_id.clone()));
            };
            ids.push(row.get::<_, i64>(0) as u64);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        let c = self.client().await?;
        query(
            &c,
            "SELECT id, queued_ms, notifier, run_id, stage, event FROM deliveries ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(row_to_delivery)
        .collect()
    }

    async fn claim_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        let c = self.client().await?;
        // Only what is newly claimed: this host's own deliveries are under
        // way already.
        let rows = query(
            &c,
            "WITH free AS (
                SELECT id FROM deliveries
                WHERE owner IS NULL OR (lease_until_ms < rollcage_now_ms() AND owner <> $1)
                FOR UPDATE SKIP LOCKED
             )
             UPDATE deliveries d SET owner = $1, lease_until_ms = rollcage_now_ms() + $2
             FROM free WHERE d.id = free.id
             RETURNING d.id, d.queued_ms, d.notifier, d.run_id, d.stage, d.event",
            &[&self.host_name(), &self.lease_ms()],
        )
        .await?;
        let mut out = rows
            .iter()
            .map(row_to_delivery)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    async fn end_delivery(&self, id: u64, outcome: &DeliveryOutcome) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let rows = query(
            &tx,
            "DELETE FROM deliveries WHERE id = $1 AND owner = $2 RETURNING notifier, run_id, stage",
            &[&(id.min(i64::MAX as u64) as i64), &self.host_name()],
        )
        .await?;
        // Ended already (by this host before a crash that lost the
        // answer), or taken over by another host: one entry per delivery.
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        let (notifier, run_id, stage): (String, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        let entry = notification_entry(&notifier, outcome).to_string();
        // The run's counter, without the fence: the entry is the queue's,
        // written whoever drives the run, and after it finished.
        query(
            &tx,
            "WITH next AS (
                UPDATE runs SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq, epoch
             )
             INSERT INTO events (run_id, seq, at_ms, kind, stage, data, epoch)
             SELECT $1, last_seq, rollcage_now_ms(), 'notification', $2, $3, epoch FROM next
             RETURNING rollcage_wake('a:' || $1)",
            &[&run_id, &stage, &entry],
        )
        .await?;
        tx.commit().await?;
        self.inner.wakers.local(&format!("a:{run_id}"));
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        query(&c, "SELECT 1", &[]).await?;
        Ok(())
    }

    fn appended(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.wakers.appended.subscribe()
    }

    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<Wake> {
        self.inner.wakers.wakeups.subscribe()
    }
}

/// The lock step of [`Store::lock_environment`], under the environment's
/// lock: take it if free and no one is ahead, else say who is in the way
/// (and, with `queue`, get in line).
async fn lock_step(
    tx: &impl GenericClient,
    environment: &str,
    me: &str,
    queue: bool,
) -> Result<EnvLock, StoreError> {
    let holder = query(
        tx,
        "SELECT run_id FROM env_locks WHERE environment = $1",
        &[&environment],
    )
    .await?
    .first()
    .map(|r| r.get::<_, String>(0));
    match holder {
        Some(h) if h == me => return Ok(EnvLock::Held),
        Some(h) => {
            wait_in_line(tx, environment, me, queue).await?;
            return Ok(EnvLock::Busy {
                holder: h,
                holding: true,
            });
        }
        None => {}
    }
    let first = query(
        tx,
        "SELECT run_id FROM env_queue WHERE environment = $1 ORDER BY id LIMIT 1",
        &[&environment],
    )
    .await?
    .first()
    .map(|r| r.get::<_, String>(0));
    match first {
        Some(f) if f != me => {
            wait_in_line(tx, environment, me, queue).await?;
            Ok(EnvLock::Busy {
                holder: f,
                holding: false,
            })
        }
        _ => {
            execute(
                tx,
                "INSERT INTO env_locks (environment, run_id, since_ms) VALUES ($1, $2, rollcage_now_ms())",
                &[&environment, &me],
            )
            .await?;
            execute(
                tx,
                "DELETE FROM env_queue WHERE environment = $1 AND run_id = $2",
                &[&environment, &me],
            )
            .await?;
            Ok(EnvLock::Held)
        }
    }
}

/// With `queue`, put run `me` in line for `environment` (once).
async fn wait_in_line(
    tx: &impl GenericClient,
    environment: &str,
    me: &str,
    queue: bool,
) -> Result<(), StoreError> {
    if queue {
        execute(
            tx,
            "INSERT INTO env_queue (environment, run_id, since_ms) VALUES ($1, $2, rollcage_now_ms())
             ON CONFLICT (environment, run_id) DO NOTHING",
            &[&environment, &me],
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
