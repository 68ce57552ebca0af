-- tether schema 1 (PostgreSQL). Runs in the schema named by Settings.pg_schema, which is
-- first on the search_path while migrations run.

CREATE TABLE runs (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    version     text,
    status      text NOT NULL,
    input       bytea NOT NULL,
    input_hash  text NOT NULL,
    output      bytea,
    error       bytea,
    owner       text,               -- the worker executing the run; NULL while PENDING
    epoch       bigint NOT NULL,    -- bumped by every claim; writes for the run must match it
    recoveries  integer NOT NULL DEFAULT 0,
    parent_id   text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    finished_at timestamptz
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_name ON runs (name, created_at);
CREATE INDEX runs_unfinished ON runs (created_at) WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX runs_by_status ON runs (status, created_at);

-- The journal. No foreign key to runs: every write locks the run's row FOR SHARE and checks
-- its epoch in the same statement, which proves the run exists; a foreign-key check would be
-- a second lookup per checkpoint.
CREATE TABLE steps (
    run_id     text NOT NULL,
    seq        integer NOT NULL,
    name       text NOT NULL,
    status     text NOT NULL,       -- ok | error | retry
    output     bytea,
    error      bytea,
    attempts   integer NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL,
    retry_at   timestamptz,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    boot_id      text NOT NULL,
    pid          integer NOT NULL,
    pid_start    text NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stopped_at   timestamptz
);
