-- The unfinished runs, in id order, with their pipeline: what a claim, a
-- heartbeat, the admission count of every POST /v1/runs and the list of
-- unfinished runs look for. Without it each of those scanned every run
-- ever kept, on the one writer connection, and grew slower with the
-- history. The condition is the store's UNFINISHED, word for word: SQLite
-- uses a partial index only for a query that states its condition.
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (id, pipeline)
    WHERE status NOT IN ('succeeded', 'rolled_back', 'failed');
