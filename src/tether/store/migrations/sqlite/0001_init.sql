-- tether schema 1 (SQLite). Times are Unix seconds (REAL); payloads are encoded bytes.

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    version     TEXT,
    status      TEXT NOT NULL,
    input       BLOB NOT NULL,
    input_hash  TEXT NOT NULL,
    output      BLOB,
    error       BLOB,
    owner       TEXT,               -- the worker executing the run; NULL while PENDING
    epoch       INTEGER NOT NULL,   -- bumped by every claim; writes for the run must match it
    recoveries  INTEGER NOT NULL DEFAULT 0,
    parent_id   TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_name ON runs (name, created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);

-- The journal. No foreign key to runs: every write is already conditioned on the run's
-- current epoch (which proves the run exists), and a second lookup per checkpoint would
-- only slow the hot path.
CREATE TABLE steps (
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL,       -- ok | error | retry
    output     BLOB,
    error      BLOB,
    attempts   INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL NOT NULL,
    retry_at   REAL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    boot_id      TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    pid_start    TEXT NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at   REAL
);
