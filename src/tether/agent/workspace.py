"""Workspaces: an agent's working directory, checkpointed with its steps and restored anywhere.

    @app.workflow()
    async def fix_bug(repo: str) -> str:
        ws = Workspace(os.path.join(WORK_ROOT, tether.context().workflow_id))
        await clone(repo, str(ws.path))
        await ws.checkpoint()                 # durable: the tree as it is now
        await edit(str(ws.path))
        await ws.checkpoint()
        return (await sandbox.run_step(["pytest"], workspace=ws, timeout=600)).stdout

`checkpoint()` is a durable step. Its body walks the directory, hashes every file (SHA-256,
in 1 MiB chunks), stores the chunks the store does not hold yet, then stores the snapshot's
manifest (path, kind, mode, size, hash, chunks) the same way, content-addressed. The journal
entry is a `Snapshot` naming the manifest's hash, so a replay gets the same snapshot without
reading the disk, and an unchanged tree costs no new blob at all.

When a run is resumed (after a crash, on another worker, in another directory, or after it
was evicted while waiting), replay passes its recorded checkpoints without touching the disk;
the *last* recorded checkpoint of each workspace then brings the directory to its snapshot:
files written, changed files rewritten, files not in it deleted. So the code after it finds
the files exactly as they were at that checkpoint, wherever it runs. Changes made after the
last checkpoint are not kept: checkpoint after every step that changes files you need.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tether.agent import workspace_tree as tree
from tether.agent.workspace_tree import (
    Entry,
    Limits,
    Restored,
    WorkspaceChangedError,
    WorkspaceError,
)
from tether.codec import Codec
from tether.engine import runtime
from tether.errors import CorruptRowError
from tether.store.base import Store

__all__ = [
    "Entry",
    "Restored",
    "Snapshot",
    "Workspace",
    "WorkspaceChangedError",
    "WorkspaceError",
]

_FORMAT = 1
_MARK = b"B"  # first byte of a blob before codecs: binary data never looks like a codec header
_BLOB_LIMIT = 4 * tree.CHUNK  # a chunk after compression or encryption
_MISSING_PER_CALL = 5000


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """A checkpoint of a workspace, as journaled.

    Attributes:
        id: the SHA-256 of the manifest: two snapshots of identical trees have the same id.
        files: how many files it holds.
        size: their total size in bytes.
        manifest: the hashes of the stored chunks of the manifest, in order.
        new_blobs: how many blobs this checkpoint added to the store (0: nothing changed
            that any run had not stored already).
        new_bytes: their size before codecs.
    """

    id: str
    files: int
    size: int
    manifest: tuple[str, ...]
    new_blobs: int = 0
    new_bytes: int = 0


class Workspace:
    """An agent's working directory whose snapshots are journaled with the run.

    Create it in workflow code, with the directory this worker uses (it may differ from
    worker to worker) and a name that is the same on every replay:

        ws = Workspace(f"/srv/agents/{tether.context().workflow_id}")

    Args:
        path: the directory (created on first use if missing).
        name: tells apart the workspaces of one run; part of the checkpoint step's name.
        exclude: patterns of paths neither snapshotted nor touched by a restore: without `/`
            a name anywhere (`.git`, `*.pyc`, `node_modules`), with `/` a relative path
            (`build/*`).
        max_file_bytes: the largest file a checkpoint accepts.
        max_total_bytes: the most file bytes in one snapshot.
        max_files: the most files in one snapshot.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str = "workspace",
        exclude: Sequence[str] = (),
        max_file_bytes: int = 256 << 20,
        max_total_bytes: int = 4 << 30,
        max_files: int = 200_000,
    ) -> None:
        if min(max_file_bytes, max_total_bytes, max_files) < 1:
            raise WorkspaceError("a workspace's limits must be at least 1")
        self.path = Path(path).absolute()
        self.name = name
        self.exclude = tuple(exclude)
        self.limits = Limits(max_file_bytes, max_total_bytes, max_files)
        self.latest: Snapshot | None = None
        """The snapshot of this workspace's last checkpoint in this run, if any."""
        self._step_name = f"tether.workspace.checkpoint:{name}"
        self._step = runtime.step(name=self._step_name)(self._take)
        self._ran = False

    # -- in workflow code ---------------------------------------------------------------------

    async def checkpoint(self) -> Snapshot:
        """Snapshot the directory now, durably; return the journaled `Snapshot`.

        Only content the store does not hold yet is written. On replay the recorded snapshot
        is returned without reading the disk, and the last recorded checkpoint restores it.

        Raises:
            WorkspaceError: a file is over a limit, or a symlink points outside the workspace.
        """
        self._ran = False
        snapshot: Snapshot = await self._step()
        self.latest = snapshot
        if not self._ran and not runtime.recorded_ahead(self._step_name):
            await self._materialize(snapshot)  # the last checkpoint replay passes
        return snapshot

    async def restore(self, snapshot: Snapshot | None = None) -> Restored:
        """Bring the directory to `snapshot` (default: this workspace's latest checkpoint).

        Files missing or changed are written, files not in the snapshot are deleted,
        excluded paths are left alone. During replay, a restore that a later recorded
        checkpoint supersedes does nothing.

        Raises:
            WorkspaceError: no snapshot was given and none was taken yet, or the snapshot's
                blobs are missing or damaged.
        """
        target = snapshot if snapshot is not None else self.latest
        if target is None:
            raise WorkspaceError(
                f"workspace {self.name!r} has no checkpoint in this run yet; call "
                "`await ws.checkpoint()` first, or pass the snapshot to restore"
            )
        if runtime.recorded_ahead(self._step_name):
            return Restored()
        return await self._materialize(target)

    async def manifest(self, snapshot: Snapshot | None = None) -> list[Entry]:
        """Return the entries of `snapshot` (default: the latest), sorted by path."""
        target = snapshot if snapshot is not None else self.latest
        if target is None:
            raise WorkspaceError(f"workspace {self.name!r} has no checkpoint in this run yet")
        blobs = _Blobs(runtime.services("Workspace.manifest()"))
        return await asyncio.to_thread(blobs.manifest, target)

    # -- the checkpoint step and the restore ------------------------------------------------

    async def _take(self) -> Snapshot:
        self._ran = True
        blobs = _Blobs(runtime.services("Workspace.checkpoint()"))
        return await asyncio.to_thread(self._snapshot, blobs)

    def _snapshot(self, blobs: _Blobs) -> Snapshot:
        with tree.open_root(str(self.path), create=True) as root:
            entries = tree.scan(root, self.exclude, self.limits, hashed=True)
            missing = blobs.missing(c for e in entries for c in e.chunks)
            new_blobs, new_bytes = blobs.put(tree.missing_pieces(root, entries, missing))
        data = _encode_manifest(entries)
        pieces = [data[i : i + tree.CHUNK] for i in range(0, len(data), tree.CHUNK)] or [b""]
        keyed = [(hashlib.sha256(p).hexdigest(), p) for p in pieces]
        todo = blobs.missing(k for k, _ in keyed)
        more, more_bytes = blobs.put(iter([(k, p) for k, p in keyed if k in todo]))
        files = [e for e in entries if e.kind == tree.FILE]
        return Snapshot(
            id=hashlib.sha256(data).hexdigest(),
            files=len(files),
            size=sum(e.size for e in files),
            manifest=tuple(k for k, _ in keyed),
            new_blobs=new_blobs + more,
            new_bytes=new_bytes + more_bytes,
        )

    async def _materialize(self, snapshot: Snapshot) -> Restored:
        blobs = _Blobs(runtime.services("Workspace.restore()"))
        return await asyncio.to_thread(self._restore_blocking, blobs, snapshot)

    def _restore_blocking(self, blobs: _Blobs, snapshot: Snapshot) -> Restored:
        entries = blobs.manifest(snapshot)
        with tree.open_root(str(self.path), create=True) as root:
            return tree.materialize(root, entries, self.exclude, blobs.fetch)


