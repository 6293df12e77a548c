-- Runs, their logs, leases, environment locks, decisions, the audit trail
-- and the notification queue. Times are milliseconds since the Unix epoch
-- on the database's clock, so that hosts with skewed clocks agree on when
-- a lease runs out. JSON documents are kept as text: they are only ever
-- read whole, and text takes every document serde writes (jsonb refuses
-- a \u0000 in a string).

-- The database's clock, in milliseconds since the Unix epoch.
CREATE FUNCTION rollcage_now_ms() RETURNS BIGINT
    LANGUAGE sql VOLATILE
    AS $$ SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- Tell every listening host, at commit: `a:<run>` (appended), `d:<run>`
-- (a decision asked for), `r` (a run may be claimed or an environment
-- locked). True, so that it can sit in a RETURNING or SELECT list.
CREATE FUNCTION rollcage_wake(payload TEXT) RETURNS BOOLEAN
    LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN PERFORM pg_notify('rollcage', payload); RETURN true; END $$;

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    pipeline        TEXT NOT NULL,
    spec            TEXT NOT NULL,
    -- The spec's stages, for the environment filter of the run list.
    stages          TEXT[] NOT NULL,
    status          TEXT NOT NULL,
    stage           TEXT,
    reason          TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    -- The lease: the host driving the run, the claim's epoch (bumped by
    -- every claim; fenced writes name it) and until when it holds.
    owner           TEXT,
    epoch           BIGINT NOT NULL DEFAULT 0,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0,
    -- The last sequence number of the run's log: bumping it takes the
    -- row's lock, so numbers are handed out one at a time and without gaps.
    last_seq        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_unfinished ON runs (id)
    WHERE status NOT IN ('succeeded', 'rolled_back', 'failed');
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_by_pipeline ON runs (pipeline, id);

CREATE TABLE events (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     BIGINT NOT NULL,
    at_ms   BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    stage   TEXT,
    data    TEXT NOT NULL,
    -- The lease it was written under: never lower than the entry before.
    epoch   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    run_id      TEXT,
    config_hash TEXT NOT NULL,
    detail      TEXT NOT NULL
);

CREATE TABLE decisions (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (id),
    data    TEXT NOT NULL
);
CREATE INDEX decisions_by_run ON decisions (run_id);

-- The notification queue: a row per delivery not yet ended, held by the
-- host that queued or claimed it, as runs are. Identity ids only grow, so
-- they order the queue.
CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notifier        TEXT NOT NULL,
    run_id          TEXT NOT NULL REFERENCES runs (id),
    stage           TEXT,
    event           TEXT NOT NULL,
    queued_ms       BIGINT NOT NULL,
    owner           TEXT,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0
);

-- Environment locks: the run holding each environment, and the runs
-- waiting for it in order. Both go when a run finishes.
CREATE TABLE env_locks (
    environment TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    since_ms    BIGINT NOT NULL
);
CREATE INDEX env_locks_by_run ON env_locks (run_id);
CREATE TABLE env_queue (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment TEXT NOT NULL,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    since_ms    BIGINT NOT NULL,
    UNIQUE (environment, run_id)
);
CREATE INDEX env_queue_by_run ON env_queue (run_id);
