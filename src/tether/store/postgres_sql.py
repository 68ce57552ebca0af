"""The PostgreSQL store's statements, named, and the shapes of their parameters and rows.

`Statements(schema)` holds every statement with `{s}` replaced by the quoted schema (filled in
once per store; the schema is never put on a connection's `search_path`). Times are float Unix
seconds on the wire: `to_timestamp` on the way in, `extract(epoch ...)` on the way out (exact
to the microsecond, timestamptz's precision).

Row locks that wait are taken in one order wherever a transaction holds more than one: run
ids ascending among runs of one kind (targets of a wait, completions of a batch, runs to
wake), children before their parents (a cancelled tree, deepest first), and the waiter's own
row after the rows it waits on. Claims never wait on rows (`SKIP LOCKED`).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Hashable, Sequence
from typing import Any

from tether.errors import CorruptRowError
from tether.store.base import Completion, Lease, NewRun, RunRow, StepRecord

ACTIVE = "('PENDING', 'RUNNING', 'WAITING')"
FINAL = "('SUCCEEDED', 'FAILED', 'CANCELLED')"

RUN_COLUMNS = (
    "id, name, status, input, input_hash, output, error, owner, epoch, recoveries, "
    "extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8, "
    "extract(epoch FROM finished_at)::float8, version, parent_id, queue, priority, "
    "partition_key, dedup_id, extract(epoch FROM wake_at)::float8, "
    "extract(epoch FROM started_at)::float8, extract(epoch FROM deadline_at)::float8"
)
STEP_COLUMNS = (
    "run_id, seq, name, status, output, error, attempts, "
    "extract(epoch FROM started_at)::float8, extract(epoch FROM ended_at)::float8, "
    "extract(epoch FROM retry_at)::float8"
)
WORKER_COLUMNS = (
    "id, host, boot_id, pid, pid_start, extract(epoch FROM started_at)::float8, "
    "extract(epoch FROM heartbeat_at)::float8, extract(epoch FROM stopped_at)::float8"
)

# Advisory lock keys: (a constant for tether, a hash). 'teth' serializes processes migrating
# the same schema; 'tetq' serializes the claimers of one queue (`schema:queue` hashed).
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(1952805992, hashtext(%s))"
LOCK_QUEUES = "SELECT pg_advisory_xact_lock(1952806001, hashtext(k)) FROM unnest(%s::text[]) AS k"
VERSION_TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
DATABASE_TIME = "SELECT extract(epoch FROM clock_timestamp())::float8"

# New runs; `{source}` is one run (scalars) or several (column arrays). No conflict target: a
# run not inserted collides with the run of its id or, failing that, with the unfinished run
# holding its deduplication id (the two unique indexes); the store tells which afterwards.
_INSERT_RUNS = f"""
INSERT INTO {{s}}.runs (id, name, input, input_hash, created_at, owner, version, parent_id,
                        queue, priority, partition_key, dedup_id, deadline_at, status, epoch,
                        started_at, updated_at)
SELECT v.id, v.name, v.input, v.input_hash, to_timestamp(v.created_at), v.owner, v.version,
       v.parent_id, v.queue, v.priority, v.partition_key, v.dedup_id,
       to_timestamp(v.deadline_at), v.status, v.epoch, to_timestamp(v.started_at),
       to_timestamp(v.created_at)
FROM {{source}}
     AS v(id, name, input, input_hash, created_at, owner, version, parent_id, queue, priority,
          partition_key, dedup_id, deadline_at, status, epoch, started_at)
ON CONFLICT DO NOTHING
RETURNING {RUN_COLUMNS}
"""

# The journal write. Fenced: a row is written only while its lease's epoch is the run's (and
# the run is RUNNING), and the run's row is locked FOR SHARE until the commit, so a claim
# (which bumps the epoch) cannot slip in between the check and the commit. A final entry is
# never overwritten; a 'retry' or 'wait' entry is. `{source}` is a batch (column arrays) or one
# entry (scalars, which plan and bind in half the time of one-element arrays on the hot path).
_RECORD = """
INSERT INTO {s}.steps AS t (run_id, seq, name, status, output, error, attempts, started_at,
                            ended_at, retry_at)
SELECT v.run_id, v.seq, v.name, v.status, v.output, v.error, v.attempts,
       to_timestamp(v.started_at), to_timestamp(v.ended_at), to_timestamp(v.retry_at)
