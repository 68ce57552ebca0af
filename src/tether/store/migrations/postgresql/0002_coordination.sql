-- tether schema 2 (PostgreSQL): waiting, messages, events, queues, deadlines, schedules.

ALTER TABLE runs ADD COLUMN queue text;
ALTER TABLE runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN partition_key text;
ALTER TABLE runs ADD COLUMN dedup_id text;
ALTER TABLE runs ADD COLUMN wake_at timestamptz;      -- WAITING: when a timer wakes it
ALTER TABLE runs ADD COLUMN started_at timestamptz;   -- first claimed or started (rate limits)
ALTER TABLE runs ADD COLUMN deadline_at timestamptz;  -- the run is cancelled if still going then

CREATE INDEX runs_waiting ON runs (wake_at) WHERE status = 'WAITING';
CREATE INDEX runs_by_queue ON runs (queue, status, priority, created_at) WHERE queue IS NOT NULL;
CREATE INDEX runs_by_parent ON runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_deadlines ON runs (deadline_at) WHERE deadline_at IS NOT NULL;
-- A claim's PENDING runs outside queues, and a queue's starts within its rate window: without
-- these a poll reads every queued run, and a rate-limited claim the queue's whole history.
CREATE INDEX runs_pending_unqueued ON runs (created_at) WHERE status = 'PENDING' AND queue IS NULL;
CREATE INDEX runs_queue_starts ON runs (queue, started_at) WHERE queue IS NOT NULL;
-- A deduplication id is taken while a run holding it is unfinished.
CREATE UNIQUE INDEX runs_dedup ON runs (queue, dedup_id)
    WHERE dedup_id IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'WAITING');

CREATE TABLE messages (
    id          bigserial PRIMARY KEY,             -- delivery order per topic
    run_id      text NOT NULL,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    key         text,                              -- the sender's idempotency key
    created_at  timestamptz NOT NULL,
    consumed_at timestamptz
);
CREATE INDEX messages_pending ON messages (run_id, topic, id) WHERE consumed_at IS NULL;
CREATE UNIQUE INDEX messages_by_key ON messages (run_id, key) WHERE key IS NOT NULL;

CREATE TABLE events (
    run_id     text NOT NULL,
    key        text NOT NULL,
    value      bytea NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- A run waiting (evicted) for another run's end is woken when it ends.
CREATE TABLE waiters (
    target_id text NOT NULL,
    waiter_id text NOT NULL,
    PRIMARY KEY (target_id, waiter_id)
);

CREATE TABLE schedules (
    name      text PRIMARY KEY,
    last_tick timestamptz NOT NULL                 -- the newest tick already started
);
