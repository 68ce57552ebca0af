"""The SQLite store's statements, named. Times are Unix seconds (REAL)."""

from __future__ import annotations

ACTIVE = "('PENDING', 'RUNNING', 'WAITING')"
FINAL = "('SUCCEEDED', 'FAILED', 'CANCELLED')"

RUN_COLUMNS = (
    "id, name, status, input, input_hash, output, error, owner, epoch, recoveries, "
    "created_at, updated_at, finished_at, version, parent_id, queue, priority, partition_key, "
    "dedup_id, wake_at, started_at, deadline_at"
)
STEP_COLUMNS = "run_id, seq, name, status, output, error, attempts, started_at, ended_at, retry_at"
WORKER_COLUMNS = "id, host, boot_id, pid, pid_start, started_at, heartbeat_at, stopped_at"

DATABASE_TIME = "SELECT (julianday('now') - 2440587.5) * 86400.0"

# -- runs -------------------------------------------------------------------------------------

INSERT_RUN = """
INSERT INTO runs (id, name, version, status, input, input_hash, owner, epoch, parent_id,
                  created_at, updated_at, started_at, queue, priority, partition_key, dedup_id,
                  deadline_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
SELECT_DEDUP = f"""
SELECT id FROM runs WHERE queue IS ? AND dedup_id = ? AND status IN {ACTIVE}
"""
# Only while the lease is the run's: its epoch, and RUNNING (not released to WAITING by
# `suspend`, nor made PENDING again by `resume_run`).
COMPLETE_RUN = """
UPDATE runs SET status = ?, output = ?, error = ?, updated_at = ?, finished_at = ?, wake_at = NULL
WHERE id = ? AND epoch = ? AND status = 'RUNNING'
"""
# Runs waiting (evicted) for the end of runs that just ended are woken.
WAKE_WAITERS = """
UPDATE runs SET wake_at = ?, updated_at = ?
WHERE status = 'WAITING' AND id IN (
    SELECT waiter_id FROM waiters WHERE target_id IN (SELECT value FROM json_each(?)))
"""
FORGET_WAITERS = "DELETE FROM waiters WHERE target_id IN (SELECT value FROM json_each(?))"
RUN_TREE = """
WITH RECURSIVE tree(id) AS (
    SELECT id FROM runs WHERE id = ?
    UNION SELECT r.id FROM runs r JOIN tree ON r.parent_id = tree.id)
SELECT id FROM tree
"""
CANCEL_RUNS = f"""
UPDATE runs SET status = 'CANCELLED', error = ?, updated_at = ?, finished_at = ?, wake_at = NULL
WHERE id IN (SELECT value FROM json_each(?)) AND status IN {ACTIVE}
RETURNING id
"""
EXPIRED = f"SELECT id FROM runs WHERE deadline_at < ? AND status IN {ACTIVE}"
RESUME_RUN = """
UPDATE runs SET status = 'PENDING', owner = NULL, output = NULL, error = NULL,
    finished_at = NULL, wake_at = NULL, deadline_at = NULL, recoveries = 0, updated_at = ?
WHERE id = ? AND status IN ('CANCELLED', 'FAILED')
"""
# The entries that recorded a failure: everything not a success after the last success.
DROP_FAILED_TAIL = """
DELETE FROM steps WHERE run_id = ? AND status != 'ok'
  AND seq > coalesce((SELECT max(seq) FROM steps WHERE run_id = ? AND status = 'ok'), -1)
"""
FORK_RUN = """
INSERT INTO runs (id, name, version, status, input, input_hash, epoch, created_at, updated_at)
SELECT ?, name, version, 'PENDING', input, input_hash, 0, ?, ? FROM runs WHERE id = ?
ON CONFLICT (id) DO NOTHING
"""
FORK_STEPS = f"""
INSERT INTO steps ({STEP_COLUMNS})
SELECT ?, seq, name, status, output, error, attempts, started_at, ended_at, retry_at
FROM steps WHERE run_id = ? AND seq < ? AND status IN ('ok', 'error')
"""
RUN_STATUSES = "SELECT id, status FROM runs WHERE id IN (SELECT value FROM json_each(?))"
NEXT_WAKE = "SELECT min(wake_at) FROM runs WHERE status = 'WAITING'"
QUEUE_COUNTS = """
SELECT queue, status, count(*) FROM runs WHERE queue IS NOT NULL
GROUP BY queue, status ORDER BY queue, status
"""

# -- journal ----------------------------------------------------------------------------------

# The journal write: conditioned on the lease (and on the run not having ended), never
# overwriting a final entry. The WHERE on the SELECT is also what lets SQLite parse the upsert
# after INSERT ... SELECT.
RECORD_STEP = """
INSERT INTO steps (run_id, seq, name, status, output, error, attempts, started_at, ended_at,
                   retry_at)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM runs WHERE id = ? AND epoch = ? AND status = 'RUNNING')