FROM {source}
     AS v(run_id, seq, name, status, output, error, attempts, started_at, ended_at, retry_at,
          lease_run, lease_epoch)
WHERE EXISTS (SELECT 1 FROM {s}.runs r WHERE r.id = v.lease_run AND r.epoch = v.lease_epoch
              AND r.status = 'RUNNING' FOR SHARE)
ON CONFLICT (run_id, seq) DO UPDATE SET
    name = excluded.name, status = excluded.status, output = excluded.output,
    error = excluded.error, attempts = excluded.attempts, ended_at = excluded.ended_at,
    retry_at = excluded.retry_at
WHERE t.status IN ('retry', 'wait')
RETURNING t.run_id, t.seq
"""

# The claimer's workflows: runs of one of its names and exactly that name's version (NULL for
# none). `name = ANY` beside it keeps the name filter an index condition where one applies.
_OF_KEYS = """name = ANY(%(names)s::text[]) AND EXISTS (
    SELECT 1 FROM unnest(%(names)s::text[], %(versions)s::text[]) AS k(n, v)
    WHERE k.n = runs.name AND k.v IS NOT DISTINCT FROM runs.version)"""

# A claim: sets the owner, fences the previous one, and counts a first start.
_CLAIM_PICKED = f"""
UPDATE {{s}}.runs SET owner = %(worker)s, epoch = runs.epoch + 1, status = 'RUNNING',
    started_at = coalesce(runs.started_at, to_timestamp(%(now)s::float8)),
    updated_at = to_timestamp(%(now)s::float8)
FROM picked WHERE runs.id = picked.picked_id AND runs.status = 'PENDING'
RETURNING {RUN_COLUMNS}
"""


# A service's columns, and the database's clock (read after the row lock where there is one).
SERVICE_COLUMNS = (
    "name, state, failures, extract(epoch FROM opened_at)::float8, "
    "extract(epoch FROM retry_at)::float8, probe_id, limits"
)
NOW = "extract(epoch FROM clock_timestamp())::float8"
# When the oldest calls in a service's window add up to what must leave it.
_FREED_AT = """
SELECT extract(epoch FROM at)::float8 FROM (
    SELECT at, sum({column}) OVER (ORDER BY at, id) AS total
    FROM {s}.service_calls WHERE service = %s AND at > to_timestamp(%s::float8)) AS w
