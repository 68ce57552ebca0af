-- tether schema 5 (PostgreSQL): content-addressed blobs (workspace snapshots).

-- A blob is named by the hash of its content: a hash already stored is never written again.
CREATE TABLE blobs (
    hash text PRIMARY KEY,
    data bytea NOT NULL,
    size bigint NOT NULL
);
