//! The SQLite store: one file in WAL mode. Writes go to one thread that
//! commits all the writes waiting for it together (`writer`); reads use a
//! few connections of their own from blocking tasks (WAL lets them go on
//! while a commit is under way), so the async executor never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::writer::Writer;
use crate::{
    AuditEntry, AuditFilter, DecisionRequest, DeliveryOutcome, EnvLock, Event, HostIdentity, Lease,
    NewAudit, NewDelivery, NewRun, QueuedDelivery, Run, RunFilter, RunStatus, Store, StoreError,
    Unfinished, Wake, new_id, notification_entry, now_ms,
};

/// The schema, one step per version: `PRAGMA user_version` says how many
/// have been applied. A database of a newer version is refused.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_runs.sql"),
    include_str!("../migrations/sqlite/0002_leases.sql"),
    include_str!("../migrations/sqlite/0003_unfinished_index.sql"),
];

/// Runs and events in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    /// Empty for a database in memory, which only the writer's connection
    /// sees: reads then queue with the writes.
    readers: Arc<Vec<Mutex<Connection>>>,
    appended: tokio::sync::broadcast::Sender<String>,
    wakeups: tokio::sync::broadcast::Sender<Wake>,
    /// Who this handle writes as.
    identity: Arc<HostIdentity>,
    /// The file, unless in memory.
    path: Option<Arc<std::path::PathBuf>>,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, as this process
    /// with the default lease. The file, its WAL and shared-memory files
    /// are for their owner only (0600): SQLite gives the last two the
    /// database file's mode, which is set here whatever the umask, and
    /// narrowed on a file found wider.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_as(path, HostIdentity::default())
    }

    /// [`SqliteStore::open`], writing as `identity`.
    pub fn open_as(path: &Path, identity: HostIdentity) -> Result<SqliteStore, StoreError> {
        owner_only(path).map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        let open = |flags| {
            Connection::open_with_flags(path, flags)
                .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))
        };
        let writer = Self::prepare(open(OpenFlags::default())?)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader =
                    open(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
                reader.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(reader)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut store = Self::start(writer, readers, identity)?;
        store.path = Some(Arc::new(path.to_path_buf()));
        // Other processes (a `rollcage run` beside a server, an approval
        // from the CLI) write to the same file: watch it for their commits.
        let watcher = open(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        watch_other_writers(
            watcher,
            store.wakeups.clone(),
            std::sync::Arc::downgrade(&store.readers),
        );
        Ok(store)
    }

    /// A database in memory, for tests and dry runs.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::in_memory_as(HostIdentity::default())
    }

    /// [`SqliteStore::in_memory`], writing as `identity`.
    pub fn in_memory_as(identity: HostIdentity) -> Result<SqliteStore, StoreError> {
        Self::start(
            Self::prepare(Connection::open_in_memory()?)?,
            vec![],
            identity,
        )
    }

    fn prepare(conn: Connection) -> Result<Connection, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Each append is durable before the action it announces runs; group
        // commit shares the cost of that among the runs writing at once.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(conn)
    }

    fn start(
        writer: Connection,
        readers: Vec<Connection>,
        identity: HostIdentity,
    ) -> Result<SqliteStore, StoreError> {
        Ok(SqliteStore {
            writer: Writer::start(writer)?,
            readers: Arc::new(readers.into_iter().map(Mutex::new).collect()),
            // Readers that fall behind refetch from the database; the
            // channel only wakes them.
            appended: tokio::sync::broadcast::channel(1024).0,
            wakeups: tokio::sync::broadcast::channel(1024).0,
            identity: Arc::new(identity),
            path: None,
        })
    }

    /// Move the WAL's content into the database and empty it, so that a
    /// clean shutdown leaves one file and no write history beside it. Meant
    /// for when nothing else writes (the writer's transactions would make
    /// it wait, another process's would make it fail).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            // A connection of its own: the writer's is always inside a
            // transaction, where a checkpoint cannot run.
            let c = Connection::open(&*path)?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy != 0 {
                return Err(StoreError::Database(format!(
                    "{}: the WAL checkpoint found the database busy",
                    path.display()
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Database(format!("store task: {e}")))?
    }

    /// Run `f` (given the run's id) in the next transaction, under
    /// `lease`: refused with `Fenced` unless the run is still this host's
    /// under that epoch. The writer's transaction holds SQLite's write
    /// lock, so no claim comes between the check and the write.
    async fn fenced<T: Send + 'static>(
        &self,
        lease: &Lease,
        f: impl FnOnce(&Connection, &str) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (host, lease) = (self.identity.name.clone(), lease.clone());
        self.writer
            .write(move |c| {
                fence(c, &host, &lease)?;
                f(c, &lease.run_id)
            })
            .await
    }

    /// The lease, in milliseconds.
    fn lease_ms(&self) -> i64 {
        self.identity.lease.as_millis().min(i64::MAX as u128) as i64
    }

    /// Transactions committed so far: with several writers at once, fewer
    /// than the writes, as they share commits.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// A read, on a free reading connection (or, all busy, the first), or
    /// with the writes for a database in memory.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.readers.is_empty() {
            return self.writer.write(f).await;
        }
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let free = readers.iter().find_map(|r| r.try_lock().ok());
            let conn = free.unwrap_or_else(|| readers[0].lock().unwrap());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Database(format!("store task: {e}")))?
    }
}

