"""Contract: content-addressed blobs (both backends)."""

from __future__ import annotations

import hashlib
import threading

from tether.store.base import Store


def blob(data: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(data).hexdigest(), data


def test_put_blobs__new_hashes__stored_and_counted(store: Store):
    a, b = blob(b"alpha"), blob(b"\x00binary\xff" * 1000)
    assert store.put_blobs([a, b]) == 2
    assert store.get_blobs([a[0], b[0]]) == dict([a, b])
    assert store.blob_stats() == (2, len(a[1]) + len(b[1]))


def test_put_blobs__known_hash__skipped_and_bytes_kept(store: Store):
    key, data = blob(b"original")
    assert store.put_blobs([(key, data)]) == 1
    assert store.put_blobs([(key, b"something else under the same hash")]) == 0
    assert store.get_blobs([key]) == {key: data}
    assert store.blob_stats() == (1, len(data))


def test_put_blobs__duplicates_in_one_call__stored_once(store: Store):
    a = blob(b"twice")
    assert store.put_blobs([a, a, blob(b"once")]) == 2
    assert store.blob_stats()[0] == 2


def test_put_blobs__empty__writes_nothing(store: Store):
    assert store.put_blobs([]) == 0
    assert store.blob_stats() == (0, 0)


def test_put_blobs__empty_content__stored(store: Store):
    key, data = blob(b"")
    assert store.put_blobs([(key, data)]) == 1
    assert store.get_blobs([key]) == {key: b""}


def test_missing_blobs__order_kept_duplicates_dropped(store: Store):
    known = blob(b"known")
    store.put_blobs([known])
    x, y = blob(b"x")[0], blob(b"y")[0]
    assert store.missing_blobs([y, known[0], x, y]) == [y, x]
    assert store.missing_blobs([]) == []


def test_missing_blobs__many_keys__answered_in_one_call(store: Store):
    items = [blob(str(i).encode()) for i in range(1200)]
    store.put_blobs(items[::2])
    missing = store.missing_blobs([k for k, _ in items])
    assert missing == [k for k, _ in items[1::2]]
    assert len(store.get_blobs([k for k, _ in items])) == 600


def test_get_blobs__unknown__absent(store: Store):
    assert store.get_blobs([blob(b"never")[0]]) == {}
    assert store.get_blobs([]) == {}


def test_put_blobs__large_blob__round_trips(store: Store):
    key, data = blob(bytes(range(256)) * 8192)  # 2 MiB
    store.put_blobs([(key, data)])
    assert store.get_blobs([key])[key] == data


def test_put_blobs__two_stores_racing__each_hash_stored_once(store: Store, make_store):
    other: Store = make_store()
    items = [blob(f"race {i}".encode()) for i in range(50)]
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def put(s: Store) -> None:
        barrier.wait()
        counts.append(s.put_blobs(items))

    threads = [threading.Thread(target=put, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 50
    assert store.blob_stats()[0] == 50