class _Blobs:
    """Chunks in the store: content-addressed, through the app's codecs, verified on read."""

    def __init__(self, services: runtime.Services) -> None:
        self.store: Store = services.store
        self.codec = Codec(services.codec.codecs, _BLOB_LIMIT)

    def missing(self, hashes: Iterator[str]) -> set[str]:
        keys = list(dict.fromkeys(hashes))
        out: set[str] = set()
        for start in range(0, len(keys), _MISSING_PER_CALL):
            out.update(self.store.missing_blobs(keys[start : start + _MISSING_PER_CALL]))
        return out

    def put(self, pieces: Iterator[tuple[str, bytes]]) -> tuple[int, int]:
        count = size = 0
        for batch in tree.batches(pieces):
            sealed = [(k, self.codec.seal(_MARK + d, _what(k), f"blob/{k}")) for k, d in batch]
            count += self.store.put_blobs(sealed)
            size += sum(len(d) for _, d in batch)
        return count, size

    def fetch(self, hashes: Sequence[str]) -> Mapping[str, bytes]:
        stored = self.store.get_blobs(hashes)
        out: dict[str, bytes] = {}
        for key in hashes:
            if key not in stored:
                raise WorkspaceError(
                    f"blob {key} of the snapshot is not in the store; the snapshot cannot be "
                    "restored (was the database restored from an older backup?)"
                )
            raw = self.codec.open(stored[key], _what(key), f"blob/{key}")
            data = raw[1:]
            if raw[:1] != _MARK or hashlib.sha256(data).hexdigest() != key:
                raise CorruptRowError(f"{_what(key)} does not match its hash; the row is damaged")
            out[key] = data
        return out

    def manifest(self, snapshot: Snapshot) -> list[Entry]:
        parts = self.fetch(snapshot.manifest)
        data = b"".join(parts[k] for k in snapshot.manifest)
        if hashlib.sha256(data).hexdigest() != snapshot.id:
            raise CorruptRowError(f"the manifest of snapshot {snapshot.id} does not match its id")
        return _decode_manifest(data)