/// Create `path` (mode 0600) if missing, and narrow it and its WAL and
/// shared-memory files to 0600 if they exist.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Bring the schema up to date, one step per transaction; refuse a
/// database of a newer version.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as u64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let found = found as u64;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // IMMEDIATE: two processes opening an old file at once migrate it
        // one after the other; the second finds it done.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let step = if version as usize > n {
            Ok(())
        } else {
            conn.execute_batch(sql)
                .and_then(|()| conn.pragma_update(None, "user_version", n as i64 + 1))
        };
        match step {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(StoreError::Database(format!("schema step {}: {e}", n + 1)));
            }
        }
    }
    Ok(())
}

/// How often the file is looked at for other processes' commits.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Wake this process's runs for what other processes wrote: a thread that
/// looks at `PRAGMA data_version` (it changes when another connection
/// commits) and, when it moved, wakes the runs with decisions waiting and
/// the hosts that may claim runs. One cheap read per tick for the whole
/// store, however many runs it drives; it ends with the store.
fn watch_other_writers(
    conn: Connection,
    wakeups: tokio::sync::broadcast::Sender<Wake>,
    alive: std::sync::Weak<Vec<Mutex<Connection>>>,
) {
    let _ = std::thread::Builder::new()
        .name("rollcage-store-watch".into())
        .spawn(move || {
            let mut last: Option<i64> = None;
            while alive.strong_count() > 0 {
                std::thread::sleep(WATCH_EVERY);
                let Ok(version) = conn.pragma_query_value(None, "data_version", |r| r.get(0))
                else {
                    continue;
                };
                if last.replace(version) == Some(version) || wakeups.receiver_count() == 0 {
                    continue;
                }
                let waiting: Vec<String> = conn
                    .prepare_cached("SELECT DISTINCT run_id FROM decisions")
                    .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                    .unwrap_or_default();
                for run_id in waiting {
                    let _ = wakeups.send(Wake::Decision(run_id));
                }
                let _ = wakeups.send(Wake::Runnable);
            }
        });
}

/// `Fenced` unless `lease` is still the run's current claim by `host`
/// (`NoSuchRun` for an unknown run). Called inside the write it guards:
/// the writer's transaction holds SQLite's write lock, so no other claim
/// can come between the check and the write.
fn fence(c: &Connection, host: &str, lease: &Lease) -> Result<(), StoreError> {
    let row: Option<(Option<String>, i64)> = c
        .query_row(
            "SELECT owner, epoch FROM runs WHERE id = ?1",
            [&lease.run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Err(StoreError::NoSuchRun(lease.run_id.clone())),
        Some((Some(owner), epoch)) if owner == host && epoch as u64 == lease.epoch => Ok(()),
        Some(_) => Err(StoreError::Fenced {
            run_id: lease.run_id.clone(),
            epoch: lease.epoch,
            host: host.to_string(),
        }),
    }
}

const UNFINISHED: &str = "status NOT IN ('succeeded', 'rolled_back', 'failed')";

const DELIVERY_COLUMNS: &str = "id, queued_ms, notifier, run_id, stage, event";

fn row_to_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedDelivery> {
    let event: String = r.get(5)?;
    Ok(QueuedDelivery {
        id: r.get::<_, i64>(0)? as u64,
        queued_ms: r.get::<_, i64>(1)? as u64,
        delivery: NewDelivery {
            notifier: r.get(2)?,
            run_id: r.get(3)?,
            stage: r.get(4)?,
            event: serde_json::from_str(&event).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
            })?,
        },
    })
}

