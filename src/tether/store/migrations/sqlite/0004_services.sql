-- tether schema 4 (SQLite): service awareness, the circuit breakers and rate budgets that every
-- process on the database shares.

CREATE TABLE services (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL DEFAULT 'closed',   -- closed | open | half_open
    failures   TEXT NOT NULL DEFAULT '[]',       -- JSON list: times of the recent failures
    opened_at  REAL,                             -- when the breaker last opened
    retry_at   REAL,                             -- open: probe from then; half_open: probe times out
    probe_id   TEXT,                             -- half_open: the call out as the probe
    limits     TEXT,                             -- JSON: the limits the latest caller gave
    updated_at REAL NOT NULL
);

-- Every admitted call, kept while it is within its service's rate window.
CREATE TABLE service_calls (
    id          TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    at          REAL NOT NULL,                   -- admitted (the budget counts from here)
    requests    INTEGER NOT NULL,
    tokens      INTEGER NOT NULL,                -- reserved, then corrected to the actual use
    finished_at REAL,
    outcome     TEXT                             -- ok | failure | neutral, once finished
);
CREATE INDEX service_calls_window ON service_calls (service, at);
