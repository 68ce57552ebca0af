"""The audit chain names the first broken link after any edit, deletion, insertion or
reordering made through raw SQL, on both databases."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from tether.codec import Codec
from tether.errors import AuditChainError
from tether.mission import audit
from tether.settings import Settings
from tether.store.base import Store

NOW = 1_800_000_000.0
CHAIN = "mission/m1"


@contextlib.contextmanager
def raw(settings: Settings) -> Iterator[Any]:
    """A raw connection to the test's database, tables reachable unqualified."""
    url = settings.database_url or ""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(f'SET search_path TO "{settings.pg_schema}"')
        yield pg


def q(settings: Settings, sql: str) -> str:
    return sql if (settings.database_url or "").startswith("sqlite") else sql.replace("?", "%s")


def build(store: Store, codec: Codec, n: int = 6, key: bytes | None = None) -> audit.Chain:
    chain = audit.Chain(CHAIN, codec, key)
    rows = [
        chain.append("transition", {"to": f"state-{i}", "why": [i, "x"]}, NOW + i) for i in range(n)
    ]
    store.append_audit(rows[:3], NOW)
    store.append_audit(rows[3:], NOW)
    return chain


def check(store: Store, codec: Codec, key: bytes | None = None) -> audit.Verdict:
    rows, head = store.load_audit(CHAIN)
    return audit.verify(CHAIN, rows, head, codec, key)


@pytest.fixture
def codec() -> Codec:
    return Codec()


def test_intact_chain__verifies(store: Store, codec: Codec):
    chain = build(store, codec)
    verdict = check(store, codec)
    assert verdict.ok
    assert verdict.records == 6
    assert [r.data["to"] for r in audit.decode(store.load_audit(CHAIN)[0], codec)] == [
        r.data["to"] for r in chain.records
    ]


def test_edited_body__first_broken_link_named(store: Store, codec: Codec, settings: Settings):
    build(store, codec)
    with raw(settings) as conn:
        conn.execute(
            q(settings, "UPDATE audit SET body = ? WHERE chain_id = ? AND seq = 2"),
            (b'{"to":"state-9","why":[2,"x"]}', CHAIN),
        )
    verdict = check(store, codec)
    assert (verdict.broken_at, verdict.ok) == (2, False)
    assert "edited" in verdict.reason
    with pytest.raises(AuditChainError, match="broken at record 2") as info:
        audit.require_intact(verdict)
    assert info.value.seq == 2


def test_edited_kind__detected(store: Store, codec: Codec, settings: Settings):
    build(store, codec)
    with raw(settings) as conn:
        conn.execute(q(settings, "UPDATE audit SET kind = 'signal' WHERE seq = 4"))
    assert check(store, codec).broken_at == 4


def test_edit_with_recomputed_hash__breaks_the_next_link(
    store: Store, codec: Codec, settings: Settings
):
    build(store, codec)
    rows, _ = store.load_audit(CHAIN)
    data = {"to": "forged", "why": [1, "x"]}
    forged = audit.record_hash(CHAIN, 1, "transition", data, rows[0].hash)
    with raw(settings) as conn:
        conn.execute(
            q(settings, "UPDATE audit SET body = ?, hash = ? WHERE chain_id = ? AND seq = 1"),
            (codec.encode(data, "x"), forged, CHAIN),
        )
    verdict = check(store, codec)
    assert verdict.broken_at == 2
    assert "does not link" in verdict.reason


def test_keyed_chain__recomputed_hash_without_the_key__detected(
    store: Store, codec: Codec, settings: Settings
):
    key = b"k" * 32
    build(store, codec, key=key)
    assert check(store, codec, key).ok
    rows, _ = store.load_audit(CHAIN)
    data = {"to": "forged", "why": [5, "x"]}
    forged = audit.record_hash(CHAIN, 5, "transition", data, rows[4].hash)  # unkeyed
    with raw(settings) as conn:
        conn.execute(
            q(settings, "UPDATE audit SET body = ?, hash = ? WHERE chain_id = ? AND seq = 5"),
            (codec.encode(data, "x"), forged, CHAIN),
        )
        conn.execute(
            q(settings, "UPDATE audit_heads SET hash = ? WHERE chain_id = ?"), (forged, CHAIN)
        )
    assert check(store, codec, key).broken_at == 5


def test_deleted_middle_record__detected_at_its_position(
    store: Store, codec: Codec, settings: Settings
):
    build(store, codec)
    with raw(settings) as conn:
        conn.execute(q(settings, "DELETE FROM audit WHERE chain_id = ? AND seq = 3"), (CHAIN,))
    verdict = check(store, codec)
    assert verdict.broken_at == 3
    assert "missing" in verdict.reason


def test_deleted_tail__detected_by_the_head(store: Store, codec: Codec, settings: Settings):
    build(store, codec)
    with raw(settings) as conn:
        conn.execute(q(settings, "DELETE FROM audit WHERE chain_id = ? AND seq >= 4"), (CHAIN,))
    verdict = check(store, codec)
    assert verdict.broken_at == 4
    assert "deleted from its end" in verdict.reason


def test_inserted_record__detected(store: Store, codec: Codec, settings: Settings):
    build(store, codec)
    rows, _ = store.load_audit(CHAIN)
    data = {"to": "inserted", "why": []}
    inserted = audit.record_hash(CHAIN, 2, "transition", data, rows[1].hash)
    with raw(settings) as conn:
        # Shift the tail up by one (in two moves, so the primary key never collides).
        conn.execute(
            q(settings, "UPDATE audit SET seq = seq + 100 WHERE chain_id = ? AND seq >= 2"),
            (CHAIN,),
        )
        conn.execute(
            q(settings, "UPDATE audit SET seq = seq - 99 WHERE chain_id = ? AND seq >= 100"),
            (CHAIN,),
        )
        conn.execute(
            q(settings, "INSERT INTO audit VALUES (?, 2, 'transition', ?, ?, ?, ?)"),
            (CHAIN, codec.encode(data, "x"), rows[1].hash, inserted, NOW)
            if "sqlite" in (settings.database_url or "")
            else (CHAIN, codec.encode(data, "x"), rows[1].hash, inserted, "2027-01-01T00:00:00Z"),
        )
        conn.execute(q(settings, "UPDATE audit_heads SET seq = 6 WHERE chain_id = ?"), (CHAIN,))
    verdict = check(store, codec)
    assert verdict.broken_at == 3
    assert "does not link" in verdict.reason


def test_swapped_records__detected(store: Store, codec: Codec, settings: Settings):
    build(store, codec)
    with raw(settings) as conn:
        conn.execute(
            q(settings, "UPDATE audit SET seq = 100 WHERE chain_id = ? AND seq = 1"), (CHAIN,)
        )
        conn.execute(
            q(settings, "UPDATE audit SET seq = 1 WHERE chain_id = ? AND seq = 2"), (CHAIN,)
        )
        conn.execute(
            q(settings, "UPDATE audit SET seq = 2 WHERE chain_id = ? AND seq = 100"), (CHAIN,)
        )
    verdict = check(store, codec)
    assert verdict.broken_at == 1


def test_garbled_body__reported_not_raised(store: Store, codec: Codec, settings: Settings):
    build(store, codec)
    with raw(settings) as conn:
        conn.execute(q(settings, "UPDATE audit SET body = ? WHERE seq = 0"), (b"\x00junk",))
    verdict = check(store, codec)
    assert verdict.broken_at == 0
    assert "cannot be read" in verdict.reason
