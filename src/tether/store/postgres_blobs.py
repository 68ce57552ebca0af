"""The PostgreSQL store's content-addressed blobs.

`PostgresBlobs` holds the blob calls of the `Store` protocol; `PostgresStore` inherits it and
supplies its pooled connections and schema (`_pooled`, `schema`). Blobs go through pooled
connections, never the journal writer's, so a large upload does not hold checkpoints up.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")
_Conn = psycopg.Connection[tuple[Any, ...]]

# Concurrent writers of one hash: the second waits for the first's commit, then skips.
_INSERT = """
INSERT INTO {s}.blobs (hash, data, size)
SELECT v.hash, v.data, length(v.data) FROM unnest(%s::text[], %s::bytea[]) AS v(hash, data)
ON CONFLICT (hash) DO NOTHING
RETURNING hash
"""
_MISSING = """
SELECT k FROM unnest(%s::text[]) AS k
WHERE NOT EXISTS (SELECT 1 FROM {s}.blobs b WHERE b.hash = k)
"""
_SELECT = "SELECT hash, data FROM {s}.blobs WHERE hash = ANY(%s::text[])"
_STATS = "SELECT count(*), coalesce(sum(size), 0)::int8 FROM {s}.blobs"


class PostgresBlobs:
    """Content-addressed blobs; `PostgresStore` inherits them."""

    schema: str

    @abc.abstractmethod
    def _pooled(self, what: str, fn: Callable[[_Conn], T], transaction: bool = False) -> T:
        """Run `fn` on a pooled connection (autocommit, or in one transaction)."""

    def _blob_sql(self, template: str) -> str:
        return template.replace("{s}", f'"{self.schema}"')

    def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store the blobs whose hashes are new, in one transaction; return how many."""
        fresh = {key: data for key, data in items}
        if not fresh:
            return 0
        sql = self._blob_sql(_INSERT)
        params = (list(fresh), list(fresh.values()))
        return self._pooled(
            "store blobs", lambda c: len(c.execute(sql, params, binary=True).fetchall())
        )

    def missing_blobs(self, hashes: Sequence[str]) -> list[str]:
        """Return the hashes not stored, once each, in their order."""
        keys = list(dict.fromkeys(hashes))
        if not keys:
            return []
        sql = self._blob_sql(_MISSING)
        rows = self._pooled("look up blobs", lambda c: c.execute(sql, (keys,)).fetchall())
        missing = {r[0] for r in rows}
        return [k for k in keys if k in missing]

    def get_blobs(self, hashes: Sequence[str]) -> dict[str, bytes]:
        """Return the bytes of the stored blobs among `hashes`."""
        keys = list(dict.fromkeys(hashes))
        if not keys:
            return {}
        sql = self._blob_sql(_SELECT)
        rows = self._pooled("read blobs", lambda c: c.execute(sql, (keys,), binary=True).fetchall())
        return {r[0]: bytes(r[1]) for r in rows}

    def blob_stats(self) -> tuple[int, int]:
        """Return (number of blobs, total bytes)."""
        sql = self._blob_sql(_STATS)
        row = self._pooled("count blobs", lambda c: c.execute(sql).fetchone())
        assert row is not None
        return int(row[0]), int(row[1])
