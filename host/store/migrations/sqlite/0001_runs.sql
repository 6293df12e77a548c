-- Runs, their logs, the audit trail, decisions and the notification queue.
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