fn row_to_run(row: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    let bad = |e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    };
    let spec: String = row.get(1)?;
    let status: String = row.get(2)?;
    Ok(Run {
        id: row.get(0)?,
        run: serde_json::from_str(&spec).map_err(|e| bad(e.to_string()))?,
        status: RunStatus::parse(&status).map_err(|e| bad(e.to_string()))?,
        stage: row.get(3)?,
        reason: row.get(4)?,
        created_ms: row.get::<_, i64>(5)? as u64,
        updated_ms: row.get::<_, i64>(6)? as u64,
    })
}

/// `NoSuchRun` unless run `run_id` exists: nothing is written for a run
/// the store does not know.
fn ensure_run(c: &Connection, run_id: &str) -> Result<(), StoreError> {
    let exists: Option<String> = c
        .query_row("SELECT id FROM runs WHERE id = ?1", [run_id], |r| r.get(0))
        .optional()?;
    match exists {
        Some(_) => Ok(()),
        None => Err(StoreError::NoSuchRun(run_id.to_string())),
    }
}

/// Reading connections of a file database: reads (API requests, live
/// streams, decision polls) run side by side, and beside the writer.
const READERS: usize = 4;

const RUN_COLUMNS: &str = "id, spec, status, stage, reason, created_ms, updated_ms";

fn read_run(c: &Connection, run_id: &str) -> Result<Run, StoreError> {
    c.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [run_id],
        row_to_run,
    )
    .optional()?
    .ok_or_else(|| StoreError::NoSuchRun(run_id.to_string()))
}

fn read_events(c: &Connection, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT seq, at_ms, kind, stage, data, epoch FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![run_id, after_seq as i64], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)? as u64,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at_ms, kind, stage, data, epoch) = row?;
        out.push(Event {
            seq,
            at_ms,
            kind,
            stage,
            epoch,
            data: serde_json::from_str(&data).map_err(|e| StoreError::Database(e.to_string()))?,
        });
    }
    Ok(out)
}

/// Append an entry to a run's log under the run's current epoch; its
/// sequence number.
fn insert_event(
    c: &Connection,
    run_id: &str,
    kind: &str,
    stage: Option<&str>,
    data: &serde_json::Value,
) -> Result<u64, StoreError> {
    let seq = c.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
        [run_id],
        |r| r.get::<_, i64>(0),
    )? as u64;
    c.execute(
        "INSERT INTO events (run_id, seq, at_ms, kind, stage, data, epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT epoch FROM runs WHERE id = ?1))",
        params![run_id, seq as i64, now_ms() as i64, kind, stage, data.to_string()],
    )?;
    Ok(seq)
}

#[async_trait]
impl Store for SqliteStore {
    fn host(&self) -> &str {
        &self.identity.name
    }

    fn lease_duration(&self) -> std::time::Duration {
        self.identity.lease
    }

    async fn create_run(&self, run: NewRun) -> Result<String, StoreError> {
        let id = self.writer.write(move |c| {
            let id = new_id();
            let spec = serde_json::to_string(&run).map_err(|e| StoreError::Database(e.to_string()))?;
            let now = now_ms();
            c.execute(
                "INSERT INTO runs (id, pipeline, spec, status, created_ms, updated_ms) VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
                params![id, run.pipeline, spec, now as i64],
            )?;
            Ok(id)
        })
        .await?;
        let _ = self.wakeups.send(Wake::Runnable);
        Ok(id)
    }

