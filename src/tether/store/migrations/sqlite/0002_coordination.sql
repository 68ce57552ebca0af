-- tether schema 2 (SQLite): waiting, messages, events, queues, deadlines, schedules.

ALTER TABLE runs ADD COLUMN queue TEXT;
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN partition_key TEXT;
ALTER TABLE runs ADD COLUMN dedup_id TEXT;
ALTER TABLE runs ADD COLUMN wake_at REAL;        -- WAITING: when a timer wakes it (NULL: none)
ALTER TABLE runs ADD COLUMN started_at REAL;     -- first claimed or started (rate limits)
ALTER TABLE runs ADD COLUMN deadline_at REAL;    -- the run is cancelled if still going then

CREATE INDEX runs_waiting ON runs (wake_at) WHERE status = 'WAITING';
CREATE INDEX runs_by_queue ON runs (queue, status, priority, created_at) WHERE queue IS NOT NULL;
CREATE INDEX runs_by_parent ON runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_deadlines ON runs (deadline_at) WHERE deadline_at IS NOT NULL;
-- A deduplication id is taken while a run holding it is unfinished.
CREATE UNIQUE INDEX runs_dedup ON runs (queue, dedup_id)
    WHERE dedup_id IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'WAITING');

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,   -- delivery order per topic
    run_id      TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    key         TEXT,                                -- the sender's idempotency key
    created_at  REAL NOT NULL,
    consumed_at REAL
);
CREATE INDEX messages_pending ON messages (run_id, topic, id) WHERE consumed_at IS NULL;
CREATE UNIQUE INDEX messages_by_key ON messages (run_id, key) WHERE key IS NOT NULL;

CREATE TABLE events (
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

-- A run waiting (evicted) for another run's end is woken when it ends.
CREATE TABLE waiters (
    target_id TEXT NOT NULL,
    waiter_id TEXT NOT NULL,
    PRIMARY KEY (target_id, waiter_id)
) WITHOUT ROWID;

CREATE TABLE schedules (
    name      TEXT PRIMARY KEY,
    last_tick REAL NOT NULL                          -- the newest tick already started
);
