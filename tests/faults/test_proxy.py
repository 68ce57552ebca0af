"""The fault proxy itself: each fault does what it says, on a real PostgreSQL server."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy() as p:
        yield p


@pytest.fixture
def table(pg_database: str) -> Iterator[str]:
    name = f"proxy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    yield name
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=10, **kwargs)  # type: ignore[arg-type]


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def select_once(url: str, sql: str) -> object:
    with connect(url) as conn:
        return conn.execute(sql).fetchone()


def test_pass_through_forwards_queries(proxy: FaultProxy, pg_database: str):
    with connect(proxy.url(pg_database)) as conn:
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
        assert proxy.connections == 1
        with conn.pipeline():
            cur = conn.execute("SELECT %s::int", (7,), prepare=True)
        assert cur.fetchone() == (7,)


def test_delay_holds_every_chunk(proxy: FaultProxy, pg_database: str):
    with connect(proxy.url(pg_database)) as conn:
        proxy.delay(0.2)
        start = time.monotonic()
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # one chunk each way, each held 0.2 s: a lower bound, never a flaky upper one
        assert time.monotonic() - start >= 0.4
        proxy.pass_through()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_blackhole_holds_bytes_and_new_connections_until_healed(
    proxy: FaultProxy, pg_database: str
):
    url = proxy.url(pg_database)
    pool: concurrent.futures.ThreadPoolExecutor
    with connect(url) as conn, concurrent.futures.ThreadPoolExecutor(2) as pool:
        proxy.blackhole()
        query: concurrent.futures.Future[object] = pool.submit(
            lambda: conn.execute("SELECT 'held'").fetchone()
        )
        fresh: concurrent.futures.Future[object] = pool.submit(select_once, url, "SELECT 'late'")
        done, _ = concurrent.futures.wait([query, fresh], timeout=1.0)
        assert not done, "bytes flowed through a blackhole"
        proxy.pass_through()
        assert query.result(10) == ("held",)
        assert fresh.result(10) == ("late",)


def test_reset_breaks_current_connections_only(proxy: FaultProxy, pg_database: str):
    url = proxy.url(pg_database)
    with connect(url) as conn:
        assert proxy.reset() == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert conn.closed or conn.broken
    with connect(url) as again:
        assert again.execute("SELECT 3").fetchone() == (3,)


def insert_and_commit(conn: psycopg.Connection, table: str) -> None:
    with conn.transaction():
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        conn.execute(f"SELECT count(*) FROM {table}")  # not a commit point


def test_lost_commit_commits_but_the_client_never_hears(
    proxy: FaultProxy, pg_database: str, table: str
):
    with connect(proxy.url(pg_database)) as conn:
        done = proxy.lose_next_commit()
        with pytest.raises(psycopg.OperationalError):
            insert_and_commit(conn, table)
        assert done.is_set()
    assert count(pg_database, table) == 1  # the server committed


def test_lost_commit_in_a_pipeline(proxy: FaultProxy, pg_database: str, table: str):
    with connect(proxy.url(pg_database)) as conn:
        done = proxy.lose_next_commit()
        with pytest.raises(psycopg.OperationalError), conn.pipeline(), conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (2)")
        assert done.is_set()
    assert count(pg_database, table) == 1


def test_lost_reply_of_an_autocommit_statement(proxy: FaultProxy, pg_database: str, table: str):
    with connect(proxy.url(pg_database)) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (%s)", (1,), prepare=True)  # prepared by name
        done = proxy.lose_next_commit(f"INSERT INTO {table}".encode())
        conn.execute("SELECT 1")  # does not match: goes through
        with pytest.raises(psycopg.OperationalError):
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (2,), prepare=True)
        assert done.is_set()
    assert count(pg_database, table) == 2
