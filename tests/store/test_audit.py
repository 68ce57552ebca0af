"""Audit chains in the store: idempotent appends, linear chains, one snapshot per read."""

from __future__ import annotations

import threading

import pytest

from tether.errors import CorruptRowError
from tether.store.base import GENESIS, AuditRow, Store

from .helpers import NOW


def row(seq: int, prev: str, chain: str = "c1", h: str | None = None) -> AuditRow:
    return AuditRow(chain, seq, "note", f'{{"n":{seq}}}'.encode(), prev, h or f"h{seq}", NOW + seq)


def chain(n: int, chain_id: str = "c1") -> list[AuditRow]:
    rows, prev = [], GENESIS
    for seq in range(n):
        rows.append(row(seq, prev, chain_id))
        prev = rows[-1].hash
    return rows


def test_append_audit__rows_and_head_read_back(store: Store):
    store.append_audit(chain(3), NOW)
    rows, head = store.load_audit("c1")
    assert rows == chain(3)
    assert head is not None
    assert (head.chain_id, head.seq, head.hash) == ("c1", 2, "h2")


def test_append_audit__same_records_again__is_a_no_op(store: Store):
    store.append_audit(chain(3), NOW)
    store.append_audit(chain(4), NOW)  # a replay appends what it appended before, and one more
    rows, head = store.load_audit("c1")
    assert [r.seq for r in rows] == [0, 1, 2, 3]
    assert head is not None
    assert head.seq == 3


def test_append_audit__different_record_at_a_taken_seq__raises_and_writes_nothing(store: Store):
    store.append_audit(chain(2), NOW)
    forged = [row(1, "h0", h="other"), row(2, "other")]
    with pytest.raises(CorruptRowError, match="different record at 1"):
        store.append_audit(forged, NOW)
    rows, head = store.load_audit("c1")
    assert [r.hash for r in rows] == ["h0", "h1"]
    assert head is not None
    assert head.seq == 1


def test_append_audit__gap_or_wrong_link__raises_and_writes_nothing(store: Store):
    store.append_audit(chain(1), NOW)
    with pytest.raises(CorruptRowError, match="does not follow"):
        store.append_audit([row(2, "h1")], NOW)
    with pytest.raises(CorruptRowError, match="does not follow"):
        store.append_audit([row(1, "not-h0"), row(2, "h1")], NOW)
    assert [r.seq for r in store.load_audit("c1")[0]] == [0]


def test_append_audit__first_record_must_link_to_genesis(store: Store):
    with pytest.raises(CorruptRowError):
        store.append_audit([row(0, "x")], NOW)
    assert store.load_audit("c1") == ([], None)


def test_load_audit__unknown_chain__empty(store: Store):
    assert store.load_audit("nope") == ([], None)


def test_list_audit_heads__by_prefix_newest_first(store: Store):
    store.append_audit(chain(1, "mission/a"), NOW)
    store.append_audit(chain(2, "mission/b"), NOW + 1)
    store.append_audit(chain(1, "other"), NOW + 2)
    heads = store.list_audit_heads("mission/")
    assert [(h.chain_id, h.seq) for h in heads] == [("mission/b", 1), ("mission/a", 0)]
    assert len(store.list_audit_heads()) == 3


def test_append_audit__concurrent_writers_of_one_chain__one_wins_each_position(make_store):
    stores: list[Store] = [make_store() for _ in range(4)]
    stores[0].migrate()
    barrier = threading.Barrier(len(stores))
    errors: list[Exception] = []

    def writer(i: int) -> None:
        mine = [row(0, GENESIS, "race", h=f"w{i}-0"), row(1, f"w{i}-0", "race", h=f"w{i}-1")]
        barrier.wait()
        try:
            stores[i].append_audit(mine, NOW)
        except CorruptRowError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows, head = stores[0].load_audit("race")
    assert len(errors) == len(stores) - 1
    assert len(rows) == 2
    assert rows[1].prev_hash == rows[0].hash
    assert head is not None
    assert head.hash == rows[1].hash
