-- tether schema 4 (PostgreSQL): service awareness, the circuit breakers and rate budgets that
-- every process on the database shares. Times come from the database server's clock.

CREATE TABLE services (
    name       text PRIMARY KEY,
    state      text NOT NULL DEFAULT 'closed',   -- closed | open | half_open
    failures   float8[] NOT NULL DEFAULT '{}',   -- Unix times of the recent failures
    opened_at  timestamptz,                      -- when the breaker last opened
    retry_at   timestamptz,                      -- open: probe from then; half_open: probe times out
    probe_id   text,                             -- half_open: the call out as the probe
    limits     text,                             -- JSON: the limits the latest caller gave
    updated_at timestamptz NOT NULL
);

-- Every admitted call, kept while it is within its service's rate window.
CREATE TABLE service_calls (
    id          text PRIMARY KEY,
    service     text NOT NULL,
    at          timestamptz NOT NULL,            -- admitted (the budget counts from here)
    requests    integer NOT NULL,
    tokens      bigint NOT NULL,                 -- reserved, then corrected to the actual use
    finished_at timestamptz,
    outcome     text                             -- ok | failure | neutral, once finished
);
CREATE INDEX service_calls_window ON service_calls (service, at);
