"""A full disk under SQLite: a named error, nothing partial, runs paused and then finished.

The database lives on a 2 MiB tmpfs that a filler file fills up while runs are in flight. Their
checkpoints are refused with `StoreFullError`; they are not failed, the database stays intact
(`PRAGMA integrity_check`), and once the filler is removed every run goes on to its end.
Mounting needs root (as here and in CI); where it is not permitted the test says so and skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import tether
from tests.conftest import FAST

pytestmark = pytest.mark.timeout(180)

CHUNK = 40_000  # each step result: the WAL must grow to take it


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        why = f"mounting a tmpfs is not permitted here ({done.stderr.strip() or done.returncode})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; under CI the disk-full test must run (as root)")
        pytest.skip(f"{why}; the disk-full test needs root, as in CI")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> int:
    """Write `path` until the disk is full; return the bytes written."""
    written = 0
    block = b"\xaa" * 16_384
    with path.open("wb", buffering=0) as f:  # unbuffered: nothing left to flush on close
        while True:
            try:
                written += f.write(block) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError), path.open("ab", buffering=0) as f:  # the last bytes
        f.write(b"\xaa")
    return written


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def test_disk_full__named_error_runs_pause_then_finish(
    small_disk: Path, caplog: pytest.LogCaptureFixture
):
    db = small_disk / "tether.db"
    settings = tether.Settings(database_url=f"sqlite:///{db}", store_retry_timeout=0.3, **FAST)  # type: ignore[arg-type]
    app = tether.App(settings=settings)
    gate = asyncio.Event()
    runs: dict[tuple[str, int], int] = {}

    @app.step(name="hold")
    async def hold() -> None:
        await gate.wait()

    @app.step(name="chunk")
    async def chunk(run: str, i: int) -> str:
        runs[(run, i)] = runs.get((run, i), 0) + 1
        return f"{run}:{i}:" + "z" * CHUNK

    @app.workflow(name="writer")
    async def writer(run: str, pad: str) -> int:
        await hold()
        total = 0
        for i in range(6):
            total += len(await chunk(run, i))
        return total

    ids = [f"w{i}" for i in range(3)]
    try:
        async with app:
            for run_id in ids:
                await app.start(writer, run_id, "", id=run_id)
            filler = small_disk / "filler"
            filled = fill(filler)
            gate.set()
            # A start needs room too: refused with the named error, nothing written.
            with pytest.raises(tether.StoreFullError, match="disk holding the database is full"):
                await app.start(writer, "late", "p" * 100_000, id="late")
            assert app.store.get_run("late") is None
            # Let the runs meet the full disk: their checkpoints are refused, and retried.
            await asyncio.sleep(1.5)
            statuses = {app.store.get_run(r).status for r in ids}  # type: ignore[union-attr]
            assert statuses <= {"RUNNING", "PENDING"}, statuses  # paused, never failed
            assert integrity(db) == "ok"
            # The refused checkpoints are retried (until they land, or the worker is fenced),
            # saying why.
            said = [r.getMessage() for r in caplog.records]
            assert any("disk holding the database is full" in m for m in said), said[-5:]
            filler.unlink()
            for run_id in ids:
                result = await app.retrieve(run_id).result(timeout=90)
                assert result == 6 * (len(f"{run_id}:0:") + CHUNK)
            late = await app.start(writer, "late", "p" * 100_000, id="late")
            assert await late.result(timeout=60) == 6 * (len("late:0:") + CHUNK)
    finally:
        app.close()
    assert integrity(db) == "ok"
    assert filled > 0
    assert all(runs[(r, i)] >= 1 for r in ids for i in range(6))
    print(f"filler {filled:,} bytes; step bodies run {sum(runs.values())} times for 24 steps")