ON CONFLICT (run_id, seq) DO UPDATE SET
    name = excluded.name, status = excluded.status, output = excluded.output,
    error = excluded.error, attempts = excluded.attempts, ended_at = excluded.ended_at,
    retry_at = excluded.retry_at
WHERE steps.status IN ('retry', 'wait')
"""
SELECT_STEP = f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND seq = ?"
SELECT_STEPS = f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq"

# -- waiting, messages, events ----------------------------------------------------------------

LEASE_STATE = "SELECT epoch, status FROM runs WHERE id = ?"
PENDING_MESSAGE_ON = """
SELECT 1 FROM messages WHERE run_id = ? AND consumed_at IS NULL
  AND topic IN (SELECT value FROM json_each(?)) LIMIT 1
"""
ANY_ENDED = f"""
SELECT count(*) FROM runs WHERE id IN (SELECT value FROM json_each(?)) AND status IN {FINAL}
"""
COUNT_RUNS = "SELECT count(*) FROM runs WHERE id IN (SELECT value FROM json_each(?))"
DROP_WAITS = "DELETE FROM waiters WHERE waiter_id = ?"
ADD_WAIT = "INSERT OR IGNORE INTO waiters (target_id, waiter_id) VALUES (?, ?)"
SUSPEND = """
UPDATE runs SET status = 'WAITING', owner = NULL, wake_at = ?, updated_at = ?
WHERE id = ? AND epoch = ? AND status = 'RUNNING'
"""
RUN_STATUS = "SELECT status FROM runs WHERE id = ?"
INSERT_MESSAGE = """
INSERT INTO messages (run_id, topic, payload, key, created_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (run_id, key) WHERE key IS NOT NULL DO NOTHING
"""
WAKE_RUN = "UPDATE runs SET wake_at = ?, updated_at = ? WHERE id = ? AND status = 'WAITING'"
OLDEST_MESSAGE = """
SELECT id, payload, key FROM messages WHERE run_id = ? AND topic = ? AND consumed_at IS NULL
ORDER BY id LIMIT 1
"""
CONSUME = "UPDATE messages SET consumed_at = ? WHERE id = ?"
UPSERT_EVENT = """
INSERT INTO events (run_id, key, value, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
"""
SELECT_EVENT = "SELECT value FROM events WHERE run_id = ? AND key = ?"

# -- schedules --------------------------------------------------------------------------------

LAST_TICK = "SELECT last_tick FROM schedules WHERE name = ?"
INSERT_TICK = "INSERT INTO schedules (name, last_tick) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
ADVANCE_TICK = "UPDATE schedules SET last_tick = ? WHERE name = ? AND last_tick = ?"

# -- claims -----------------------------------------------------------------------------------

# The claimer's workflows: a JSON array of [name, version] pairs; a run matches its name and
# exactly its version (NULL for none).
_RUNS_OF_KEYS = """EXISTS (
    SELECT 1 FROM json_each(?) AS k
    WHERE json_extract(k.value, '$[0]') = runs.name
      AND json_extract(k.value, '$[1]') IS runs.version)"""

LIVE_WORKERS = "SELECT id FROM workers WHERE stopped_at IS NULL AND heartbeat_at > ?"
# Due runs outside queue limits: woken waiters, runs of dead owners, PENDING runs of no queue.
CLAIM_DUE = f"""
UPDATE runs
SET owner = ?, epoch = epoch + 1, status = 'RUNNING', updated_at = ?,
    started_at = coalesce(started_at, ?), wake_at = NULL,
    recoveries = recoveries + (status = 'RUNNING')
WHERE id IN (
    SELECT id FROM runs
    WHERE {_RUNS_OF_KEYS}
      AND ((status = 'WAITING' AND wake_at <= ?)
        OR (status = 'RUNNING' AND owner IS NOT ?
            AND (owner IS NULL OR owner NOT IN ({LIVE_WORKERS})))
        OR (status = 'PENDING' AND queue IS NULL))
    ORDER BY created_at
    LIMIT ?)
RETURNING {RUN_COLUMNS}
"""
QUEUE_ACTIVE = "SELECT count(*) FROM runs WHERE queue = ? AND status IN ('RUNNING', 'WAITING')"
QUEUE_MINE = "SELECT count(*) FROM runs WHERE queue = ? AND status = 'RUNNING' AND owner = ?"
QUEUE_STARTED_SINCE = "SELECT count(*) FROM runs WHERE queue = ? AND started_at > ?"
QUEUE_CANDIDATES = f"""
SELECT id FROM runs
WHERE queue = ? AND status = 'PENDING' AND {_RUNS_OF_KEYS}
ORDER BY priority, created_at
LIMIT ?
"""
# With per-partition limits: rank the waiting runs of each partition and take, from each, only
# as many as its running ones leave room for.
QUEUE_PARTITION_CANDIDATES = f"""
SELECT id FROM (
    SELECT id, priority, created_at, partition_key,
           row_number() OVER (PARTITION BY partition_key ORDER BY priority, created_at) AS rank
    FROM runs
    WHERE queue = ? AND status = 'PENDING' AND {_RUNS_OF_KEYS}) AS c
WHERE c.partition_key IS NULL OR c.rank + (
    SELECT count(*) FROM runs a
    WHERE a.queue = ? AND a.partition_key = c.partition_key
      AND a.status IN ('RUNNING', 'WAITING')) <= ?
ORDER BY priority, created_at
LIMIT ?
"""
CLAIM_IDS = f"""
UPDATE runs
SET owner = ?, epoch = epoch + 1, status = 'RUNNING', updated_at = ?,
    started_at = coalesce(started_at, ?)
WHERE id IN (SELECT value FROM json_each(?)) AND status = 'PENDING'
RETURNING {RUN_COLUMNS}
"""

# -- workers ----------------------------------------------------------------------------------

UPSERT_WORKER = f"""
INSERT INTO workers ({WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL
"""
# Workers silent for a day are forgotten; their runs were claimable long before.
PRUNE_WORKERS = "DELETE FROM workers WHERE heartbeat_at < ?"
HEARTBEAT = "UPDATE workers SET heartbeat_at = ? WHERE id = ? AND stopped_at IS NULL"
SELECT_WORKERS = (
    f"SELECT {WORKER_COLUMNS} FROM workers WHERE stopped_at IS NULL ORDER BY started_at"
)
STOP_WORKERS = """
UPDATE workers SET stopped_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND stopped_at IS NULL
"""
SET_RUN_ERROR = "UPDATE runs SET error = ? WHERE id = ?"
SELECT_INPUT = "SELECT input FROM runs WHERE id = ?"
SET_INPUT = "UPDATE runs SET input = ? WHERE id = ?"
SELECT_PAYLOADS = "SELECT seq, output, error FROM steps WHERE run_id = ?"
SET_PAYLOADS = "UPDATE steps SET output = ?, error = ? WHERE run_id = ? AND seq = ?"

# -- services ---------------------------------------------------------------------------------

SERVICE_COLUMNS = "name, state, failures, opened_at, retry_at, probe_id, limits"
ENSURE_SERVICE = """
INSERT INTO services (name, updated_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING
"""
SELECT_SERVICE = f"SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?"
SELECT_SERVICES = f"SELECT {SERVICE_COLUMNS} FROM services ORDER BY name"
SELECT_NAMED_SERVICES = f"""
SELECT {SERVICE_COLUMNS} FROM services WHERE name IN (SELECT value FROM json_each(?))
ORDER BY name
"""
SAVE_SERVICE = """
UPDATE services SET state = ?, failures = ?, opened_at = ?, retry_at = ?, probe_id = ?,
    limits = ?, updated_at = ?
WHERE name = ?
"""
SERVICE_CALL_AT = "SELECT at FROM service_calls WHERE id = ?"
PRUNE_SERVICE_CALLS = "DELETE FROM service_calls WHERE service = ? AND at <= ?"
SERVICE_USAGE = """
SELECT coalesce(sum(requests), 0), coalesce(sum(tokens), 0) FROM service_calls
WHERE service = ? AND at > ?
"""
# When the oldest calls in the window add up to what must leave it; `{column}` is requests or
# tokens (a name from the store's code, never from input).
SERVICE_FREED_AT = """
SELECT at FROM (
    SELECT at, sum({column}) OVER (ORDER BY at, id) AS total
    FROM service_calls WHERE service = ? AND at > ?)
WHERE total >= ? ORDER BY at LIMIT 1
"""
INSERT_SERVICE_CALL = """
INSERT INTO service_calls (id, service, at, requests, tokens) VALUES (?, ?, ?, ?, ?)
"""
END_SERVICE_CALL = """
UPDATE service_calls SET finished_at = ?, at = max(at, ?), outcome = ?,
    tokens = coalesce(?, tokens)
WHERE id = ? AND finished_at IS NULL
"""