    async fn claim(&self, run_id: Option<&str>, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let (host, lease_ms) = (self.identity.name.clone(), self.lease_ms());
        let run_id = run_id.map(str::to_string);
        self.writer
            .write(move |c| {
                let now = now_ms() as i64;
                let mut sql = format!(
                    "SELECT id FROM runs WHERE {UNFINISHED} AND (owner IS NULL OR (lease_until_ms < ?1 AND owner != ?2))"
                );
                if run_id.is_some() {
                    sql.push_str(" AND id = ?4");
                }
                sql.push_str(" ORDER BY id LIMIT ?3");
                let ids: Vec<String> = {
                    let mut stmt = c.prepare_cached(&sql)?;
                    let limit = limit.min(i64::MAX as usize) as i64;
                    match &run_id {
                        Some(id) => stmt
                            .query_map(params![now, host, limit, id], |r| r.get(0))?
                            .collect::<Result<_, _>>()?,
                        None => stmt
                            .query_map(params![now, host, limit], |r| r.get(0))?
                            .collect::<Result<_, _>>()?,
                    }
                };
                let mut leases = Vec::with_capacity(ids.len());
                for id in ids {
                    let epoch: i64 = c.query_row(
                        "UPDATE runs SET owner = ?2, epoch = epoch + 1, lease_until_ms = ?3 WHERE id = ?1 RETURNING epoch",
                        params![id, host, now + lease_ms],
                        |r| r.get(0),
                    )?;
                    leases.push(Lease { run_id: id, epoch: epoch as u64 });
                }
                Ok(leases)
            })
            .await
    }

