"""Shared fixtures: real SQLite files and a real PostgreSQL server.

PostgreSQL: `TETHER_TEST_PG_URL` (default postgresql://postgres@127.0.0.1:5432/postgres) names
a server where this session creates a fresh database, dropped at the end; each test gets its
own schema in it. If the server is down the PostgreSQL tests fail: they never skip quietly.
`TETHER_SKIP_PG=1` deselects them for a local run without a server (never set it in CI).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tether
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Store

PG_ADMIN_URL = os.environ.get("TETHER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TETHER_SKIP_PG") == "1":
        if os.environ.get("CI") == "true":
            raise pytest.UsageError("TETHER_SKIP_PG=1 is not allowed under CI")
        kept = [i for i in items if "postgres" not in i.keywords]
        config.hook.pytest_deselected(items=[i for i in items if "postgres" in i.keywords])
        items[:] = kept


def _with_dbname(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; yields its URL."""
    import psycopg

    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); start it "
            "(.ci/run does) or set TETHER_SKIP_PG=1 for a local run without it"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _with_dbname(PG_ADMIN_URL, name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_settings(pg_database: str) -> Iterator[Settings]:
    """Settings for a fresh schema of the session's PostgreSQL database, dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield Settings(database_url=pg_database, pg_schema=schema)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def backend_settings(request: pytest.FixtureRequest, tmp_path: Path, **options: object) -> Settings:
    """Settings for the backend named by the test's `backend` parameter."""
    if request.param == "sqlite":
        return Settings(database_url=f"sqlite:///{tmp_path / 'tether.db'}", **options)  # type: ignore[arg-type]
    base: Settings = request.getfixturevalue("pg_settings")
    return Settings(database_url=base.database_url, pg_schema=base.pg_schema, **options)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh database on each backend."""
    return backend_settings(request, tmp_path)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """A migrated store on a fresh database, on each backend."""
    s = open_store(settings)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def make_store(settings: Settings) -> Iterator[object]:
    """Open more stores on the same database (other 'processes')."""
    opened: list[Store] = []

    def make() -> Store:
        s = open_store(settings)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


FAST = {"poll_interval": 0.05, "heartbeat_interval": 0.5, "lease_ttl": 2.0, "wait_in_memory": 0.2}
# Tests that model a crash by leaving `async with app` mid-step cut the runs off at once.
FAST["shutdown_grace"] = 0.0

MakeApp = Callable[..., tether.App]


@pytest.fixture
def make_app(settings: Settings) -> Iterator[MakeApp]:
    """Build Apps on the test's database (several Apps = several workers or clients)."""
    apps: list[tether.App] = []

    def make(**options: object) -> tether.App:
        app = tether.App(settings=dataclasses.replace(settings, **{**FAST, **options}))  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: MakeApp) -> tether.App:
    return make_app()
