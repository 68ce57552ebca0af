"""Workspaces: checkpoints journaled with the run, restored on whichever worker resumes it
(both backends). The SIGKILL version is `test_resume_after_sigkill__...` at the end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import Snapshot, Workspace, WorkspaceError
from tether.agent import workspace_tree as tree
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Store

BIG = 3 * tree.CHUNK + 12345  # four chunks


def big_content(seed: int) -> bytes:
    return bytes((i * seed) % 251 for i in range(BIG))


def read_tree(root: Path) -> dict[str, str]:
    """Every file under root (text or a hash of binary), by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            data = path.read_bytes()
            out[rel] = data.decode() if len(data) < 1000 else f"<{len(data)} bytes>"
        elif path.is_dir():
            out[rel + "/"] = oct(path.stat().st_mode & 0o777)
    return out


def define(
    app: tether.App, where: dict[str, Path], gate: asyncio.Event | None, ledger: Counter[str]
):
    """An agent that edits files in three steps, with a checkpoint after the first two."""

    @app.step(name="write")
    def write(root: str, files: dict[str, str]) -> None:
        ledger["write"] += 1
        for rel, text in files.items():
            path = Path(root, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(
                big_content(int(text[4:])) if text.startswith("big:") else text.encode()
            )

    @app.step(name="remove")
    def remove(root: str, rel: str) -> None:
        os.unlink(Path(root, rel))

    @app.step(name="block")
    async def block() -> None:
        if gate is not None:
            await gate.wait()

    @app.step(name="look")
    def look(root: str) -> dict[str, str]:
        return read_tree(Path(root))

    @app.workflow(name="agent")
    async def agent() -> dict[str, Any]:
        ws = Workspace(where["dir"] / tether.context().workflow_id, exclude=["*.tmp"])
        root = str(ws.path)
        write(root, {"a.txt": "A1", "sub/b.txt": "B1", "big.bin": "big:7", "keep.sh": "#!"})
        first = await ws.checkpoint()
        write(root, {"a.txt": "A2", "sub/new.txt": "N"})
        remove(root, "sub/b.txt")
        second = await ws.checkpoint()
        write(root, {"after.txt": "not checkpointed"})
        await block()
        return {"first": first, "second": second, "files": look(root)}

    return agent


async def wait_for_steps(app: tether.App, run_id: str, n: int) -> None:
    for _ in range(1000):
        if len(app.store.load_steps(run_id)) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached {n} steps")


EXPECTED = {
    "a.txt": "A2",
    "big.bin": f"<{BIG} bytes>",
    "keep.sh": "#!",
    "sub/": "0o755",
    "sub/new.txt": "N",
}


async def test_resume__other_worker_other_empty_dir__finds_last_checkpoint(
    make_app: MakeApp, tmp_path: Path
):
    ledger: Counter[str] = Counter()
    first_dir, second_dir = tmp_path / "worker-1", tmp_path / "worker-2"
    first = make_app()
    define(first, {"dir": first_dir}, asyncio.Event(), ledger)
    async with first:
        await first.start("agent", id="ws-1")
        await wait_for_steps(first, "ws-1", 6)  # blocked in `block`, after the 2nd checkpoint
    assert (first_dir / "ws-1" / "after.txt").exists()

    second = make_app()
    define(second, {"dir": second_dir}, None, ledger)
    async with second:
        result = await second.retrieve("ws-1").result(timeout=30)

    assert result["files"] == EXPECTED  # the second checkpoint, not what came after it
    assert read_tree(second_dir / "ws-1") == EXPECTED
    assert ledger["write"] == 3  # nothing recorded ran again
    one, two = Snapshot(**result["first"]), Snapshot(**result["second"])
    assert (one.files, two.files) == (4, 4)
    # Blobs: a, b, keep, big's 4 chunks, manifest 1; then a (A2), new, manifest 2.
    assert (one.new_blobs, two.new_blobs) == (8, 3)
    assert second.store.blob_stats()[0] == 11


async def test_checkpoint__unchanged_tree__stores_nothing_and_same_id(
    make_app: MakeApp, tmp_path: Path
):
    app = make_app()

    @app.workflow(name="twice")
    async def twice() -> list[Snapshot]:
        ws = Workspace(tmp_path / "ws")
        ws.path.mkdir()
        (ws.path / "f.txt").write_text("same")
        return [await ws.checkpoint(), await ws.checkpoint()]

    async with app:
        one, two = await (await app.start(twice, id="t")).result(timeout=30)
    assert one.id == two.id
    assert (one.new_blobs, two.new_blobs) == (2, 0)
    assert app.store.blob_stats()[0] == 2


async def test_restore__explicit_earlier_snapshot__rewrites_and_deletes(
    make_app: MakeApp, tmp_path: Path
):
    app = make_app()
    root = tmp_path / "ws"

    @app.workflow(name="back")
    async def back() -> dict[str, Any]:
        ws = Workspace(root, exclude=["cache"])
        (root / "d").mkdir(parents=True)
        (root / "d" / "x.txt").write_text("x1")
        (root / "cache").mkdir()
        (root / "cache" / "c").write_text("excluded")
        early = await ws.checkpoint()
        (root / "d" / "x.txt").write_text("x2")
        (root / "d" / "extra").mkdir()
        (root / "d" / "extra" / "y.txt").write_text("y")
        (root / "cache" / "c").write_text("excluded, changed")
        await ws.checkpoint()
        done = await ws.restore(early)
        return {"written": done.written, "deleted": done.deleted, "files": read_tree(root)}

    async with app:
        result = await (await app.start(back, id="b")).result(timeout=30)
    assert result["files"] == {
        "cache/": "0o755",
        "cache/c": "excluded, changed",
        "d/": "0o755",
        "d/x.txt": "x1",
    }
    assert (result["written"], result["deleted"]) == (1, 2)


async def test_restore__modes_links_and_empty_dirs__kept(make_app: MakeApp, tmp_path: Path):
    app = make_app()
    src, dst = tmp_path / "src", tmp_path / "dst"

    @app.workflow(name="modes")
    async def modes() -> Snapshot:
        (src / "bin").mkdir(parents=True)
        (src / "empty").mkdir(mode=0o700)
        (src / "bin" / "run").write_text("#!/bin/sh\n")
        (src / "bin" / "run").chmod(0o750)
        (src / "link").symlink_to("bin/run")
        return await Workspace(src).checkpoint()

    @app.workflow(name="into")
    async def into(snapshot: Snapshot) -> dict[str, str]:
        await Workspace(dst).restore(snapshot)
        return read_tree(dst)

    async with app:
        snapshot = await (await app.start(modes, id="m")).result(timeout=30)
        copied = await (await app.start(into, snapshot, id="i")).result(timeout=30)
    assert copied == read_tree(src)
    assert copied["empty/"] == "0o700"
    assert copied["link"] == "-> bin/run"
    assert oct((dst / "bin" / "run").stat().st_mode & 0o777) == "0o750"


async def test_checkpoint__file_over_limit__clear_error_nothing_stored(
    make_app: MakeApp, tmp_path: Path
):
    app = make_app()

    @app.workflow(name="huge")
    async def huge() -> None:
        ws = Workspace(tmp_path / "ws", max_file_bytes=1000)
        ws.path.mkdir()
        (ws.path / "small").write_text("ok")
        (ws.path / "large.bin").write_bytes(b"x" * 1001)
        await ws.checkpoint()

    async with app:
        handle = await app.start(huge, id="h")
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=30)
    cause = info.value.cause
    assert isinstance(cause, WorkspaceError)
    assert cause.path == "large.bin"
    assert "max_file_bytes" in str(cause)
    assert app.store.blob_stats() == (0, 0)


