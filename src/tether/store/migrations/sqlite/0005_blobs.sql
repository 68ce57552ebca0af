-- tether schema 5 (SQLite): content-addressed blobs (workspace snapshots).

-- A blob is named by the hash of its content: a hash already stored is never written again.
-- A rowid table, not WITHOUT ROWID: blobs are large, and rowid tables keep them off the key's
-- B-tree pages.
CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    size INTEGER NOT NULL
);
