"""The write path while the database is unavailable (both databases).

The store is real; a thin wrapper makes its first calls fail with `StoreUnavailableError`, as
the store does when its connection breaks. A checkpoint is retried past `store_retry_timeout`
for as long as the worker is not fenced, and given up with `LeaseLostError` once it is; a new
run alone is given up after `store_retry_timeout`.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.store.helpers import lease, new_run, step
from tether.engine.journal import Committer
from tether.errors import LeaseLostError, StoreUnavailableError
from tether.store.base import Store


class Flaky:
    """A store whose `record_steps` and `write_batch` fail the first `failures` times."""

    def __init__(self, store: Store, failures: int, fence_after: int | None = None) -> None:
        self.store = store
        self.failures = failures
        self.calls = 0
        self.fence = threading.Event()
        self.fence_after = fence_after
        self.inline_writes = store.inline_writes

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fence_after is not None and self.calls > self.fence_after:
            self.fence.set()
        if self.calls <= self.failures:
            raise StoreUnavailableError("the connection broke (injected)")

    def record_steps(self, items: Any) -> Any:
        self._maybe_fail()
        return self.store.record_steps(items)

    def write_batch(self, batch: Any) -> Any:
        self._maybe_fail()
        return self.store.write_batch(batch)


def test_checkpoint_retried_past_the_retry_timeout_until_it_lands(store: Store):
    store.create_run(new_run("a"))
    flaky = Flaky(store, failures=5)
    committer = Committer(flaky, retry_timeout=0.01, fenced=lambda: False)  # type: ignore[arg-type]
    try:
        assert committer.commit(lease("a"), step("a", 0)) == step("a", 0)
    finally:
        committer.close()
    assert flaky.calls == 6
    assert store.load_steps("a") == [step("a", 0)]


def test_checkpoint_given_up_as_lease_lost_once_fenced(store: Store):
    store.create_run(new_run("a"))
    flaky = Flaky(store, failures=100, fence_after=3)
    committer = Committer(flaky, retry_timeout=60, fenced=flaky.fence.is_set)  # type: ignore[arg-type]
    try:
        with pytest.raises(LeaseLostError, match="could not reach the database"):
            committer.commit(lease("a"), step("a", 0))
    finally:
        committer.close()
    assert store.load_steps("a") == []


async def test_new_run_given_up_after_the_retry_timeout(store: Store):
    flaky = Flaky(store, failures=100)
    committer = Committer(flaky, retry_timeout=0.3, fenced=lambda: False)  # type: ignore[arg-type]
    try:
        with pytest.raises(StoreUnavailableError):
            await committer.acreate(new_run("b"))
    finally:
        committer.close()
    assert store.get_run("b") is None