    async fn heartbeat(&self) -> Result<Vec<Lease>, StoreError> {
        let (host, lease_ms) = (self.identity.name.clone(), self.lease_ms());
        self.writer
            .write(move |c| {
                let until = now_ms() as i64 + lease_ms;
                c.execute(
                    "UPDATE deliveries SET lease_until_ms = ?2 WHERE owner = ?1",
                    params![host, until],
                )?;
                let mut stmt = c.prepare_cached(&format!(
                    "UPDATE runs SET lease_until_ms = ?2 WHERE owner = ?1 AND {UNFINISHED} RETURNING id, epoch"
                ))?;
                let rows = stmt.query_map(params![host, until], |r| {
                    Ok(Lease {
                        run_id: r.get(0)?,
                        epoch: r.get::<_, i64>(1)? as u64,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.fenced(lease, |c, run_id| {
            c.execute(
                "UPDATE runs SET owner = NULL, lease_until_ms = 0 WHERE id = ?1",
                [run_id],
            )?;
            Ok(())
        })
        .await?;
        let _ = self.wakeups.send(Wake::Runnable);
        Ok(())
    }

    async fn release_all(&self) -> Result<(), StoreError> {
        let host = self.identity.name.clone();
        self.writer
            .write(move |c| {
                c.execute(
                    "UPDATE runs SET owner = NULL, lease_until_ms = 0 WHERE owner = ?1",
                    [&host],
                )?;
                c.execute(
                    "UPDATE deliveries SET owner = NULL, lease_until_ms = 0 WHERE owner = ?1",
                    [&host],
                )?;
                Ok(())
            })
            .await?;
        let _ = self.wakeups.send(Wake::Runnable);
        Ok(())
    }

    async fn holder(&self, run_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| {
            let row: Option<(Option<String>, i64)> = c
                .query_row(
                    &format!(
                        "SELECT owner, lease_until_ms FROM runs WHERE id = ?1 AND {UNFINISHED}"
                    ),
                    [&run_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(match row {
                Some((Some(owner), until)) if until as u64 >= now_ms() => {
                    Some((owner, until as u64))
                }
                _ => None,
            })
        })
        .await
    }

    async fn append(
        &self,
        lease: &Lease,
        kind: &str,
        stage: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, StoreError> {
        let (kind, stage) = (kind.to_string(), stage.map(str::to_string));
        let seq = self
            .fenced(lease, move |c, run_id| {
                insert_event(c, run_id, &kind, stage.as_deref(), &data)
            })
            .await?;
        // No receiver is not an error: nobody is watching.
        let _ = self.appended.send(lease.run_id.clone());
        Ok(seq)
    }

    async fn events(&self, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| read_events(c, &run_id, after_seq)).await
    }

    async fn set_status(
        &self,
        lease: &Lease,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let (stage, reason) = (stage.map(str::to_string), reason.map(str::to_string));
        self.fenced(lease, move |c, run_id| {
            c.execute(
                "UPDATE runs SET status = ?2, stage = COALESCE(?3, stage), reason = COALESCE(?4, reason), updated_ms = ?5 WHERE id = ?1",
                params![run_id, status.as_str(), stage, reason, now_ms() as i64],
            )?;
            if status.is_finished() {
                // A finished run holds nothing: its environments go to
                // the next in line, and no host holds it any more.
                c.execute("DELETE FROM env_locks WHERE run_id = ?1", [run_id])?;
                c.execute("DELETE FROM env_queue WHERE run_id = ?1", [run_id])?;
                c.execute(
                    "UPDATE runs SET owner = NULL, lease_until_ms = 0 WHERE id = ?1",
                    [run_id],
                )?;
            }
            Ok(())
        })
        .await?;
        if status.is_finished() {
            let _ = self.wakeups.send(Wake::Runnable);
        }
        Ok(())
    }

    async fn lock_environment(
        &self,
        lease: &Lease,
        environment: &str,
        queue: bool,
    ) -> Result<EnvLock, StoreError> {
        let env = environment.to_string();
        self.fenced(lease, move |c, me| {
                let now = now_ms() as i64;
                let wait = |c: &Connection| -> Result<(), StoreError> {
                    if queue {
                        c.execute(
                            "INSERT OR IGNORE INTO env_queue (environment, run_id, since_ms) VALUES (?1, ?2, ?3)",
                            params![env, me, now],
                        )?;
                    }
                    Ok(())
                };
                let holder: Option<String> = c
                    .query_row(
                        "SELECT run_id FROM env_locks WHERE environment = ?1",
                        [&env],
                        |r| r.get(0),
                    )
                    .optional()?;
                match holder {
                    Some(h) if h == me => return Ok(EnvLock::Held),
                    Some(h) => {
                        wait(c)?;
                        return Ok(EnvLock::Busy { holder: h, holding: true });
                    }
                    None => {}
                }
                let first: Option<String> = c
                    .query_row(
                        "SELECT run_id FROM env_queue WHERE environment = ?1 ORDER BY id LIMIT 1",
                        [&env],
                        |r| r.get(0),
                    )
                    .optional()?;
                match first {
                    Some(f) if f != me => {
                        wait(c)?;
                        Ok(EnvLock::Busy { holder: f, holding: false })
                    }
                    _ => {
                        c.execute(
                            "INSERT INTO env_locks (environment, run_id, since_ms) VALUES (?1, ?2, ?3)",
                            params![env, me, now],
                        )?;
                        c.execute(
                            "DELETE FROM env_queue WHERE environment = ?1 AND run_id = ?2",
                            params![env, me],
                        )?;
                        Ok(EnvLock::Held)
                    }
                }
            })
        .await
    }

    async fn unlock_environment(&self, lease: &Lease, environment: &str) -> Result<(), StoreError> {
        let env = environment.to_string();
        self.fenced(lease, move |c, run_id| {
            c.execute(
                "DELETE FROM env_locks WHERE environment = ?1 AND run_id = ?2",
                params![env, run_id],
            )?;
            Ok(())
        })
        .await?;
        let _ = self.wakeups.send(Wake::Runnable);
        Ok(())
    }

    async fn environment_locks(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT environment, run_id FROM env_locks ORDER BY environment")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn run(&self, run_id: &str) -> Result<Run, StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| read_run(c, &run_id)).await
    }

    async fn run_with_log(&self, run_id: &str) -> Result<(Run, Vec<Event>), StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| {
            // One read transaction: the log is the one the status was read
            // with. In memory the read runs inside the writer's batch,
            // which already is one.
            let own = c.is_autocommit();
            if own {
                c.execute_batch("BEGIN")?;
            }
            let read = read_run(c, &run_id).and_then(|run| Ok((run, read_events(c, &run_id, 0)?)));
            if own {
                // Only ends the snapshot: nothing was written.
                c.execute_batch("COMMIT")?;
            }
            read
        })
        .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let f = filter.clone();
        self.read(move |c| {
            let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if let Some(p) = f.pipeline {
                args.push(Box::new(p));
                sql.push_str(&format!(" AND pipeline = ?{}", args.len()));
            }
            if let Some(s) = f.status {
                args.push(Box::new(s.as_str()));
                sql.push_str(&format!(" AND status = ?{}", args.len()));
            }
            if let Some(e) = f.environment {
                args.push(Box::new(e));
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM json_each(spec, '$.stages') WHERE value = ?{})",
                    args.len()
                ));
            }
            if let Some(t) = f.since_ms {
                args.push(Box::new(t as i64));
                sql.push_str(&format!(" AND created_ms >= ?{}", args.len()));
            }
            if let Some(b) = f.before {
                args.push(Box::new(b));
                sql.push_str(&format!(" AND id < ?{}", args.len()));
            }
            sql.push_str(" ORDER BY id DESC");
            let limit = if f.limit == 0 { 50 } else { f.limit.min(500) };
            sql.push_str(&format!(" LIMIT {limit}"));
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(
                rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
                row_to_run,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE {UNFINISHED} ORDER BY id"
            ))?;
            let rows = stmt.query_map([], row_to_run)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn unfinished_count(&self, pipeline: &str) -> Result<Unfinished, StoreError> {
        let pipeline = pipeline.to_string();
        self.read(move |c| {
            let (all, of_pipeline): (i64, i64) = c.query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(pipeline = ?1), 0) FROM runs WHERE {UNFINISHED}"
                ),
                [&pipeline],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(Unfinished {
                all: all as usize,
                of_pipeline: of_pipeline as usize,
            })
        })
        .await
    }

    async fn request_decision(
        &self,
        run_id: &str,
        decision: &DecisionRequest,
    ) -> Result<(), StoreError> {
        let run_id = run_id.to_string();
        let woken = run_id.clone();
        let data =
            serde_json::to_string(decision).map_err(|e| StoreError::Database(e.to_string()))?;
        self.writer
            .write(move |c| {
                ensure_run(c, &run_id)?;
                c.execute(
                    "INSERT INTO decisions (run_id, data) VALUES (?1, ?2)",
                    params![run_id, data],
                )?;
                Ok(())
            })
            .await?;
        let _ = self.wakeups.send(Wake::Decision(woken));
        Ok(())
    }

    async fn take_decisions(&self, lease: &Lease) -> Result<Vec<DecisionRequest>, StoreError> {
        // Runs look whenever they are woken and now and then, and nearly
        // always find nothing: look first, and write only to take what is
        // there.
        let (host, looked) = (self.identity.name.clone(), lease.clone());
        let waiting: i64 = self
            .read(move |c| {
                // The fence too, so that a host that lost the run learns
                // it here rather than by the next write.
                fence(c, &host, &looked)?;
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM decisions WHERE run_id = ?1",
                    [&looked.run_id],
                    |r| r.get(0),
                )?)
            })
            .await?;
        if waiting == 0 {
            return Ok(vec![]);
        }
        self.fenced(lease, |c, run_id| {
            let rows: Vec<String> = {
                let mut stmt =
                    c.prepare("SELECT data FROM decisions WHERE run_id = ?1 ORDER BY id")?;
                stmt.query_map([run_id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            c.execute("DELETE FROM decisions WHERE run_id = ?1", [run_id])?;
            rows.iter()
                .map(|d| serde_json::from_str(d).map_err(|e| StoreError::Database(e.to_string())))
                .collect()
        })
        .await
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        self.writer.write(move |c| {
            c.execute(
                "INSERT INTO audit (at_ms, actor, action, run_id, config_hash, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now_ms() as i64, entry.actor, entry.action, entry.run_id, entry.config_hash, entry.detail.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let f = filter.clone();
        self.read(move |c| {
            let mut sql = String::from(
                "SELECT id, at_ms, actor, action, run_id, config_hash, detail FROM audit WHERE 1 = 1",
            );
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if let Some(a) = f.actor {
                args.push(Box::new(a));
                sql.push_str(&format!(" AND actor = ?{}", args.len()));
            }
            if let Some(r) = f.run_id {
                args.push(Box::new(r));
                sql.push_str(&format!(" AND run_id = ?{}", args.len()));
            }
            if let Some(t) = f.since_ms {
                args.push(Box::new(t as i64));
                sql.push_str(&format!(" AND at_ms >= ?{}", args.len()));
            }
            if let Some(b) = f.before {
                args.push(Box::new(b as i64));
                sql.push_str(&format!(" AND id < ?{}", args.len()));
            }
            let limit = if f.limit == 0 { 50 } else { f.limit.min(500) };
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(
                rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (id, at_ms, actor, action, run_id, config_hash, detail) = row?;
                out.push(AuditEntry {
                    id,
                    at_ms,
                    entry: NewAudit {
                        actor,
                        action,
                        run_id,
                        config_hash,
                        detail: serde_json::from_str(&detail)
                            .map_err(|e| StoreError::Database(e.to_string()))?,
                    },
                });
            }
            Ok(out)
        })
        .await
    }

    async fn queue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<Vec<u64>, StoreError> {
        if deliveries.is_empty() {
            return Ok(vec![]);
        }
        let (host, lease_ms) = (self.identity.name.clone(), self.lease_ms());
        self.writer
            .write(move |c| {
                let now = now_ms() as i64;
                let mut ids = Vec::with_capacity(deliveries.len());
                for d in &deliveries {
                    ensure_run(c, &d.run_id)?;
                    c.execute(
                        "INSERT INTO deliveries (notifier, run_id, stage, event, queued_ms, owner, lease_until_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![d.notifier, d.run_id, d.stage, d.event.to_string(), now, host, now + lease_ms],
                    )?;
                    ids.push(c.last_insert_rowid() as u64);
                }
                Ok(ids)
            })
            .await
    }

    async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY id"
            ))?;
            let rows = stmt.query_map([], row_to_delivery)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn claim_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        let (host, lease_ms) = (self.identity.name.clone(), self.lease_ms());
        self.writer
            .write(move |c| {
                let now = now_ms() as i64;
                // Only what is newly claimed: this host's own deliveries are
                // under way already.
                let mut stmt = c.prepare(&format!(
                    "UPDATE deliveries SET owner = ?1, lease_until_ms = ?2 WHERE owner IS NULL OR (lease_until_ms < ?3 AND owner != ?1) RETURNING {DELIVERY_COLUMNS}"
                ))?;
                let rows = stmt.query_map(params![host, now + lease_ms, now], row_to_delivery)?;
                let mut out: Vec<QueuedDelivery> = rows.collect::<Result<_, _>>()?;
                out.sort_by_key(|d| d.id);
                Ok(out)
            })
            .await
    }

    async fn end_delivery(&self, id: u64, outcome: &DeliveryOutcome) -> Result<bool, StoreError> {
        let outcome = outcome.clone();
        let host = self.identity.name.clone();
        let ended = self
            .writer
            .write(move |c| {
                let row: Option<(String, String, Option<String>)> = c
                    .query_row(
                        "SELECT notifier, run_id, stage FROM deliveries WHERE id = ?1 AND owner = ?2",
                        params![id as i64, host],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                // Ended already (by this host before a crash that lost the
                // answer), or taken over by another host: one entry per
                // delivery.
                let Some((notifier, run_id, stage)) = row else {
                    return Ok(None);
                };
                c.execute("DELETE FROM deliveries WHERE id = ?1", [id as i64])?;
                let entry = notification_entry(&notifier, &outcome);
                insert_event(c, &run_id, "notification", stage.as_deref(), &entry)?;
                Ok(Some(run_id))
            })
            .await?;
        Ok(match ended {
            Some(run_id) => {
                let _ = self.appended.send(run_id);
                true
            }
            None => false,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    fn appended(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.appended.subscribe()
    }

    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<Wake> {
        self.wakeups.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{Database, claimed, new_run};
    use serde_json::json;

    /// A fresh file, in a folder of its own kept as long as the value.
    struct File {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    }

    #[async_trait]
    impl Database for File {
        async fn open(&self, identity: HostIdentity) -> Arc<dyn Store> {
            Arc::new(SqliteStore::open_as(&self.path, identity).unwrap())
        }
    }

    async fn file() -> File {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcage.db");
        File { _dir: dir, path }
    }

    crate::store_conformance!(file());

    #[tokio::test]
    async fn the_files_are_the_owners_and_a_checkpoint_empties_the_wal() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcage.db");
        let wal = dir.path().join("rollcage.db-wal");
        let shm = dir.path().join("rollcage.db-shm");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // A file left world-readable by an earlier version is narrowed.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::open(&path).unwrap();
        let lease = claimed(&store, "api").await;
        store
            .append(&lease, "step", Some("staging"), json!({"n": 1}))
            .await
            .unwrap();
        assert_eq!((mode(&path), mode(&wal), mode(&shm)), (0o600, 0o600, 0o600));
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        store.checkpoint().await.unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        // Nothing was lost: the database has it all.
        assert_eq!(store.events(&lease.run_id, 0).await.unwrap().len(), 1);
        assert!(SqliteStore::in_memory().unwrap().checkpoint().await.is_ok());
    }

    #[tokio::test]
    async fn a_database_in_memory_does_what_a_file_does() {
        let store = SqliteStore::in_memory().unwrap();
        let lease = claimed(&store, "api").await;
        store
            .append(&lease, "step", Some("staging"), json!({"n": 1}))
            .await
            .unwrap();
        assert_eq!(
            store
                .lock_environment(&lease, "staging", true)
                .await
                .unwrap(),
            EnvLock::Held
        );
        store
            .set_status(&lease, RunStatus::Succeeded, None, None)
            .await
            .unwrap();
        let (run, log) = store.run_with_log(&lease.run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(log.len(), 1);
        assert!(store.environment_locks().await.unwrap().is_empty());
        // The connection is usable afterwards (its read transaction ended).
        assert_eq!(store.events(&lease.run_id, 0).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_database_of_the_first_schema_is_brought_up_to_date_with_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcage.db");
        {
            // As the first version left it: its tables, user_version 0.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute(
                "INSERT INTO runs (id, pipeline, spec, status, created_ms, updated_ms) VALUES ('r1', 'api', ?1, 'running', 1, 1)",
                [serde_json::to_string(&new_run("api")).unwrap()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO events (run_id, seq, at_ms, kind, data) VALUES ('r1', 1, 1, 'run-started', '{}')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        // Its unfinished run is free to claim, and its log goes on.
        let lease = store.claim(None, 10).await.unwrap().remove(0);
        assert_eq!(lease.run_id, "r1");
        assert_eq!(
            store.append(&lease, "step", None, json!({})).await.unwrap(),
            2
        );
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    /// The queries about unfinished runs read only those: a store's
    /// history of finished runs grows without bound, and these run on the
    /// writer for every claim, heartbeat and POST.
    #[test]
    fn queries_about_unfinished_runs_do_not_scan_the_history() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        let queries = [
            format!(
                "SELECT id FROM runs WHERE {UNFINISHED} AND (owner IS NULL OR (lease_until_ms < ?1 AND owner != ?2)) ORDER BY id LIMIT ?3"
            ),
            format!(
                "SELECT COUNT(*), COALESCE(SUM(pipeline = ?1), 0) FROM runs WHERE {UNFINISHED}"
            ),
            format!(
                "UPDATE runs SET lease_until_ms = ?2 WHERE owner = ?1 AND {UNFINISHED} RETURNING id, epoch"
            ),
            format!("SELECT id FROM runs WHERE {UNFINISHED} ORDER BY id"),
        ];
        for sql in queries {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|step| step.contains("runs_unfinished")),
                "{sql}: {plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_database_of_a_newer_version_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcage.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("version 99") && err.contains(&format!("({})", MIGRATIONS.len())),
            "{err}"
        );
    }

    #[tokio::test]
    async fn another_process_s_decision_wakes_this_one() {
        // Two handles on one file stand for two processes: the second's
        // write reaches the first only through the file.
        let db = file().await;
        let driver = SqliteStore::open(&db.path).unwrap();
        let lease = claimed(&driver, "api").await;
        let mut woken = driver.wakeups();
        let other = SqliteStore::open(&db.path).unwrap();
        other
            .request_decision(
                &lease.run_id,
                &DecisionRequest {
                    action: crate::DecisionAction::Abort,
                    by: "bob".into(),
                    stage: None,
                },
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, woken.recv()).await {
                Ok(Ok(Wake::Decision(id))) if id == lease.run_id => break,
                Ok(_) => continue,
                Err(_) => panic!("not woken"),
            }
        }
        assert_eq!(driver.take_decisions(&lease).await.unwrap().len(), 1);
    }
}