WHERE total >= %s ORDER BY at LIMIT 1
"""


class Statements:
    """Every statement that names a table, with the schema filled in by the constructor."""

    # -- schema -------------------------------------------------------------------------------

    CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {s}"
    CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS {s}.schema_version (version int NOT NULL)"
    SELECT_VERSION = "SELECT coalesce(max(version), 0) FROM {s}.schema_version"
    INSERT_VERSION = "INSERT INTO {s}.schema_version (version) VALUES (%s)"
    # Migration files name no schema; this makes their CREATEs land in ours, for one transaction.
    SET_MIGRATION_PATH = "SET LOCAL search_path TO {s}"

    # -- runs ---------------------------------------------------------------------------------

    INSERT_RUN = _INSERT_RUNS.replace(
        "{source}",
        "(VALUES (%s::text, %s::text, %s::bytea, %s::text, %s::float8, %s::text, %s::text,\n"
        "         %s::text, %s::text, %s::int4, %s::text, %s::text, %s::float8, %s::text,\n"
        "         %s::int8, %s::float8))",
    )
    INSERT_RUNS = _INSERT_RUNS.replace(
        "{source}",
        "unnest(%s::text[], %s::text[], %s::bytea[], %s::text[], %s::float8[], %s::text[],\n"
        "            %s::text[], %s::text[], %s::text[], %s::int4[], %s::text[], %s::text[],\n"
        "            %s::float8[], %s::text[], %s::int8[], %s::float8[])",
    )
    SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE id = %s"
    SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE id = ANY(%s::text[])"
    SELECT_DEDUP = f"""
    SELECT queue, dedup_id, id FROM {{s}}.runs
    WHERE (queue, dedup_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
      AND status IN {ACTIVE}
    """
    LIST_RUNS = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE true"
    RUN_STATUS = "SELECT status FROM {s}.runs WHERE id = %s"
    RUN_STATUSES = "SELECT id, status FROM {s}.runs WHERE id = ANY(%s::text[])"
    # Only while the lease is the run's: its epoch, and RUNNING (not released to WAITING by
    # `suspend`, nor made PENDING again by `resume_run`).
    COMPLETE_RUN = """
    UPDATE {s}.runs SET status = %(status)s, output = %(output)s, error = %(error)s,
        updated_at = to_timestamp(%(now)s::float8), finished_at = to_timestamp(%(now)s::float8),
        wake_at = NULL
    WHERE id = %(id)s AND epoch = %(epoch)s AND status = 'RUNNING'
    RETURNING id
    """
    # Several completions (distinct runs): their rows are locked in id order first.
    COMPLETE_RUNS = """
    WITH v AS (
        SELECT * FROM unnest(%s::text[], %s::int8[], %s::text[], %s::bytea[], %s::bytea[],
                             %s::float8[]) AS v(id, epoch, status, output, error, at)),
    locked AS MATERIALIZED (
        SELECT r.id FROM {s}.runs r JOIN v ON v.id = r.id AND v.epoch = r.epoch
        WHERE r.status = 'RUNNING' ORDER BY r.id FOR UPDATE OF r)
    UPDATE {s}.runs AS r SET status = v.status, output = v.output, error = v.error,
        updated_at = to_timestamp(v.at), finished_at = to_timestamp(v.at), wake_at = NULL
    FROM v JOIN locked ON locked.id = v.id
    WHERE r.id = v.id AND r.epoch = v.epoch AND r.status = 'RUNNING'
    RETURNING r.id
    """
    # Runs waiting for the end of runs that just ended (of those given, the ones that have
    # ended) are woken, at the time of the last of their targets' ends in the order given, and
    # the waits forgotten. Must run in a statement after the one that ended the targets: its
    # snapshot then holds every wait registered by a suspender that held a target FOR SHARE.
    # The waiters are locked in id order. A target's status is read per wait found (a scalar
    # subquery), so the usual case, no wait, touches only the waiters' index.
    WAKE_WAITERS = f"""
    WITH gone AS (
        DELETE FROM {{s}}.waiters w WHERE w.target_id = ANY(%(ids)s::text[])
          AND (SELECT t.status FROM {{s}}.runs t WHERE t.id = w.target_id) IN {FINAL}
        RETURNING w.target_id, w.waiter_id),
    woken AS (
        SELECT DISTINCT ON (g.waiter_id) g.waiter_id, e.at
        FROM gone g
        JOIN unnest(%(ids)s::text[], %(ats)s::float8[]) WITH ORDINALITY AS e(id, at, i)
          ON e.id = g.target_id
        ORDER BY g.waiter_id, e.i DESC),
    locked AS MATERIALIZED (
        SELECT r.id, w.at FROM {{s}}.runs r JOIN woken w ON w.waiter_id = r.id
        WHERE r.status = 'WAITING' ORDER BY r.id FOR UPDATE OF r)
    UPDATE {{s}}.runs SET wake_at = to_timestamp(locked.at), updated_at = to_timestamp(locked.at)
    FROM locked WHERE runs.id = locked.id AND runs.status = 'WAITING'
    """
    # The same for one target. Scalar parameters let the server keep one generic plan instead
    # of planning again on every call (a lone completion's hot path).
    WAKE_WAITERS_OF = f"""
    WITH gone AS (
        DELETE FROM {{s}}.waiters WHERE target_id = %(id)s
          AND (SELECT status FROM {{s}}.runs WHERE id = %(id)s) IN {FINAL}
        RETURNING waiter_id),
    locked AS MATERIALIZED (
        SELECT id FROM {{s}}.runs WHERE id IN (SELECT waiter_id FROM gone) AND status = 'WAITING'
        ORDER BY id FOR UPDATE)
    UPDATE {{s}}.runs SET wake_at = to_timestamp(%(at)s::float8),
        updated_at = to_timestamp(%(at)s::float8)
    FROM locked WHERE runs.id = locked.id AND runs.status = 'WAITING'
    """
    # Cancels the unfinished runs of the trees under `roots` (a cycle in parent ids cannot
    # make it loop), locking them deepest first.
    CANCEL_TREES = f"""
    WITH RECURSIVE tree(id, path) AS (
        SELECT id, ARRAY[id] FROM {{s}}.runs WHERE id = ANY(%(roots)s::text[])
        UNION ALL
        SELECT r.id, t.path || r.id FROM {{s}}.runs r JOIN tree t ON r.parent_id = t.id
        WHERE r.id <> ALL(t.path)),
    depths AS (SELECT id, max(cardinality(path)) AS depth FROM tree GROUP BY id),
    locked AS MATERIALIZED (
        SELECT r.id FROM {{s}}.runs r JOIN depths d ON d.id = r.id
        WHERE r.status IN {ACTIVE} ORDER BY d.depth DESC, r.id FOR UPDATE OF r)
    UPDATE {{s}}.runs SET status = 'CANCELLED', error = %(reason)s,
        updated_at = to_timestamp(%(now)s::float8), finished_at = to_timestamp(%(now)s::float8),
        wake_at = NULL
    FROM locked WHERE runs.id = locked.id AND runs.status IN {ACTIVE}
    RETURNING runs.id
    """
    EXPIRED = f"""
    SELECT id FROM {{s}}.runs WHERE deadline_at < to_timestamp(%s::float8) AND status IN {ACTIVE}
    """
    RESUME_RUN = """
    UPDATE {s}.runs SET status = 'PENDING', owner = NULL, output = NULL, error = NULL,
        finished_at = NULL, wake_at = NULL, deadline_at = NULL, recoveries = 0,
        updated_at = to_timestamp(%s::float8)
    WHERE id = %s AND status IN ('CANCELLED', 'FAILED')
    """
    # The entries that recorded a failure: everything not a success after the last success.
    DROP_FAILED_TAIL = """
    DELETE FROM {s}.steps WHERE run_id = %(id)s AND status <> 'ok'
      AND seq > coalesce(
          (SELECT max(seq) FROM {s}.steps WHERE run_id = %(id)s AND status = 'ok'), -1)
    """
    FORK_RUN = """
    INSERT INTO {s}.runs (id, name, version, status, input, input_hash, epoch, created_at,
                          updated_at)
    SELECT %(new)s, name, version, 'PENDING', input, input_hash, 0,
           to_timestamp(%(now)s::float8), to_timestamp(%(now)s::float8)
    FROM {s}.runs WHERE id = %(old)s
    ON CONFLICT (id) DO NOTHING
    """
    FORK_STEPS = """
    INSERT INTO {s}.steps (run_id, seq, name, status, output, error, attempts, started_at,
                           ended_at, retry_at)
    SELECT %s, seq, name, status, output, error, attempts, started_at, ended_at, retry_at
    FROM {s}.steps WHERE run_id = %s AND seq < %s AND status IN ('ok', 'error')
    """
    NEXT_WAKE = (
        "SELECT extract(epoch FROM min(wake_at))::float8 FROM {s}.runs WHERE status = 'WAITING'"
    )
    # Byte order, as SQLite sorts text.
    QUEUE_COUNTS = """
    SELECT queue, status, count(*) FROM {s}.runs WHERE queue IS NOT NULL
    GROUP BY queue, status ORDER BY queue COLLATE "C", status COLLATE "C"
    """

    # -- journal ------------------------------------------------------------------------------

    RECORD_STEP = _RECORD.replace(
        "{source}",
        "(VALUES (%s::text, %s::int4, %s::text, %s::text, %s::bytea, %s::bytea, %s::int4,\n"
        "         %s::float8, %s::float8, %s::float8, %s::text, %s::int8))",
    )
    RECORD_STEPS = _RECORD.replace(
        "{source}",
        "unnest(%s::text[], %s::int4[], %s::text[], %s::text[], %s::bytea[], %s::bytea[],\n"
        "            %s::int4[], %s::float8[], %s::float8[], %s::float8[], %s::text[], %s::int8[])",
    )
    SELECT_STEP = f"SELECT {STEP_COLUMNS} FROM {{s}}.steps WHERE run_id = %s AND seq = %s"
    SELECT_STEPS = f"SELECT {STEP_COLUMNS} FROM {{s}}.steps WHERE run_id = %s ORDER BY seq"
    SELECT_STEPS_AT = f"""
    SELECT {STEP_COLUMNS} FROM {{s}}.steps
    WHERE (run_id, seq) IN (SELECT * FROM unnest(%s::text[], %s::int4[]))
    """

    # -- waiting, messages, events ------------------------------------------------------------

    LOCK_RUN = "SELECT epoch, status FROM {s}.runs WHERE id = %s FOR UPDATE"
    LOCK_TARGETS = "SELECT status FROM {s}.runs WHERE id = ANY(%s::text[]) ORDER BY id FOR SHARE"
    PENDING_MESSAGE_ON = """
    SELECT 1 FROM {s}.messages
    WHERE run_id = %s AND consumed_at IS NULL AND topic = ANY(%s::text[]) LIMIT 1
    """
    SUSPEND = """
    WITH dropped AS (DELETE FROM {s}.waiters WHERE waiter_id = %(id)s)
    UPDATE {s}.runs SET status = 'WAITING', owner = NULL, wake_at = to_timestamp(%(wake)s::float8),
        updated_at = to_timestamp(%(now)s::float8)
    WHERE id = %(id)s AND epoch = %(epoch)s AND status = 'RUNNING'
    """
    ADD_WAITS = """
    INSERT INTO {s}.waiters (target_id, waiter_id)
    SELECT DISTINCT t, %s FROM unnest(%s::text[]) AS t
    ON CONFLICT DO NOTHING
    """
    LOCK_STATUS = "SELECT status FROM {s}.runs WHERE id = %s FOR UPDATE"
    INSERT_MESSAGE = """
    INSERT INTO {s}.messages (run_id, topic, payload, key, created_at)
    VALUES (%s, %s, %s, %s, to_timestamp(%s::float8))
    ON CONFLICT (run_id, key) WHERE key IS NOT NULL DO NOTHING
    """
    WAKE_RUN = """
    UPDATE {s}.runs
    SET wake_at = to_timestamp(%(at)s::float8), updated_at = to_timestamp(%(at)s::float8)
    WHERE id = %(id)s AND status = 'WAITING'
    """
    # SKIP LOCKED: concurrent takers never take the same message.
    TAKE_MESSAGE = """
    SELECT id, payload, key FROM {s}.messages
    WHERE run_id = %s AND topic = %s AND consumed_at IS NULL
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
    """
    CONSUME = "UPDATE {s}.messages SET consumed_at = to_timestamp(%s::float8) WHERE id = %s"
    UPSERT_EVENT = """
    INSERT INTO {s}.events (run_id, key, value, updated_at)
    VALUES (%s, %s, %s, to_timestamp(%s::float8))
    ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
    """
    SELECT_EVENT = "SELECT value FROM {s}.events WHERE run_id = %s AND key = %s"
    SET_RUN_ERROR = "UPDATE {s}.runs SET error = %s WHERE id = %s"
    SELECT_INPUT = "SELECT input FROM {s}.runs WHERE id = %s"
    SET_INPUT = "UPDATE {s}.runs SET input = %s WHERE id = %s"
    SELECT_PAYLOADS = "SELECT seq, output, error FROM {s}.steps WHERE run_id = %s"
    SET_PAYLOADS = "UPDATE {s}.steps SET output = %s, error = %s WHERE run_id = %s AND seq = %s"

    # -- schedules ----------------------------------------------------------------------------

    LAST_TICK = "SELECT extract(epoch FROM last_tick)::float8 FROM {s}.schedules WHERE name = %s"
    INSERT_TICK = """
    INSERT INTO {s}.schedules (name, last_tick) VALUES (%s, to_timestamp(%s::float8))
    ON CONFLICT (name) DO NOTHING
    """
    ADVANCE_TICK = """
    UPDATE {s}.schedules SET last_tick = to_timestamp(%s::float8)
    WHERE name = %s AND last_tick = to_timestamp(%s::float8)
    """

    # -- claims -------------------------------------------------------------------------------

    # Due runs outside queue limits, oldest first: woken waiters, runs of dead owners, PENDING
    # runs of no queue. One branch per kind, each on its own index, so a poll reads only
    # candidates (never the finished history, the queued backlog, or the sleepers not due).
    # SKIP LOCKED: concurrent claimers pass over each other's rows, and over runs with a
    # journal write in flight. MATERIALIZED: each pick runs exactly once.
    CLAIM_DUE = f"""
    WITH woken AS MATERIALIZED (
        SELECT id, created_at FROM {{s}}.runs
        WHERE status = 'WAITING' AND wake_at <= to_timestamp(%(now)s::float8)
          AND {_OF_KEYS}
        ORDER BY created_at LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED),
    orphaned AS MATERIALIZED (
        SELECT id, created_at FROM {{s}}.runs
        WHERE status = 'RUNNING' AND {_OF_KEYS} AND owner IS DISTINCT FROM %(worker)s
          AND (owner IS NULL OR owner NOT IN (
              SELECT id FROM {{s}}.workers
              WHERE stopped_at IS NULL
                AND heartbeat_at > statement_timestamp() - %(lease_ttl)s * interval '1 second'))
        ORDER BY created_at LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED),
    unqueued AS MATERIALIZED (
        SELECT id, created_at FROM {{s}}.runs
        WHERE status = 'PENDING' AND queue IS NULL AND {_OF_KEYS}
        ORDER BY created_at LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED),
    picked AS (
        SELECT id AS picked_id FROM (
            SELECT * FROM woken UNION ALL SELECT * FROM orphaned UNION ALL SELECT * FROM unqueued
        ) AS due
        ORDER BY created_at LIMIT %(limit)s)
    UPDATE {{s}}.runs SET owner = %(worker)s, epoch = runs.epoch + 1, status = 'RUNNING',
        recoveries = runs.recoveries + (runs.status = 'RUNNING')::int,
        started_at = coalesce(runs.started_at, to_timestamp(%(now)s::float8)), wake_at = NULL,
        updated_at = to_timestamp(%(now)s::float8)
    FROM picked WHERE runs.id = picked.picked_id
    RETURNING {RUN_COLUMNS}
    """
    # A queue's load: started and unfinished; this worker's; started since the rate window.
    # Read in a statement after the queue's advisory lock, so it sees every earlier claim.
    QUEUE_LOAD = """
    SELECT (SELECT count(*) FROM {s}.runs
            WHERE queue = %(queue)s AND status IN ('RUNNING', 'WAITING')),
           (SELECT count(*) FROM {s}.runs
            WHERE queue = %(queue)s AND status = 'RUNNING' AND owner = %(worker)s),
           (SELECT count(*) FROM {s}.runs
            WHERE queue = %(queue)s AND started_at > to_timestamp(%(since)s::float8))
    """
    CLAIM_QUEUED = f"""
    WITH picked AS MATERIALIZED (
        SELECT id AS picked_id FROM {{s}}.runs
        WHERE queue = %(queue)s AND status = 'PENDING' AND {_OF_KEYS}
        ORDER BY priority, created_at
        LIMIT %(allowed)s
        FOR UPDATE SKIP LOCKED)
    {_CLAIM_PICKED}
    """
    # With per-partition limits: rank the waiting runs of each partition and take, from each,
    # only as many as its started, unfinished ones leave room for.
    CLAIM_QUEUED_PARTITIONED = f"""
    WITH busy AS (
        SELECT partition_key, count(*) AS started FROM {{s}}.runs
        WHERE queue = %(queue)s AND status IN ('RUNNING', 'WAITING')
          AND partition_key IS NOT NULL
        GROUP BY partition_key),
    ranked AS MATERIALIZED (
        SELECT c.id FROM (
            SELECT id, priority, created_at, partition_key,
                   row_number() OVER (PARTITION BY partition_key
                                      ORDER BY priority, created_at) AS rank
            FROM {{s}}.runs
            WHERE queue = %(queue)s AND status = 'PENDING'
              AND {_OF_KEYS}) AS c
        LEFT JOIN busy b ON b.partition_key = c.partition_key
        WHERE c.partition_key IS NULL
           OR c.rank + coalesce(b.started, 0) <= %(per_partition)s
        ORDER BY c.priority, c.created_at
        LIMIT %(allowed)s),
    picked AS MATERIALIZED (
        SELECT id AS picked_id FROM {{s}}.runs
        WHERE id IN (SELECT id FROM ranked) AND status = 'PENDING'
        FOR UPDATE SKIP LOCKED)
    {_CLAIM_PICKED}
    """

    # -- workers ------------------------------------------------------------------------------

    # Heartbeats are the database's time (clock_timestamp(): when the row is written), so
    # every worker's lease is measured on one clock, whatever the workers' clocks say.
    UPSERT_WORKER = """
    INSERT INTO {s}.workers (id, host, boot_id, pid, pid_start, started_at, heartbeat_at,
                             stopped_at)
    VALUES (%s, %s, %s, %s, %s, clock_timestamp(), clock_timestamp(), to_timestamp(%s::float8))
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL
    """
    # Workers silent for a day are forgotten; their runs were claimable long before.
    PRUNE_WORKERS = (
        "DELETE FROM {s}.workers WHERE heartbeat_at < clock_timestamp() - interval '1 day'"
    )
    HEARTBEAT = """
    UPDATE {s}.workers SET heartbeat_at = clock_timestamp()
    WHERE id = %s AND stopped_at IS NULL
    """
    SELECT_WORKERS = (
        f"SELECT {WORKER_COLUMNS} FROM {{s}}.workers WHERE stopped_at IS NULL ORDER BY started_at"
    )
    STOP_WORKERS = """
    UPDATE {s}.workers SET stopped_at = to_timestamp(%s::float8)
    WHERE id = ANY(%s::text[]) AND stopped_at IS NULL
    """

    # -- audit chains -------------------------------------------------------------------------

    # Appends to one chain are serialized by a transaction-scoped advisory lock on the chain id:
    # a chain's first append has no head row yet to lock.
    LOCK_AUDIT_CHAIN = "SELECT pg_advisory_xact_lock(hashtextextended('audit:' || %s, 0))"
    SELECT_AUDIT_HEAD = "SELECT seq, hash FROM {s}.audit_heads WHERE chain_id = %s"
    SELECT_AUDIT_HASH = "SELECT hash FROM {s}.audit WHERE chain_id = %s AND seq = %s"
    INSERT_AUDIT = """
    INSERT INTO {s}.audit (chain_id, seq, kind, body, prev_hash, hash, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, to_timestamp(%s))
    """
    MOVE_AUDIT_HEAD = """
    INSERT INTO {s}.audit_heads (chain_id, seq, hash, updated_at)
    VALUES (%s, %s, %s, to_timestamp(%s))
    ON CONFLICT (chain_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
        updated_at = excluded.updated_at
    """
    SELECT_AUDIT = """
    SELECT chain_id, seq, kind, body, prev_hash, hash, extract(epoch FROM created_at)::float8
    FROM {s}.audit WHERE chain_id = %s ORDER BY seq
    """
    SELECT_AUDIT_HEAD_ROW = """
    SELECT chain_id, seq, hash, extract(epoch FROM updated_at)::float8
    FROM {s}.audit_heads WHERE chain_id = %s
    """
    SELECT_AUDIT_HEADS = """
    SELECT chain_id, seq, hash, extract(epoch FROM updated_at)::float8 FROM {s}.audit_heads
    WHERE starts_with(chain_id, %s) ORDER BY updated_at DESC, chain_id LIMIT %s
    """

    # -- services -----------------------------------------------------------------------------

    # Creates the service's row if missing and locks it either way (the conflict's DO UPDATE
    # waits for, then takes, the row lock); the clock is read in RETURNING, after the lock.
    LOCK_SERVICE = f"""
    INSERT INTO {{s}}.services AS v (name, updated_at) VALUES (%s, clock_timestamp())
    ON CONFLICT (name) DO UPDATE SET name = v.name
    RETURNING {SERVICE_COLUMNS}, {NOW}
    """
    SELECT_SERVICES = f"SELECT {SERVICE_COLUMNS}, {NOW} FROM {{s}}.services ORDER BY name"
    SELECT_NAMED_SERVICES = f"""
    SELECT {SERVICE_COLUMNS}, {NOW} FROM {{s}}.services WHERE name = ANY(%s::text[])
    ORDER BY name
    """
    SAVE_SERVICE = """
    UPDATE {s}.services SET state = %s, failures = %s::float8[],
        opened_at = to_timestamp(%s::float8), retry_at = to_timestamp(%s::float8),
        probe_id = %s, limits = %s, updated_at = to_timestamp(%s::float8)
    WHERE name = %s
    """
    SERVICE_CALL_AT = "SELECT extract(epoch FROM at)::float8 FROM {s}.service_calls WHERE id = %s"
    PRUNE_SERVICE_CALLS = """
    DELETE FROM {s}.service_calls WHERE service = %s AND at <= to_timestamp(%s::float8)
    """
    SERVICE_USAGE = """
    SELECT coalesce(sum(requests), 0)::int8, coalesce(sum(tokens), 0)::int8
    FROM {s}.service_calls WHERE service = %s AND at > to_timestamp(%s::float8)
    """
    SERVICE_FREED_REQUESTS = _FREED_AT.replace("{column}", "requests")
    SERVICE_FREED_TOKENS = _FREED_AT.replace("{column}", "tokens")
    INSERT_SERVICE_CALL = """
    INSERT INTO {s}.service_calls (id, service, at, requests, tokens)
    VALUES (%s, %s, to_timestamp(%s::float8), %s, %s)
    """
    END_SERVICE_CALL = """
    UPDATE {s}.service_calls SET finished_at = to_timestamp(%s::float8),
        at = greatest(at, to_timestamp(%s::float8)), outcome = %s,
        tokens = coalesce(%s::int8, tokens)
    WHERE id = %s AND finished_at IS NULL
    """

    def __init__(self, schema: str) -> None:
        quoted = f'"{schema}"'  # Settings allows identifier characters only: no quotes
        for name, template in vars(Statements).items():
            if name.isupper() and isinstance(template, str):
                setattr(self, name, template.replace("{s}", quoted))


# -- parameters and rows ----------------------------------------------------------------------

# Row dataclasses as parameter tuples, in field order (the statements list columns to match).
_NEW_RUN_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(NewRun)))
_STEP_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(StepRecord)))
WORKER_FIELDS = operator.attrgetter("id", "host", "boot_id", "pid", "pid_start", "stopped_at")
"""`UPSERT_WORKER`'s parameters: the worker's fields in order, less the times the database
stamps itself."""


def new_run_params(run: NewRun) -> tuple[Any, ...]:
    """Parameters for `INSERT_RUN`: the run's fields in order, status, epoch, started_at."""
    status, epoch, started = ("RUNNING", 1, run.created_at) if run.owner else ("PENDING", 0, None)
    return (*_NEW_RUN_FIELDS(run), status, epoch, started)


def new_run_arrays(runs: Sequence[NewRun]) -> list[list[Any]]:
    """Parameters for `INSERT_RUNS`: one array per parameter of `INSERT_RUN`."""
    return [list(column) for column in zip(*map(new_run_params, runs), strict=True)]


def step_params(lease: Lease, record: StepRecord) -> tuple[Any, ...]:
    """Parameters for `RECORD_STEP`: the record's fields in order, then the lease's."""
    return (*_STEP_FIELDS(record), lease.run_id, lease.epoch)


def step_arrays(items: Sequence[tuple[Lease, StepRecord]]) -> list[list[Any]]:
    """Parameters for `RECORD_STEPS`: one array per parameter of `RECORD_STEP`."""
    return [list(column) for column in zip(*(step_params(*item) for item in items), strict=True)]


def completion_params(c: Completion) -> dict[str, Any]:
    """Parameters for `COMPLETE_RUN`."""
    return {
        "status": c.status,
        "output": c.output,
        "error": c.error,
        "now": c.now,
        "id": c.lease.run_id,
        "epoch": c.lease.epoch,
    }


def completion_arrays(items: Sequence[Completion]) -> list[list[Any]]:
    """Parameters for `COMPLETE_RUNS`."""
    return [
        [c.lease.run_id for c in items],
        [c.lease.epoch for c in items],
        [c.status for c in items],
        [c.output for c in items],
        [c.error for c in items],
        [c.now for c in items],
    ]


def rounds(keys: Sequence[Hashable]) -> list[list[int]]:
    """Group indexes so no group repeats a key: the n-th repeat of a key goes in group n.

    One statement cannot upsert (or update) a row twice; each group is one statement.
    """
    groups: list[list[int]] = []
    seen: dict[Hashable, int] = {}
    for i, key in enumerate(keys):
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(groups):
            groups.append([])
        groups[n].append(i)
    return groups


def positions(items: Sequence[tuple[Lease, StepRecord]]) -> list[tuple[str, int]]:
    """The journal positions the items write."""
    return [(rec.run_id, rec.seq) for _, rec in items]


def run_row(row: Sequence[Any] | None) -> RunRow:
    """A `RunRow` from `RUN_COLUMNS`."""
    try:
        return RunRow(*(row or ()))
    except TypeError as exc:
        raise CorruptRowError(f"a run row has an unexpected shape: {exc}") from None
