"""Nobody waits on the database beyond what the settings allow (PostgreSQL, via the proxy).

A blackholed connection (bytes acknowledged, never answered) is cut by the store's watchdog
after `statement_timeout + connect_timeout`; a new connection into the blackhole gives up
after `connect_timeout`; both surface as `StoreUnavailableError`, which tether retries. Once
the path heals, the same store works again. After a server restart, the pool and the writer
connection are replaced on the next call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.faults.cluster import PrivateCluster
from tests.faults.proxy import FaultProxy
from tests.store.helpers import new_run, step
from tether.engine.journal import retrying
from tether.errors import StoreUnavailableError
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Lease, Store

pytestmark = pytest.mark.postgres
T = TypeVar("T")


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy() as p:
        yield p


def bounded(pg_settings: Settings, proxy: FaultProxy) -> Store:
    settings = dataclasses.replace(
        pg_settings,
        database_url=proxy.url(pg_settings.database_url or ""),
        statement_timeout=1.0,
        connect_timeout=1.0,
        pg_pool_size=2,
    )
    store = open_store(settings)
    store.migrate()
    return store


def test_blackholed_calls_fail_within_the_configured_bound(
    pg_settings: Settings, proxy: FaultProxy
):
    store = bounded(pg_settings, proxy)
    try:
        store.create_run(new_run("a"))
        proxy.blackhole()
        timings = []
        for call in (
            lambda: store.get_run("a"),  # a pooled connection that stops answering
            lambda: store.record_steps([(Lease("a", "w1", 1), step("a", 0))]),  # the writer's
        ):
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                call()
            timings.append(time.monotonic() - start)
        print(f"\nblackholed calls gave up after {[round(t, 2) for t in timings]}s (bound 2s)")
        proxy.pass_through()
        assert store.get_run("a") is not None
        [written] = store.record_steps([(Lease("a", "w1", 1), step("a", 0))])
        assert written == step("a", 0)
    finally:
        proxy.pass_through()
        store.close()


@pytest.mark.timeout(120)
def test_store_outlives_a_server_restart(private_pg: PrivateCluster):
    store = open_store(Settings(database_url=private_pg.url(), pg_schema="tether"))
    try:
        store.migrate()
        store.create_run(new_run("a"))
        assert store.record_steps([(Lease("a", "w1", 1), step("a", 0))])[0] == step("a", 0)
        private_pg.restart("fast")
        failures = []

        def counted(fn: Callable[[], T]) -> Callable[[], T]:
            def call() -> T:
                try:
                    return fn()
                except StoreUnavailableError as exc:
                    failures.append(exc)
                    raise

            return call

        # Each connection broken by the restart fails once and is replaced; tether retries.
        assert retrying(counted(lambda: store.get_run("a")), 10, "read") is not None
        lease = Lease("a", "w1", 1)
        written = retrying(counted(lambda: store.record_steps([(lease, step("a", 1))])), 10, "w")
        assert written == [step("a", 1)]
        assert [s.seq for s in store.load_steps("a")] == [0, 1]
        errors = len(failures)
        print(f"\ncalls failed after the restart before the store recovered: {errors}")
    finally:
        store.close()