async def test_checkpoint__symlink_out_of_root__refused(make_app: MakeApp, tmp_path: Path):
    app = make_app()
    (tmp_path / "secret").write_text("s")

    @app.workflow(name="escape")
    async def escape() -> None:
        ws = Workspace(tmp_path / "ws")
        (ws.path / "d").mkdir(parents=True)
        (ws.path / "d" / "out").symlink_to("../../secret")
        await ws.checkpoint()

    async with app:
        with pytest.raises(tether.WorkflowFailedError, match="outside the workspace"):
            await (await app.start(escape, id="e")).result(timeout=30)


async def test_restore__planted_symlink_dir__writes_stay_inside(make_app: MakeApp, tmp_path: Path):
    """A directory replaced by a symlink to elsewhere is removed, never written through."""
    app = make_app()
    root, outside = tmp_path / "ws", tmp_path / "outside"
    outside.mkdir()

    @app.workflow(name="plant")
    async def plant() -> dict[str, str]:
        ws = Workspace(root)
        (root / "d").mkdir(parents=True)
        (root / "d" / "f.txt").write_text("inside")
        snap = await ws.checkpoint()
        (root / "d" / "f.txt").unlink()
        (root / "d").rmdir()
        (root / "d").symlink_to(outside)
        await ws.restore(snap)
        return read_tree(root)

    async with app:
        files = await (await app.start(plant, id="p")).result(timeout=30)
    assert files == {"d/": "0o755", "d/f.txt": "inside"}
    assert list(outside.iterdir()) == []


