"""Store contract: a backup is one consistent snapshot; a restore is all or nothing."""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.errors import BackupError, StoreError
from tether.settings import Settings
from tether.store import open_store
from tether.store.backup import restore_backup, write_backup
from tether.store.base import BACKUP_TABLES, GENESIS, STEP_ERROR, AuditRow, NewMessage, Store

from .helpers import NOW, lease, new_run, step, worker


@pytest.fixture
def target(settings: Settings, tmp_path: Path) -> Iterator[Store]:
    """A second, empty database of the same kind."""
    if settings.database_url and settings.database_url.startswith("sqlite"):
        other = dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path / 'target.db'}")
    else:
        other = dataclasses.replace(settings, pg_schema=f"t_{uuid.uuid4().hex[:12]}")
    s = open_store(other)
    yield s
    s.close()
    if other.database_url and other.database_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(other.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other.pg_schema}" CASCADE')


def populate(store: Store) -> None:
    """Rows in every table: runs in several states, journals, messages, events, waits."""
    store.register_worker(worker("w1"))
    store.create_run(new_run("done"))
    store.record_steps([(lease("done"), step("done", 0, output=b"\x00\x01binary\xff"))])
    store.record_steps([(lease("done"), step("done", 1, status=STEP_ERROR, output=None))])
    store.complete_run(lease("done"), "SUCCEEDED", b'"ok"', None, NOW + 1)
    store.create_run(new_run("done-later"))
    store.create_run(new_run("waiting"))
    store.record_steps([(lease("waiting"), step("waiting", 0))])
    assert store.suspend(lease("waiting"), NOW + 3600, ["inbox"], ["done-later"], NOW + 2)
    store.create_run(new_run("pending", owner=None))
    store.send_message(NewMessage("done-later", "t", b'"first"', NOW, key="k1"))
    store.send_message(NewMessage("done-later", "t", b'"second"', NOW + 0.5))
    assert store.consume_message(lease("done-later"), 0, "tether.recv", "t", NOW + 1) is not None
    ev = step("done-later", 1, name="tether.set_event", output=b"null")
    store.set_event(lease("done-later"), ev, "progress", b'{"done": 1}')
    assert store.advance_schedule("nightly", None, NOW - 86400)
    first = AuditRow("mission/done", 0, "launch", b'{"n":0}', GENESIS, "h0", NOW)
    store.append_audit(
        [first, AuditRow("mission/done", 1, "note", b"\x00", "h0", "h1", NOW + 1)], NOW + 1
    )
    store.put_blobs([("a" * 64, b"\x00blob\xff")])


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in BACKUP_TABLES}
    store.backup(lambda table, values: rows[table].append(values))
    return rows


def backup_text(store: Store) -> str:
    buffer = io.StringIO()
    write_backup(store, buffer, now=NOW)
    return buffer.getvalue()


def test_backup_restore__every_table_round_trips_exactly(store: Store, target: Store):
    populate(store)
    before = snapshot(store)
    assert all(before[t] for t in BACKUP_TABLES), {t: len(r) for t, r in before.items()}
    summary = restore_backup(target, io.StringIO(backup_text(store)))
    assert summary.rows == {t: len(r) for t, r in before.items()}
    assert snapshot(target) == before
    # The restored database works: the waiting run is woken by a message, ids continue.
    assert target.send_message(NewMessage("waiting", "inbox", b'"go"', NOW + 5))
    assert target.get_event("done-later", "progress") == b'{"done": 1}'
    [(message_id, *_)] = [r for r in snapshot(target)["messages"] if r[2] == "inbox"]
    assert message_id > max(r[0] for r in before["messages"])


def test_backup__one_snapshot_while_writers_go_on(store: Store, make_store: Any):
    populate(store)
    writer: Store = make_store()
    seen: list[str] = []

    def sink(table: str, values: tuple[Any, ...]) -> None:
        if not seen:  # the snapshot is taken: write to every table meanwhile
            writer.create_run(new_run("late"))
            writer.send_message(NewMessage("done-later", "t", b'"late"', NOW + 9))
            writer.register_worker(worker("w2"))
        seen.append(f"{table}:{values[0]}")

    store.backup(sink)
    assert "runs:late" not in seen
    assert "workers:w2" not in seen
    assert len([s for s in seen if s.startswith("messages:")]) == 2
    assert writer.get_run("late") is not None


def test_restore__non_empty_target__refused_unless_replace(store: Store, target: Store):
    populate(store)
    text = backup_text(store)
    target.migrate()
    target.create_run(new_run("already-here"))
    with pytest.raises(StoreError, match=r"already holds tether data.*--replace"):
        restore_backup(target, io.StringIO(text))
    assert target.get_run("already-here") is not None
    assert target.get_run("done") is None
    restore_backup(target, io.StringIO(text), replace=True)
    assert target.get_run("already-here") is None
    assert snapshot(target) == snapshot(store)


def test_restore__damaged_or_truncated_file__nothing_restored(store: Store, target: Store):
    populate(store)
    lines = backup_text(store).splitlines(keepends=True)
    truncated = "".join(lines[:-1])
    with pytest.raises(BackupError, match="truncated"):
        restore_backup(target, io.StringIO(truncated))
    assert target.get_run("done") is None
    altered = "".join(lines).replace('"pending"', '"pendinG"')
    with pytest.raises(BackupError, match="checksum"):
        restore_backup(target, io.StringIO(altered))
    assert target.get_run("done") is None
    with pytest.raises(BackupError, match="not a tether backup"):
        restore_backup(target, io.StringIO("hello\n"))
    header = json.loads(lines[0])
    header["schema_version"] = 999
    with pytest.raises(BackupError, match="newer than this tether knows"):
        restore_backup(target, io.StringIO(json.dumps(header) + "\n" + "".join(lines[1:])))
    header["schema_version"] = 2
    header["tables"]["runs"].append("mystery")
    with pytest.raises(BackupError, match="mystery"):
        restore_backup(target, io.StringIO(json.dumps(header) + "\n"))


def test_restore__error_midway__rolls_everything_back(store: Store, target: Store):
    populate(store)
    rows = snapshot(store)

    def failing() -> Iterator[tuple[str, list[Any]]]:
        for table, values in rows.items():
            for row in values:
                yield table, list(row)
        raise BackupError("the source broke off")

    with pytest.raises(BackupError, match="broke off"):
        target.restore(BACKUP_TABLES, failing())
    assert all(not r for r in snapshot(target).values())
    # And a bad row (a duplicate key) rolls back as a whole too.
    duplicate = [("runs", list(rows["runs"][0])), ("runs", list(rows["runs"][0]))]
    with pytest.raises(StoreError):
        target.restore(BACKUP_TABLES, iter(duplicate))
    assert all(not r for r in snapshot(target).values())


def test_backup_file__portable_json_lines(store: Store):
    populate(store)
    lines = backup_text(store).splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "tether-backup"
    assert header["format_version"] == 1
    assert header["source"] == store.dialect
    assert header["schema_version"] == store.check_schema()
    end = json.loads(lines[-1])
    assert end["end"] is True
    assert sum(end["rows"].values()) == len(lines) - 2
    done = next(
        json.loads(ln)[1]
        for ln in lines[1:-1]
        if json.loads(ln)[:1] == ["runs"] and json.loads(ln)[1][0] == "done"
    )
    columns = header["tables"]["runs"]
    assert done[columns.index("created_at")] == NOW
    assert done[columns.index("output")] == {"b64": "Im9rIg=="}  # b'"ok"'
