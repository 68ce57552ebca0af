-- tether schema 3 (SQLite): audit chains.

-- An append-only, hash-chained log per chain: each record holds the hash of the previous one.
CREATE TABLE audit (
    chain_id    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    body        BLOB NOT NULL,     -- the record's data, through the app's codecs
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
-- The last record of each chain, written with it: a deleted tail breaks the link to the head.
CREATE TABLE audit_heads (
    chain_id    TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
