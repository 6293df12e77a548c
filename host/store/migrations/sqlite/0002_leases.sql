-- Leases: the host driving each unfinished run (owner), the claim's epoch
-- (bumped by every claim; writes name it) and until when the lease holds.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
-- The lease each entry was written under: never lower than the entry
-- before it.
ALTER TABLE events ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
-- Environment locks: the run holding each environment, and the runs
-- waiting for it in order. Both go when a run finishes.
CREATE TABLE env_locks (
    environment TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    since_ms    INTEGER NOT NULL
);
CREATE TABLE env_queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    since_ms    INTEGER NOT NULL,
    UNIQUE (environment, run_id)
);
-- A delivery is held by the host that queued or claimed it, as runs are.
ALTER TABLE deliveries ADD COLUMN owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
