"""PostgreSQL-only behaviour: fencing under real row locks, lost connections, migrations racing.

Lock-order tests line the sessions up by waiting until `pg_stat_activity` shows one of them
waiting on a `Lock`, never by sleeping.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tether.errors import LeaseLostError, StoreUnavailableError
from tether.settings import Settings
from tether.store import migrate, open_store
from tether.store.base import STEP_OK, STEP_RETRY, Store

from .helpers import NOW, lease, new_run, step, unique_table, worker

pytestmark = pytest.mark.postgres

TTL = 10.0


@pytest.fixture
def stores(pg_settings: Settings) -> Iterator[Callable[..., Store]]:
    """Open stores on the test's schema (other 'processes'); keyword arguments override settings."""
    opened: list[Store] = []

    def make(**options: object) -> Store:
        s = open_store(dataclasses.replace(pg_settings, **options))  # type: ignore[arg-type]
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def admin(pg_settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection of its own, outside any store; not in autocommit mode."""
    assert pg_settings.database_url is not None
    with psycopg.connect(pg_settings.database_url) as conn:
        yield conn


@pytest.fixture
def monitor(pg_settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection for pg_stat_activity (a transaction would see one snapshot)."""
    assert pg_settings.database_url is not None
    with psycopg.connect(pg_settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def threads() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        yield pool


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def waiting_on_lock(monitor: psycopg.Connection, pattern: str) -> Callable[[], bool]:
    """True once a session whose statement matches `pattern` (LIKE) waits on a lock."""

    def check() -> bool:
        row = monitor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            (pattern,),
        ).fetchone()
        return row is not None and row[0] > 0

    return check


def orphaned_run(store: Store, run_id: str = "r") -> None:
    """A run owned by w1 at epoch 1, with w1 stopped: claimable at once."""
    store.register_worker(worker("w1"))
    store.create_run(new_run(run_id, owner="w1"))
    store.stop_workers(["w1"], NOW)


# -- fencing ------------------------------------------------------------------------------


def test_claim__journal_write_in_flight__passes_over_run_then_claims_it_with_entry(
    pg_settings, threads, stores, admin, monitor
):
    a, b = stores(), stores()
    a.migrate()
    orphaned_run(a)
    # An uncommitted row at the same position holds the journal write after its fence (the
    # run's row is locked FOR SHARE) and before its commit.
    admin.execute(
        f'INSERT INTO "{pg_settings.pg_schema}".steps VALUES '
        "('r', 0, 's', 'retry', NULL, NULL, 1, now(), now(), NULL)"
    )
    write = threads.submit(a.record_steps, [(lease("r"), step("r", 0))])
    wait_until(waiting_on_lock(monitor, "%INSERT INTO%.steps%"))

    assert b.claim_runs("w2", ["wf"], 10, NOW, TTL) == []  # the run is mid-write: passed over
    admin.rollback()
    assert write.result(10) == [step("r", 0)]
    [(claimed, row)] = b.claim_runs("w2", ["wf"], 10, NOW, TTL)
    assert (claimed.epoch, row.owner, row.recoveries) == (2, "w2", 1)
    assert b.load_steps("r") == [step("r", 0)]


def test_record_steps__claim_in_flight__waits_for_it_then_is_fenced(
    pg_settings, threads, stores, admin, monitor
):
    a = stores()
    a.migrate()
    orphaned_run(a)
    # A claim that has bumped the epoch but not yet committed.
    admin.execute(
        f'UPDATE "{pg_settings.pg_schema}".runs SET epoch = epoch + 1, owner = %s WHERE id = %s',
        ("w2", "r"),
    )
    write = threads.submit(a.record_steps, [(lease("r"), step("r", 0))])
    wait_until(waiting_on_lock(monitor, "%INSERT INTO%.steps%"))

    admin.commit()
    [outcome] = write.result(10)
    assert isinstance(outcome, LeaseLostError)
    assert "epoch 2" in str(outcome)
    assert a.load_steps("r") == []


def test_transactional_step__claimed_while_body_runs__body_rolled_back_and_lease_lost(
    threads, stores, monitor
):
    a, b = stores(), stores()
    a.migrate()
    orphaned_run(a)
    table = unique_table()
    monitor.execute(f"CREATE TABLE {table} (v int)")
    entered, release = threading.Event(), threading.Event()

    def body(conn):
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        entered.set()
        assert release.wait(10)
        return step("r", 0)

    running = threads.submit(a.record_step_transactionally, lease("r"), body)
    assert entered.wait(10)
    # The body holds no lock on the run, so the claim goes through; the step's journal write
    # then finds the epoch moved and everything the body did is rolled back.
    [(claimed, _)] = b.claim_runs("w2", ["wf"], 10, NOW, TTL)
    release.set()
    with pytest.raises(LeaseLostError, match="epoch 2"):
        running.result(10)
    assert claimed.epoch == 2
    assert b.load_steps("r") == []
    assert monitor.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


# -- connections --------------------------------------------------------------------------


def _terminate_sessions(monitor: psycopg.Connection, application_name: str) -> int:
    """Kill the sessions of one store (the writer and the pooled ones), waiting until gone."""
    row = monitor.execute(
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s",
        (application_name,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _survives(call: Callable[[], object]) -> object:
    """The first call after a lost connection may fail as unavailable; the next one works."""
    try:
        return call()
    except StoreUnavailableError:
        return call()


def test_lost_connections__next_call_unavailable_or_reconnected__then_works(
    pg_settings, stores, monitor
):
    name = f"tether_{pg_settings.pg_schema}"  # the URL's application_name is kept
    s = stores(database_url=f"{pg_settings.database_url}?application_name={name}")
    s.migrate()
    s.register_worker(worker("w1"))
    s.create_run(new_run("a"))
    assert s.get_run("a") is not None
    assert _terminate_sessions(monitor, name) >= 2  # the writer and at least one pooled

    assert _survives(lambda: s.heartbeat("w1", NOW + 1)) is True
    assert s.heartbeat("w1", NOW + 2)
    assert _survives(lambda: s.get_run("a")) is not None
    assert s.get_run("a") is not None
    assert _survives(lambda: s.record_steps([(lease("a"), step("a", 0))])) == [step("a", 0)]
    assert s.load_steps("a") == [step("a", 0)]

    assert _terminate_sessions(monitor, name) >= 2
    one = step("a", 1)
    assert _survives(lambda: s.record_step_transactionally(lease("a"), lambda conn: one)) == one
    assert s.load_steps("a") == [step("a", 0), one]


def test_unreachable_server__unavailable_error_without_password():
    s = open_store(
        Settings(
            database_url="postgresql://tether:s3cret-pw@127.0.0.1:1/nowhere", connect_timeout=1
        )
    )
    try:
        for call in (lambda: s.heartbeat("w1", NOW), s.database_time):
            with pytest.raises(StoreUnavailableError) as info:
                call()
            assert "s3cret-pw" not in str(info.value)
            assert "tether:***@127.0.0.1:1/nowhere" in str(info.value)
    finally:
        s.close()


def test_transactional_body__sees_user_search_path_and_store_timeouts(stores):
    s = stores(statement_timeout=12.5)
    s.migrate()
    s.create_run(new_run("a"))
    seen: list[object] = []

    def body(conn):
        seen.append(conn.autocommit)
        seen.extend(
            conn.execute(
                "SELECT current_schema(), current_setting('statement_timeout'), "
                "current_setting('application_name')"
            ).fetchone()
        )
        return step("a", 0)

    s.record_step_transactionally(lease("a"), body)
    assert seen == [False, "public", "12500ms", "tether"]


def test_transactional_body__driver_error__propagates_unchanged_and_conn_is_reusable(stores):
    s = stores()
    s.migrate()
    s.create_run(new_run("a"))
    raised: list[Exception] = []

    def failing(conn):
        try:
            conn.execute("SELECT 1 / 0")
        except psycopg.Error as exc:
            raised.append(exc)
            raise
        return step("a", 0)

    with pytest.raises(psycopg.errors.DivisionByZero) as info:
        s.record_step_transactionally(lease("a"), failing)
    assert info.value is raised[0]
    assert s.load_steps("a") == []
    assert s.record_step_transactionally(lease("a"), lambda conn: step("a", 0)) == step("a", 0)


def test_transactional_body__commit_inside_body__refused_and_nothing_commits(stores, monitor):
    s = stores()
    s.migrate()
    s.create_run(new_run("a"))
    table = unique_table()
    monitor.execute(f"CREATE TABLE {table} (v int)")

    def body(conn):
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        conn.commit()
        return step("a", 0)

    with pytest.raises(psycopg.ProgrammingError):
        s.record_step_transactionally(lease("a"), body)
    assert monitor.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    assert s.load_steps("a") == []


# -- batches --------------------------------------------------------------------------------


def test_record_steps__same_position_twice_in_a_batch__applied_in_order(stores):
    s = stores()
    s.migrate()
    s.create_run(new_run("a"))
    retry = step("a", 0, status=STEP_RETRY, output=None, retry_at=NOW + 1)
    final = step("a", 0, output=b"done", attempts=2)
    late = dataclasses.replace(final, output=b"late")
    assert s.record_steps([(lease("a"), retry), (lease("a"), final), (lease("a"), late)]) == [
        retry,
        final,
        final,
    ]
    assert [(r.status, r.output) for r in s.load_steps("a")] == [(STEP_OK, b"done")]


def test_record_steps__64_item_batch__one_statement_all_written(stores):
    s = stores()
    s.migrate()
    for i in range(8):
        s.create_run(new_run(f"r{i}"))
    items = [(lease(f"r{i}"), step(f"r{i}", seq)) for i in range(8) for seq in range(8)]
    assert s.record_steps(items) == [rec for _, rec in items]
    assert [r.seq for r in s.load_steps("r7")] == list(range(8))


# -- migrations -----------------------------------------------------------------------------


def test_migrate__processes_racing_on_a_fresh_schema__all_succeed_once(
    pg_settings, threads, stores, monitor
):
    racers = [stores() for _ in range(4)]
    barrier = threading.Barrier(len(racers))

    def race(s: Store) -> int:
        barrier.wait()
        return s.migrate()

    versions = list(threads.map(race, racers, timeout=30))
    assert versions == [migrate.latest("postgresql")] * len(racers)
    rows = monitor.execute(
        f'SELECT version FROM "{pg_settings.pg_schema}".schema_version ORDER BY version'
    ).fetchall()
    assert rows == [(v,) for v in range(1, migrate.latest("postgresql") + 1)]


def test_migrate__tables_land_in_the_configured_schema_only(pg_settings, stores, monitor):
    stores().migrate()
    rows = monitor.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN (%s, 'public') "
        "AND table_name IN ('runs', 'steps', 'workers', 'schema_version') ORDER BY 2",
        (pg_settings.pg_schema,),
    ).fetchall()
    schema = pg_settings.pg_schema
    assert rows == [
        (schema, "runs"),
        (schema, "schema_version"),
        (schema, "steps"),
        (schema, "workers"),
    ]
