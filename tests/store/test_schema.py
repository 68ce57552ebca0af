"""Contract: migrations and driver-error translation (both backends)."""

from __future__ import annotations

import pytest

from tether.errors import SchemaVersionError, StoreError
from tether.settings import Settings
from tether.store import migrate, open_store
from tether.store.base import Store


def test_migrate__twice__is_a_no_op(store: Store):
    assert store.migrate() == migrate.latest(store.dialect)
    assert store.check_schema() == migrate.latest(store.dialect)


def test_check_schema__unmigrated__raises_with_advice(settings: Settings):
    fresh = open_store(settings)
    try:
        with pytest.raises(SchemaVersionError, match="tether migrate"):
            fresh.check_schema()
    finally:
        fresh.close()


def test_migrate__database_newer_than_code__refused(store: Store, monkeypatch):
    latest = migrate.latest(store.dialect)
    monkeypatch.setattr(migrate, "latest", lambda dialect: latest - 1)
    monkeypatch.setattr(
        migrate, "migrations", lambda dialect, _orig=migrate.migrations: _orig(dialect)[:-1]
    )
    with pytest.raises(SchemaVersionError, match="upgrade tether"):
        store.migrate()


def test_database_time__close_to_local_clock(store: Store):
    import time

    assert abs(store.database_time() - time.time()) < 5


def test_closed_store__raises_store_error_not_driver_error(settings: Settings):
    s = open_store(settings)
    s.migrate()
    s.close()
    with pytest.raises(StoreError):
        s.get_run("a")