def _what(key: str) -> str:
    return f"workspace blob {key}"


# -- the manifest -------------------------------------------------------------------------------


def _encode_manifest(entries: Sequence[Entry]) -> bytes:
    rows: list[dict[str, Any]] = []
    for e in entries:
        if e.kind == tree.FILE:
            row: dict[str, Any] = {"p": e.path, "k": "f", "m": e.mode, "s": e.size, "h": e.sha256}
            if e.chunks != _implied_chunks(e.size, e.sha256):
                row["c"] = list(e.chunks)
        elif e.kind == tree.DIR:
            row = {"p": e.path, "k": "d", "m": e.mode}
        else:
            row = {"p": e.path, "k": "l", "t": e.target}
        rows.append(row)
    return json.dumps({"format": _FORMAT, "entries": rows}, separators=(",", ":")).encode()


def _implied_chunks(size: int, sha256: str) -> tuple[str, ...]:
    """A file of one chunk is its own chunk; an empty file has none."""
    if size == 0:
        return ()
    return (sha256,) if size <= tree.CHUNK else ()


def _decode_manifest(data: bytes) -> list[Entry]:
    try:
        doc = json.loads(data)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"manifest format {doc.get('format')!r} is not {_FORMAT}")
        return [_decode_entry(row) for row in doc["entries"]]
    except WorkspaceError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptRowError(f"a workspace manifest cannot be read: {exc}") from None


def _decode_entry(row: Mapping[str, Any]) -> Entry:
    path = tree.check_path(str(row["p"]))
    kind = row["k"]
    if kind == "f":
        size, sha = int(row["s"]), str(row["h"])
        chunks = tuple(row.get("c") or _implied_chunks(size, sha))
        return Entry(path, tree.FILE, int(row["m"]) & 0o777, size, sha, chunks)
    if kind == "d":
        return Entry(path, tree.DIR, int(row["m"]) & 0o777)
    if kind == "l":
        return Entry(path, tree.LINK, target=tree.check_link(path, str(row["t"])))
    raise CorruptRowError(f"a workspace manifest has an entry of unknown kind {kind!r}")