def test_manifest_paths__traversal_and_absolute__refused():
    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b", "", "a/./b", "x\x00y"):
        with pytest.raises(WorkspaceError):
            tree.check_path(bad)
    for path, target in (("a", "/etc"), ("a/b", "../../x"), ("l", "..")):
        with pytest.raises(WorkspaceError):
            tree.check_link(path, target)
    assert tree.check_link("a/b", "../c") == "../c"


async def test_restore__no_checkpoint_yet__clear_error(make_app: MakeApp, tmp_path: Path):
    app = make_app()

    @app.workflow(name="early")
    async def early() -> None:
        await Workspace(tmp_path / "ws").restore()

    async with app:
        with pytest.raises(tether.WorkflowFailedError, match="no checkpoint"):
            await (await app.start(early, id="x")).result(timeout=30)


# -- SIGKILL: the worker dies, another worker in another empty directory resumes ---------------

AGENT = Path(__file__).parent / "apps" / "workspace_agent.py"


def env_for(settings: Settings, workdir: Path, hang: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["TETHER_DATABASE_URL"] = settings.database_url or ""
    env["TETHER_PG_SCHEMA"] = settings.pg_schema
    env["TETHER_POLL_INTERVAL"] = "0.2"
    env["WS_ROOT"] = str(workdir)
    env["WS_HANG"] = "1" if hang else "0"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path])
    return env


def wait_until(check, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {check}")


def journal(store: Store, run_id: str) -> list[str]:
    return [f"{r.seq}:{r.name}:{r.status}" for r in store.load_steps(run_id)]


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_resume_after_sigkill__other_empty_dir__finds_last_checkpoint(
    settings: Settings, tmp_path: Path
):
    store = open_store(settings)
    store.migrate()
    try:
        proc = subprocess.Popen(
            [sys.executable, str(AGENT)],
            env=env_for(settings, tmp_path / "machine-1", hang=True),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Killed once the step after the third checkpoint is under way (it hangs there).
        wait_until(lambda: proc.poll() is not None or len(store.load_steps("agent-1")) >= 7)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert (tmp_path / "machine-1" / "agent-1" / "lost.txt").exists()
        blobs_before = store.blob_stats()[0]

        done = subprocess.run(
            [sys.executable, str(AGENT)],
            env=env_for(settings, tmp_path / "machine-2", hang=False),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        steps = journal(store, "agent-1")
        stats = store.blob_stats()
        store.close()
    on_disk = read_tree(tmp_path / "machine-2" / "agent-1")
    expected = {
        "data.bin": "<3000000 bytes>",
        "notes.md": "v3",
        "src/": "0o755",
        "src/main.py": "print(2)",
    }
    assert result["seen"] == expected, steps  # the third checkpoint; lost.txt came after it
    assert on_disk == expected
    # Blobs: notes v1, main v1, data's 3 chunks and a manifest; main v2 and a manifest; notes
    # v3 and a manifest. The resumed run's checkpoint of the restored tree is the third
    # checkpoint's tree again: the same id, and not one blob more.
    snaps = [Snapshot(**s) for s in result["snapshots"]]
    assert [s.new_blobs for s in snaps] == [6, 2, 2, 0]
    assert snaps[3].id == snaps[2].id
    assert blobs_before == stats[0] == 10
