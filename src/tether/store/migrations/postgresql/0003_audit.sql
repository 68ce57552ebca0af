-- tether schema 3 (PostgreSQL): audit chains.

-- An append-only, hash-chained log per chain: each record holds the hash of the previous one.
CREATE TABLE audit (
    chain_id    text NOT NULL,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    body        bytea NOT NULL,     -- the record's data, through the app's codecs
    prev_hash   text NOT NULL,
    hash        text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
-- The last record of each chain, written with it: a deleted tail breaks the link to the head.
CREATE TABLE audit_heads (
    chain_id    text PRIMARY KEY,
    seq         bigint NOT NULL,
    hash        text NOT NULL,
    updated_at  timestamptz NOT NULL
);
