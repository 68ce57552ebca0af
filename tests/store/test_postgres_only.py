"""PostgreSQL-only behaviour: fencing under real row locks, lost connections, migrations racing.

Lock-order tests line the sessions up by waiting until `pg_stat_activity` shows one of them
waiting on a `Lock`, never by sleeping.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tether.errors import DeduplicatedError, LeaseLostError, StoreUnavailableError
from tether.settings import Settings
from tether.store import migrate, open_store
from tether.store.base import (
    STEP_OK,
    STEP_RETRY,
    Batch,
    Completion,
    NewMessage,
    NewRun,
    QueueLimits,
    StepRecord,
    Store,
)

from .helpers import NOW, age_worker, lease, new_run, step, unique_table, worker

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
    assert rows == [(m.version,) for m in migrate.migrations("postgresql")]


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


# -- wake-ups under concurrency --------------------------------------------------------------
#
# Each lost-wake-up interleaving is forced once by holding one side's locks in an open
# transaction (`admin`, doing what that side's store call does) while the other side's call
# waits on them; then both sides race freely many times.

RACES = 150


def _schema(pg_settings: Settings) -> str:
    return f'"{pg_settings.pg_schema}"'


def test_suspend__message_sent_while_it_waits_for_the_row__does_not_wait(
    pg_settings, threads, stores, admin, monitor
):
    s = stores()
    s.migrate()
    s.create_run(new_run("a"))
    sch = _schema(pg_settings)
    # A sender holding the row and its inserted message, not yet committed.
    admin.execute(f"SELECT status FROM {sch}.runs WHERE id = 'a' FOR UPDATE")
    admin.execute(
        f"INSERT INTO {sch}.messages (run_id, topic, payload, created_at) "
        "VALUES ('a', 't', '\\x31', now())"
    )
    suspending = threads.submit(s.suspend, lease("a"), None, ["t"], [], NOW)
    wait_until(waiting_on_lock(monitor, "%FOR UPDATE%"))
    admin.commit()
    assert suspending.result(10) is False
    assert s.get_run("a").status == "RUNNING"


def test_send_message__while_a_suspend_commits__wakes_the_run(
    pg_settings, threads, stores, admin, monitor
):
    s = stores()
    s.migrate()
    s.create_run(new_run("a"))
    sch = _schema(pg_settings)
    # A suspender that has found no message and set the run WAITING, not yet committed.
    admin.execute(f"SELECT epoch FROM {sch}.runs WHERE id = 'a' FOR UPDATE")
    admin.execute(f"UPDATE {sch}.runs SET status = 'WAITING', owner = NULL WHERE id = 'a'")
    sending = threads.submit(s.send_message, NewMessage("a", "t", b"1", NOW + 1))
    wait_until(waiting_on_lock(monitor, "%FOR UPDATE%"))
    admin.commit()
    assert sending.result(10) is True
    row = s.get_run("a")
    assert row is not None
    assert (row.status, row.wake_at) == ("WAITING", NOW + 1)


def test_suspend__target_ending_while_it_waits_for_the_row__does_not_wait(
    pg_settings, threads, stores, admin, monitor
):
    s = stores()
    s.migrate()
    s.create_run(new_run("parent"))
    s.create_run(new_run("child"))
    # A completion of the child, not yet committed.
    admin.execute(f"UPDATE {_schema(pg_settings)}.runs SET status = 'SUCCEEDED' WHERE id = 'child'")
    suspending = threads.submit(s.suspend, lease("parent"), None, [], ["child"], NOW)
    wait_until(waiting_on_lock(monitor, "%FOR SHARE%"))
    admin.commit()
    assert suspending.result(10) is False
    assert s.get_run("parent").status == "RUNNING"


@pytest.mark.parametrize("how", ["complete_run", "write_batch", "cancel_run"])
def test_target_ending__while_a_suspend_on_it_commits__wakes_the_waiter(
    pg_settings, threads, stores, admin, monitor, how
):
    s = stores()
    s.migrate()
    s.register_worker(worker("w1"))
    s.create_run(new_run("parent"))
    s.create_run(new_run("child"))
    sch = _schema(pg_settings)
    # A suspender holding the child FOR SHARE with its wait registered, not yet committed.
    admin.execute(f"SELECT status FROM {sch}.runs WHERE id = 'child' FOR SHARE")
    admin.execute(f"INSERT INTO {sch}.waiters VALUES ('child', 'parent')")
    admin.execute(f"UPDATE {sch}.runs SET status = 'WAITING', owner = NULL WHERE id = 'parent'")
    end = {
        "complete_run": lambda: s.complete_run(lease("child"), "SUCCEEDED", b"1", None, NOW + 1),
        "write_batch": lambda: s.write_batch(
            Batch(completions=[Completion(lease("child"), "SUCCEEDED", b"1", None, NOW + 1)])
        ),
        "cancel_run": lambda: s.cancel_run("child", None, NOW + 1),
    }[how]
    ending = threads.submit(end)
    wait_until(waiting_on_lock(monitor, "%UPDATE%"))
    admin.commit()
    ending.result(10)
    row = s.get_run("parent")
    assert row is not None
    assert (row.status, row.wake_at) == ("WAITING", NOW + 1)
    assert [r.id for _, r in s.claim_runs("w2", ["wf"], 10, NOW + 2, TTL)] == ["parent"]


def _race(threads, first: Callable[[], object], second: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(2)

    def go(fn: Callable[[], object]) -> object:
        barrier.wait()
        return fn()

    futures = [threads.submit(go, first), threads.submit(go, second)]
    return [f.result(30) for f in futures]


def _end_together(store: Store, batch: Batch) -> object:
    return store.write_batch(batch)


def _end_one_by_one(store: Store, batch: Batch) -> None:
    for c in batch.completions:
        store.complete_run(c.lease, c.status, c.output, c.error, c.now)


def _suspend_unless_cancelled(store: Store, run_id: str, targets: list[str]) -> bool | None:
    try:
        return store.suspend(lease(run_id), None, [], targets, NOW)
    except LeaseLostError:
        return None  # cancelled first


def test_suspend_and_send_message__racing__never_lose_the_wake_up(threads, stores):
    a, b = stores(), stores()
    a.migrate()
    outcomes = set()
    for i in range(RACES):
        run_id = f"r{i}"
        a.create_run(new_run(run_id))
        suspended, sent = _race(
            threads,
            functools.partial(a.suspend, lease(run_id), None, ["t"], [], NOW),
            functools.partial(b.send_message, NewMessage(run_id, "t", b"1", NOW + 1)),
        )
        assert sent is True
        row = a.get_run(run_id)
        assert row is not None
        if suspended:
            assert (row.status, row.wake_at) == ("WAITING", NOW + 1)  # woken: claimable
        else:
            assert row.status == "RUNNING"
            got = a.consume_message(lease(run_id), 0, "r", "t", NOW)
            assert isinstance(got, StepRecord)  # the message is there, unread
        outcomes.add(bool(suspended))
    assert outcomes  # which orders occurred depends on the scheduler; each must be right


def test_child_ending_and_parent_suspending__racing__never_lose_the_wake_up(threads, stores):
    a, b = stores(), stores()
    a.migrate()
    a.register_worker(worker("w1"))
    for i in range(RACES):
        parent, kids = f"p{i}", [f"c{i}-{k}" for k in range(3)]
        a.create_run(new_run(parent))
        for kid in kids:
            a.create_run(dataclasses.replace(new_run(kid), parent_id=parent))
        # The children end together in one batch (as group commit does) or one by one.
        batch = Batch(
            completions=[Completion(lease(k), "SUCCEEDED", b"1", None, NOW) for k in kids]
        )
        end = functools.partial(_end_together if i % 2 else _end_one_by_one, b, batch)
        suspended, _ = _race(
            threads, functools.partial(a.suspend, lease(parent), None, [], kids, NOW), end
        )
        row = a.get_run(parent)
        assert row is not None
        if suspended:
            assert (row.status, row.wake_at) == ("WAITING", NOW)
        else:
            assert row.status == "RUNNING"


def test_cancel_and_suspend_on_children__racing__no_deadlock_and_all_cancelled(threads, stores):
    a, b = stores(), stores()
    a.migrate()
    for i in range(RACES // 3):
        parent, kids = f"p{i}", [f"c{i}-{k}" for k in range(3)]
        a.create_run(new_run(parent))
        for kid in kids:
            a.create_run(dataclasses.replace(new_run(kid), parent_id=parent))

        _, cancelled = _race(
            threads,
            functools.partial(_suspend_unless_cancelled, a, parent, kids),
            functools.partial(b.cancel_run, parent, None, NOW),
        )
        assert cancelled == sorted([parent, *kids])
        assert set(a.run_statuses([parent, *kids]).values()) == {"CANCELLED"}


def test_cancel_and_children_ending__racing__no_deadlock(threads, stores):
    a, b = stores(), stores()
    a.migrate()
    for i in range(RACES // 3):
        parent, kids = f"p{i}", [f"c{i}-{k}" for k in range(3)]
        a.create_run(new_run(parent))
        for kid in kids:
            a.create_run(dataclasses.replace(new_run(kid), parent_id=parent))
        assert a.suspend(lease(parent), None, [], kids, NOW)
        batch = Batch(
            completions=[Completion(lease(k), "SUCCEEDED", b"1", None, NOW) for k in kids]
        )
        _, cancelled = _race(
            threads,
            functools.partial(a.write_batch, batch),
            functools.partial(b.cancel_run, parent, None, NOW),
        )
        assert isinstance(cancelled, list)
        assert parent in cancelled
        assert a.get_run(parent).status == "CANCELLED"


def test_write_batch__completions_wake_a_waiter_once__at_the_last_end(stores):
    s = stores()
    s.migrate()
    s.create_run(new_run("p"))
    s.create_run(new_run("c1"))
    s.create_run(new_run("c2"))
    assert s.suspend(lease("p"), None, [], ["c1", "c2"], NOW)
    done = s.write_batch(
        Batch(
            completions=[
                Completion(lease("c2"), "SUCCEEDED", b"1", None, NOW + 2),
                Completion(lease("c1"), "FAILED", None, b"{}", NOW + 1),
                Completion(lease("c1"), "FAILED", None, b"{}", NOW + 1),  # acknowledged again
            ]
        )
    )
    assert done.completions == [None, None, None]
    row = s.get_run("p")
    assert row is not None
    assert (row.status, row.wake_at) == ("WAITING", NOW + 1)  # the last in the batch's order


# -- deduplication and queues --------------------------------------------------------------


def test_write_batch__dedup_conflict__returned_and_the_rest_of_the_batch_commits(stores):
    s = stores()
    s.migrate()

    def queued(run_id: str, dedup_id: str) -> NewRun:
        return dataclasses.replace(new_run(run_id, owner=None), queue="q", dedup_id=dedup_id)

    result = s.write_batch(
        Batch(
            runs=[
                queued("a", "d"),
                queued("b", "d"),
                queued("c", "e"),
                queued("a", "d"),
            ],  # a twice
            steps=[(lease("x"), step("x", 0))],
        )
    )
    a, b, c, again = result.runs
    assert isinstance(a, tuple)
    assert a[1] is True
    assert isinstance(b, DeduplicatedError)
    assert b.existing_id == "a"
    assert isinstance(c, tuple)
    assert c[1] is True
    assert isinstance(again, tuple)
    assert again[1] is False
    assert isinstance(result.steps[0], LeaseLostError)
    assert s.get_run("b") is None


def test_create_run__same_dedup_id_from_many_clients__one_created(threads, stores):
    clients = [stores() for _ in range(4)]
    clients[0].migrate()
    barrier = threading.Barrier(len(clients))

    def create(i: int) -> object:
        barrier.wait()
        try:
            return clients[i].create_run(
                dataclasses.replace(new_run(f"r{i}", owner=None), queue="q", dedup_id="d")
            )
        except DeduplicatedError as exc:
            return exc

    outcomes = list(threads.map(create, range(len(clients)), timeout=30))
    created = [o for o in outcomes if isinstance(o, tuple)]
    assert len(created) == 1
    winner = created[0][0].id
    assert all(o.existing_id == winner for o in outcomes if isinstance(o, DeduplicatedError))


def test_claim_runs__queues_listed_in_other_orders__no_deadlock_limits_hold(threads, stores):
    a = stores()
    a.migrate()
    for q in ("x", "y"):
        for i in range(30):
            run = new_run(f"{q}{i:02d}", owner=None, created_at=NOW + i)
            a.create_run(dataclasses.replace(run, queue=q))
    claimers = [stores() for _ in range(4)]
    for i in range(4):
        a.register_worker(worker(f"w{i}"))
    limits = [QueueLimits("x", concurrency=2), QueueLimits("y", concurrency=3)]
    barrier = threading.Barrier(4)
    claimed: list[str] = []

    def work(i: int) -> None:
        order = limits if i % 2 else limits[::-1]
        barrier.wait()
        for _ in range(40):
            got = claimers[i].claim_runs(f"w{i}", ["wf"], 4, NOW, TTL, order)
            counts = {(q, st): n for q, st, n in claimers[i].queue_counts()}
            assert counts.get(("x", "RUNNING"), 0) <= 2
            assert counts.get(("y", "RUNNING"), 0) <= 3
            claimed.extend(r.id for _, r in got)
            for lse, _ in got:
                claimers[i].complete_run(lse, "SUCCEEDED", b"1", None, NOW)

    list(threads.map(work, range(4), timeout=60))
    assert sorted(claimed) == sorted(f"{q}{i:02d}" for q in ("x", "y") for i in range(30))


# -- leases on the database's clock -------------------------------------------------------------


def test_claim_runs__claimer_clock_far_ahead__cannot_take_a_live_owners_run(stores, pg_settings):
    owner, skewed = stores(), stores()
    owner.migrate()
    assert owner.database_clock_leases
    wall = time.time()
    owner.register_worker(worker("owner", heartbeat_at=wall - 7200))  # its clock is behind
    owner.create_run(new_run("a", owner="owner"))
    assert owner.heartbeat("owner", wall - 7200)
    skewed.register_worker(worker("ahead", heartbeat_at=wall + 7200))
    # An hour ahead of everyone, the owner's heartbeat looks two hours old to this worker's
    # clock; the database's clock says it is fresh.
    assert skewed.claim_runs("ahead", ["wf"], 10, wall + 3600, TTL) == []
    assert skewed.claim_runs("ahead", ["wf"], 10, wall + 86400 * 365, TTL) == []
    # Once the owner stops heartbeating for the lease's length, on the database's clock, the
    # run is taken over.
    age_worker(pg_settings, "owner", TTL + 1)
    [(claimed, row)] = skewed.claim_runs("ahead", ["wf"], 10, wall + 3600, TTL)
    assert (claimed.worker_id, claimed.epoch, row.recoveries) == ("ahead", 2, 1)
    assert not any(w.heartbeat_at > time.time() + 60 for w in owner.list_workers())
