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
    AuditEntry, AuditFilter, DecisionRequest, DeliveryOutcome, Event, NewAudit, NewDelivery,
    NewRun, QueuedDelivery, Run, RunFilter, RunStatus, Store, StoreError, notification_entry,
    now_ms,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    pipeline    TEXT NOT NULL,
    spec        TEXT NOT NULL,
    status      TEXT NOT NULL,
    stage       TEXT,
    reason      TEXT,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS events (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    stage   TEXT,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    run_id      TEXT,
    config_hash TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id),
    data    TEXT NOT NULL
);
-- The notification queue: a row per delivery not yet ended. AUTOINCREMENT
-- keeps ids increasing even once the newest row is deleted, so they order
-- the queue.
CREATE TABLE IF NOT EXISTS deliveries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    notifier   TEXT NOT NULL,
    run_id     TEXT NOT NULL REFERENCES runs (id),
    stage      TEXT,
    event      TEXT NOT NULL,
    queued_ms  INTEGER NOT NULL
);
";

/// Runs and events in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    /// Empty for a database in memory, which only the writer's connection
    /// sees: reads then queue with the writes.
    readers: Arc<Vec<Mutex<Connection>>>,
    appended: tokio::sync::broadcast::Sender<String>,
    /// The file, unless in memory.
    path: Option<Arc<std::path::PathBuf>>,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`. The file, its
    /// WAL and shared-memory files are for their owner only (0600): SQLite
    /// gives the last two the database file's mode, which is set here
    /// whatever the umask, and narrowed on a file found wider.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
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
        let mut store = Self::start(writer, readers)?;
        store.path = Some(Arc::new(path.to_path_buf()));
        Ok(store)
    }

    /// A database in memory, for tests and dry runs.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::start(Self::prepare(Connection::open_in_memory()?)?, vec![])
    }

    fn prepare(conn: Connection) -> Result<Connection, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Each append is durable before the action it announces runs; group
        // commit shares the cost of that among the runs writing at once.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    fn start(writer: Connection, readers: Vec<Connection>) -> Result<SqliteStore, StoreError> {
        Ok(SqliteStore {
            writer: Writer::start(writer)?,
            readers: Arc::new(readers.into_iter().map(Mutex::new).collect()),
            // Readers that fall behind refetch from the database; the
            // channel only wakes them.
            appended: tokio::sync::broadcast::channel(1024).0,
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

fn new_id() -> String {
    // Time-ordered and unique enough for one host: milliseconds, then a
    // random suffix from the OS.
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    format!(
        "r{:012x}{}",
        now_ms(),
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
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
        "SELECT seq, at_ms, kind, stage, data FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![run_id, after_seq as i64], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at_ms, kind, stage, data) = row?;
        out.push(Event {
            seq,
            at_ms,
            kind,
            stage,
            data: serde_json::from_str(&data).map_err(|e| StoreError::Database(e.to_string()))?,
        });
    }
    Ok(out)
}

/// Append an entry to a run's log; its sequence number.
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
        "INSERT INTO events (run_id, seq, at_ms, kind, stage, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![run_id, seq as i64, now_ms() as i64, kind, stage, data.to_string()],
    )?;
    Ok(seq)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<String, StoreError> {
        self.writer.write(move |c| {
            let id = new_id();
            let spec = serde_json::to_string(&run).map_err(|e| StoreError::Database(e.to_string()))?;
            let now = now_ms();
            c.execute(
                "INSERT INTO runs (id, pipeline, spec, status, created_ms, updated_ms) VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
                params![id, run.pipeline, spec, now as i64],
            )?;
            Ok(id)
        })
        .await
    }

    async fn append(
        &self,
        run_id: &str,
        kind: &str,
        stage: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, StoreError> {
        let (run_id, kind, stage) = (
            run_id.to_string(),
            kind.to_string(),
            stage.map(str::to_string),
        );
        let notice = run_id.clone();
        let seq = self
            .writer
            .write(move |c| {
                // Inside the writer's savepoint: atomic with the other writes.
                ensure_run(c, &run_id)?;
                insert_event(c, &run_id, &kind, stage.as_deref(), &data)
            })
            .await?;
        // No receiver is not an error: nobody is watching.
        let _ = self.appended.send(notice);
        Ok(seq)
    }

    async fn events(&self, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| read_events(c, &run_id, after_seq)).await
    }

    async fn set_status(
        &self,
        run_id: &str,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let (run_id, stage, reason) = (
            run_id.to_string(),
            stage.map(str::to_string),
            reason.map(str::to_string),
        );
        self.writer.write(move |c| {
            let n = c.execute(
                "UPDATE runs SET status = ?2, stage = COALESCE(?3, stage), reason = COALESCE(?4, reason), updated_ms = ?5 WHERE id = ?1",
                params![run_id, status.as_str(), stage, reason, now_ms() as i64],
            )?;
            if n == 0 { Err(StoreError::NoSuchRun(run_id)) } else { Ok(()) }
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
                "SELECT {RUN_COLUMNS} FROM runs WHERE status NOT IN ('succeeded', 'rolled_back', 'failed') ORDER BY id"
            ))?;
            let rows = stmt.query_map([], row_to_run)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn request_decision(
        &self,
        run_id: &str,
        decision: &DecisionRequest,
    ) -> Result<(), StoreError> {
        let run_id = run_id.to_string();
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
            .await
    }

    async fn take_decisions(&self, run_id: &str) -> Result<Vec<DecisionRequest>, StoreError> {
        // Every unfinished run asks several times a second and nearly always
        // finds nothing: look first, and write only to take what is there.
        let id = run_id.to_string();
        let waiting: i64 = self
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM decisions WHERE run_id = ?1",
                    [&id],
                    |r| r.get(0),
                )?)
            })
            .await?;
        if waiting == 0 {
            return Ok(vec![]);
        }
        let run_id = run_id.to_string();
        self.writer
            .write(move |c| {
                let rows: Vec<String> = {
                    let mut stmt =
                        c.prepare("SELECT data FROM decisions WHERE run_id = ?1 ORDER BY id")?;
                    stmt.query_map([&run_id], |r| r.get(0))?
                        .collect::<Result<_, _>>()?
                };
                c.execute("DELETE FROM decisions WHERE run_id = ?1", [&run_id])?;
                rows.iter()
                    .map(|d| {
                        serde_json::from_str(d).map_err(|e| StoreError::Database(e.to_string()))
                    })
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
        self.writer
            .write(move |c| {
                let now = now_ms() as i64;
                let mut ids = Vec::with_capacity(deliveries.len());
                for d in &deliveries {
                    ensure_run(c, &d.run_id)?;
                    c.execute(
                        "INSERT INTO deliveries (notifier, run_id, stage, event, queued_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![d.notifier, d.run_id, d.stage, d.event.to_string(), now],
                    )?;
                    ids.push(c.last_insert_rowid() as u64);
                }
                Ok(ids)
            })
            .await
    }

    async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, queued_ms, notifier, run_id, stage, event FROM deliveries ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, queued_ms, notifier, run_id, stage, event) = row?;
                out.push(QueuedDelivery {
                    id,
                    queued_ms,
                    delivery: NewDelivery {
                        notifier,
                        run_id,
                        stage,
                        event: serde_json::from_str(&event)
                            .map_err(|e| StoreError::Database(e.to_string()))?,
                    },
                });
            }
            Ok(out)
        })
        .await
    }

    async fn end_delivery(&self, id: u64, outcome: &DeliveryOutcome) -> Result<bool, StoreError> {
        let outcome = outcome.clone();
        let ended = self
            .writer
            .write(move |c| {
                let row: Option<(String, String, Option<String>)> = c
                    .query_row(
                        "SELECT notifier, run_id, stage FROM deliveries WHERE id = ?1",
                        [id as i64],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                // Ended already (by this host before a crash that lost the
                // answer, or by another process): one entry per delivery.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new_run(pipeline: &str) -> NewRun {
        NewRun {
            pipeline: pipeline.into(),
            release: "1.4.0".into(),
            notes: None,
            params: vec![("issue_key".into(), "OPS-12".into())],
            stages: vec!["staging".into(), "production".into()],
            started_by: "alice".into(),
            config_hash: "abc123".into(),
        }
    }

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
        let id = store.create_run(new_run("api")).await.unwrap();
        store
            .append(&id, "step", Some("staging"), json!({"n": 1}))
            .await
            .unwrap();
        assert_eq!((mode(&path), mode(&wal), mode(&shm)), (0o600, 0o600, 0o600));
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        store.checkpoint().await.unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        // Nothing was lost: the database has it all.
        assert_eq!(store.events(&id, 0).await.unwrap().len(), 1);
        assert!(SqliteStore::in_memory().unwrap().checkpoint().await.is_ok());
    }

    #[tokio::test]
    async fn a_run_and_its_log_are_read_together_on_file_and_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        for store in [
            SqliteStore::open(&dir.path().join("rollcage.db")).unwrap(),
            SqliteStore::in_memory().unwrap(),
        ] {
            let id = store.create_run(new_run("api")).await.unwrap();
            store
                .append(&id, "step", Some("staging"), json!({"n": 1}))
                .await
                .unwrap();
            store
                .set_status(&id, RunStatus::Succeeded, None, None)
                .await
                .unwrap();
            let (run, log) = store.run_with_log(&id).await.unwrap();
            assert_eq!(run.status, RunStatus::Succeeded);
            assert_eq!(log.len(), 1);
            assert_eq!(log[0].data, json!({"n": 1}));
            assert!(matches!(
                store.run_with_log("nope").await,
                Err(StoreError::NoSuchRun(_))
            ));
            // The connection is usable afterwards (its read transaction ended).
            assert_eq!(store.events(&id, 0).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn runs_and_their_logs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcage.db");
        let id = {
            let store = SqliteStore::open(&path).unwrap();
            let id = store.create_run(new_run("api")).await.unwrap();
            assert_eq!(
                store
                    .append(&id, "intent", Some("staging"), json!({"action": "apply"}))
                    .await
                    .unwrap(),
                1
            );
            assert_eq!(
                store
                    .append(&id, "step", Some("staging"), json!({"outcome": "ok"}))
                    .await
                    .unwrap(),
                2
            );
            store
                .set_status(&id, RunStatus::Running, Some("staging"), None)
                .await
                .unwrap();
            id
        };
        // A new process opens the same file.
        let store = SqliteStore::open(&path).unwrap();
        let run = store.run(&id).await.unwrap();
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.stage.as_deref(), Some("staging"));
        assert_eq!(run.run, new_run("api"));
        let events = store.events(&id, 0).await.unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(events[1].data, json!({"outcome": "ok"}));
        assert_eq!(store.events(&id, 1).await.unwrap().len(), 1);
        assert_eq!(store.unfinished_runs().await.unwrap().len(), 1);
        store
            .set_status(&id, RunStatus::RolledBack, None, Some("error ratio 0.31"))
            .await
            .unwrap();
        assert!(store.unfinished_runs().await.unwrap().is_empty());
        let run = store.run(&id).await.unwrap();
        assert_eq!(
            (run.stage.as_deref(), run.reason.as_deref()),
            (Some("staging"), Some("error ratio 0.31"))
        );
    }

    #[tokio::test]
    async fn unknown_runs_are_errors_and_nothing_is_written() {
        let store = SqliteStore::in_memory().unwrap();
        let err = store
            .append("nope", "step", None, json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no run `nope`");
        assert!(matches!(
            store.run("nope").await,
            Err(StoreError::NoSuchRun(_))
        ));
        assert!(
            store
                .set_status("nope", RunStatus::Failed, None, None)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn runs_are_listed_newest_first_with_filters_and_a_cursor() {
        let store = SqliteStore::in_memory().unwrap();
        let mut ids = Vec::new();
        for p in ["api", "web", "api", "api"] {
            ids.push(store.create_run(new_run(p)).await.unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        store
            .set_status(&ids[3], RunStatus::Succeeded, None, None)
            .await
            .unwrap();
        let api = store
            .list_runs(&RunFilter {
                pipeline: Some("api".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            api.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            [ids[3].clone(), ids[2].clone(), ids[0].clone()]
        );
        let page = store
            .list_runs(&RunFilter {
                pipeline: Some("api".into()),
                limit: 1,
                before: Some(ids[3].clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page[0].id, ids[2]);
        let done = store
            .list_runs(&RunFilter {
                status: Some(RunStatus::Succeeded),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(done.len(), 1);
    }

    #[tokio::test]
    async fn runs_are_filtered_by_environment() {
        let store = SqliteStore::in_memory().unwrap();
        let both = store.create_run(new_run("api")).await.unwrap();
        let mut staging_only = new_run("api");
        staging_only.stages = vec!["staging".into()];
        let staging = store.create_run(staging_only).await.unwrap();
        let list = |env: &str| {
            let f = RunFilter {
                environment: Some(env.into()),
                ..Default::default()
            };
            let store = store.clone();
            async move {
                let mut ids: Vec<String> = store
                    .list_runs(&f)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                ids.sort();
                ids
            }
        };
        let mut all = vec![both.clone(), staging];
        all.sort();
        assert_eq!(list("staging").await, all);
        assert_eq!(list("production").await, [both]);
        assert!(list("prod").await.is_empty());
    }

    #[tokio::test]
    async fn the_audit_trail_is_kept_newest_first_with_filters() {
        let store = SqliteStore::in_memory().unwrap();
        let run = store.create_run(new_run("api")).await.unwrap();
        for (actor, action) in [("alice", "start"), ("bob", "approve"), ("alice", "abort")] {
            store
                .record_audit(NewAudit {
                    actor: actor.into(),
                    action: action.into(),
                    run_id: Some(run.clone()),
                    config_hash: "abc123".into(),
                    detail: json!({"stage": "production"}),
                })
                .await
                .unwrap();
        }
        let all = store.audit(&AuditFilter::default()).await.unwrap();
        let actions: Vec<&str> = all.iter().map(|a| a.entry.action.as_str()).collect();
        assert_eq!(actions, ["abort", "approve", "start"]);
        assert_eq!(all[0].entry.detail, json!({"stage": "production"}));
        let alice = store
            .audit(&AuditFilter {
                actor: Some("alice".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(alice.len(), 2);
        let older = store
            .audit(&AuditFilter {
                before: Some(all[0].id),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(older[0].entry.action, "approve");
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn appends_wake_watchers_with_the_run_id() {
        let store = SqliteStore::in_memory().unwrap();
        let mut rx = store.appended();
        let id = store.create_run(new_run("api")).await.unwrap();
        store.append(&id, "step", None, json!({})).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), id);
        // A failed append wakes nobody.
        assert!(store.append("nope", "step", None, json!({})).await.is_err());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn decisions_are_queued_and_taken_once() {
        let store = SqliteStore::in_memory().unwrap();
        let id = store.create_run(new_run("api")).await.unwrap();
        let approve = DecisionRequest {
            action: crate::DecisionAction::Approve,
            by: "bob".into(),
            stage: Some("production".into()),
        };
        let abort = DecisionRequest {
            action: crate::DecisionAction::Abort,
            by: "carol".into(),
            stage: None,
        };
        store.request_decision(&id, &approve).await.unwrap();
        store.request_decision(&id, &abort).await.unwrap();
        assert_eq!(
            store.take_decisions(&id).await.unwrap(),
            vec![approve.clone(), abort]
        );
        assert!(store.take_decisions(&id).await.unwrap().is_empty());
        assert!(matches!(
            store.request_decision("nope", &approve).await,
            Err(StoreError::NoSuchRun(_))
        ));
    }

    fn delivery(notifier: &str, run_id: &str, n: u32) -> NewDelivery {
        NewDelivery {
            notifier: notifier.into(),
            run_id: run_id.into(),
            stage: Some("staging".into()),
            event: json!({"n": n}),
        }
    }

    #[tokio::test]
    async fn queued_deliveries_survive_a_reopen_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcage.db");
        let (id, queued) = {
            let store = SqliteStore::open(&path).unwrap();
            let id = store.create_run(new_run("api")).await.unwrap();
            let queued = store
                .queue_deliveries(vec![delivery("slack", &id, 1), delivery("jira", &id, 1)])
                .await
                .unwrap();
            let more = store
                .queue_deliveries(vec![delivery("slack", &id, 2)])
                .await
                .unwrap();
            assert!(queued[0] < queued[1] && queued[1] < more[0]);
            (id, [queued, more].concat())
        };
        let store = SqliteStore::open(&path).unwrap();
        let pending = store.queued_deliveries().await.unwrap();
        assert_eq!(pending.iter().map(|d| d.id).collect::<Vec<_>>(), queued);
        assert_eq!(pending[0].delivery, delivery("slack", &id, 1));
        assert_eq!(pending[2].delivery.event, json!({"n": 2}));
        assert!(pending[0].queued_ms > 0);
    }

    #[tokio::test]
    async fn ending_a_delivery_logs_it_once_even_after_the_run_finished() {
        let store = SqliteStore::in_memory().unwrap();
        let id = store.create_run(new_run("api")).await.unwrap();
        let queued = store
            .queue_deliveries(vec![delivery("slack", &id, 1), delivery("jira", &id, 1)])
            .await
            .unwrap();
        store
            .set_status(&id, RunStatus::Succeeded, None, None)
            .await
            .unwrap();
        let mut rx = store.appended();
        let given_up = DeliveryOutcome {
            attempts: 5,
            error: Some("plugin `slack` timed out".into()),
        };
        assert!(store.end_delivery(queued[0], &given_up).await.unwrap());
        assert_eq!(rx.recv().await.unwrap(), id);
        // A second end of the same delivery writes nothing.
        assert!(!store.end_delivery(queued[0], &given_up).await.unwrap());
        let (run, log) = store.run_with_log(&id).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].kind, "notification");
        assert_eq!(log[0].stage.as_deref(), Some("staging"));
        assert_eq!(
            log[0].data,
            json!({"notifier": "slack", "attempts": 5, "error": "plugin `slack` timed out"})
        );
        let left = store.queued_deliveries().await.unwrap();
        assert_eq!(left.iter().map(|d| d.id).collect::<Vec<_>>(), [queued[1]]);
    }

    #[tokio::test]
    async fn deliveries_for_an_unknown_run_are_not_queued() {
        let store = SqliteStore::in_memory().unwrap();
        let id = store.create_run(new_run("api")).await.unwrap();
        let err = store
            .queue_deliveries(vec![
                delivery("slack", &id, 1),
                delivery("slack", "nope", 1),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NoSuchRun(_)), "{err}");
        // The whole batch was undone, the known run's delivery included.
        assert!(store.queued_deliveries().await.unwrap().is_empty());
        assert!(store.queue_deliveries(vec![]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_appends_get_distinct_sequence_numbers() {
        let store = SqliteStore::in_memory().unwrap();
        let id = store.create_run(new_run("api")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (s, id) = (store.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                s.append(&id, "step", None, json!({"i": i})).await.unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
    }
}
