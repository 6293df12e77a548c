//! Group commit: one thread owns the connection that writes, and commits
//! every write waiting for it in one transaction, so that many runs
//! appending at once share one `fsync` instead of queueing for one each.
//!
//! A caller's write still returns only once it is durable: its answer is
//! held back until the transaction it was part of has committed, and a
//! failed commit fails every write in it. Each write runs inside its own
//! savepoint, so one that fails (an append for an unknown run, say) is
//! undone alone and the rest of the batch commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;

use crate::StoreError;

/// Writes taken into one transaction at most; bounds the latency a write
/// adds to the others in its batch.
const MAX_BATCH: usize = 512;

/// What a job leaves to do once its transaction has committed (or not).
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs against the connection (or, given none, does not run at
/// all), says whether it succeeded (to keep or undo its savepoint) and how
/// to answer its caller.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Done) + Send>;

/// The handle to the writing thread; the thread ends when the last clone
/// is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Start the thread that owns `conn`.
    pub(crate) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        thread::Builder::new()
            .name("rollcage-store-writer".into())
            .spawn(move || run(conn, queue, &counted))
            .map_err(|e| StoreError::Database(format!("store writer thread: {e}")))?;
        Ok(Writer { jobs, commits })
    }

    /// Transactions committed so far (each holding one write or more).
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Run `f` in the next transaction; its result once that has committed.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (job, answered) = job(f);
        let stopped = || StoreError::Database("store writer has stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// `f` as a job, and where its answer will arrive.
fn job<T: Send + 'static>(
    f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
) -> (Job, tokio::sync::oneshot::Receiver<Result<T, StoreError>>) {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |conn| {
        let result = match conn {
            Some(conn) => f(conn),
            // Answered with the reason it was not run.
            None => Err(StoreError::Database("not run".into())),
        };
        let ok = result.is_ok();
        let done: Done = Box::new(move |committed| {
            // The caller may have gone (a cancelled request): nothing to do.
            let _ = answer.send(committed.and(result));
        });
        (ok, done)
    });
    (job, answered)
}

fn run(conn: Connection, queue: mpsc::Receiver<Job>, commits: &AtomicU64) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commits.fetch_add(commit_batch(&conn, batch), Ordering::Relaxed);
    }
}

/// Run and commit `batch`; how many transactions committed.
fn commit_batch(conn: &Connection, batch: Vec<Job>) -> u64 {
    // IMMEDIATE takes the write lock up front, so another process's writer
    // makes us wait (busy timeout) instead of failing halfway. If it cannot
    // be had, each savepoint below becomes a transaction of its own.
    let outer = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    let mut done = Vec::with_capacity(batch.len());
    let mut alone = 0;
    for job in batch {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            let (_, d) = job(None);
            d(Err(e.into()));
            continue;
        }
        let (ok, d) = job(Some(conn));
        let closed = if ok {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        match (outer, closed) {
            // Inside the batch: answered after the commit below.
            (true, Ok(())) => done.push(d),
            // Its own transaction, already committed or undone.
            (false, Ok(())) => {
                alone += u64::from(ok);
                d(Ok(()))
            }
            (_, Err(e)) => d(Err(e.into())),
        }
    }
    if !outer {
        return alone;
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    });
    let count = u64::from(committed.is_ok());
    for d in done {
        d(committed
            .clone()
            .map_err(|e| StoreError::Database(format!("commit: {e}"))));
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER NOT NULL)")
            .unwrap();
        conn
    }

    fn insert(n: i32, fail: bool) -> impl FnOnce(&Connection) -> Result<i32, StoreError> {
        move |c| {
            c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            if fail {
                // Its insert above must not survive.
                return Err(StoreError::Database(format!("write {n} refused")));
            }
            Ok(n)
        }
    }

    fn rows(conn: &Connection) -> Vec<i32> {
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_failing_write_in_a_batch_is_undone_alone_and_answers_wait_for_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = table(&dir.path().join("w.db"));
        let (a, mut a_answer) = job(insert(1, false));
        let (b, mut b_answer) = job(insert(2, true));
        let (c, mut c_answer) = job(insert(3, false));
        assert_eq!(commit_batch(&conn, vec![a, b, c]), 1);
        assert_eq!(a_answer.try_recv().unwrap().unwrap(), 1);
        let refused = b_answer.try_recv().unwrap().unwrap_err().to_string();
        assert!(refused.contains("write 2 refused"), "{refused}");
        assert_eq!(c_answer.try_recv().unwrap().unwrap(), 3);
        assert_eq!(rows(&conn), [1, 3]);
    }

    #[test]
    fn a_failed_commit_fails_every_write_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let conn = table(&dir.path().join("w.db"));
        // A deferred foreign key fails at COMMIT, after both jobs succeeded.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        let (a, mut a_answer) = job(insert(1, false));
        let (b, mut b_answer) = job(|c: &Connection| {
            c.execute("INSERT INTO child (p) VALUES (42)", [])?;
            Ok(())
        });
        assert_eq!(commit_batch(&conn, vec![a, b]), 0);
        let a_err = a_answer.try_recv().unwrap().unwrap_err().to_string();
        assert!(a_err.contains("commit"), "{a_err}");
        assert!(b_answer.try_recv().unwrap().is_err());
        assert!(rows(&conn).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_answered_once_durable_and_visible_to_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = Writer::start(table(&path)).unwrap();
        let writes = (0..200).map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(insert(n, n % 10 == 0)).await })
        });
        let mut refused = 0;
        for (n, w) in writes.enumerate() {
            match w.await.unwrap() {
                Ok(got) => assert_eq!(got, n as i32),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(refused, 20);
        let commits = writer.commits();
        assert!((1..=200).contains(&commits), "{commits} commits");
        // Everything answered was committed before it was answered.
        let other = Connection::open(&path).unwrap();
        let seen = rows(&other);
        assert_eq!(seen.len(), 180);
        assert!(seen.iter().all(|n| n % 10 != 0));
    }
}
