"""A workspace's files on disk: scanning, hashing and writing, never leaving the root.

Every path is walked from the root's directory descriptor one component at a time with
`O_NOFOLLOW`, so a symlink (planted by the agent, or swapped in while tether works) can never
lead a read or a write outside the root. Symlinks are recorded as links, never followed, and
only when their target stays inside the root. Other special files (sockets, FIFOs, devices)
are skipped.

Files are read in fixed chunks of `CHUNK` bytes: a file's hash and its chunks' hashes come
from one streaming read, and no more than a batch of chunks is ever held in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence

from tether.errors import TetherError

CHUNK = 1 << 20
"""Bytes per stored chunk of a file (the last one may be shorter)."""
BATCH_BYTES = 8 << 20
"""The most chunk bytes read, written or sent to the store at once."""
BATCH_KEYS = 256
"""The most chunks fetched from the store in one call."""

FILE, DIR, LINK = "file", "dir", "link"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_PREFIX = ".tether-restore-"


class WorkspaceError(TetherError):
    """A workspace cannot be checkpointed or restored as asked; the message says what to do.

    Attributes:
        path: the file concerned, relative to the workspace's root, if one is.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class WorkspaceChangedError(WorkspaceError):
    """A file changed while a checkpoint read it; the checkpoint step is retried."""

    retryable = True


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One path of a snapshot.

    Attributes:
        path: relative to the root, `/`-separated, normalized.
        kind: `file`, `dir` or `link`.
        mode: permission bits (files and directories).
        size: a file's size in bytes.
        sha256: a file's content hash (hex).
        chunks: the hashes of a file's `CHUNK`-sized pieces, in order.
        target: a link's target, relative, inside the root.
    """

    path: str
    kind: str
    mode: int = 0
    size: int = 0
    sha256: str = ""
    chunks: tuple[str, ...] = ()
    target: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """What a checkpoint accepts (see `Workspace`)."""

    max_file_bytes: int
    max_total_bytes: int
    max_files: int


# -- paths --------------------------------------------------------------------------------------


def check_path(path: str) -> str:
    """Return `path` if it is a normalized relative path inside the root, else raise."""
    parts = path.split("/")
    if (
        not path
        or "\x00" in path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise WorkspaceError(
            f"path {path!r} is not a plain relative path inside the workspace; a snapshot "
            "holds only such paths (the snapshot is damaged or was not made by tether)",
            path,
        )
    return path


def check_link(path: str, target: str) -> str:
    """Return `target` if link `path` -> `target` stays inside the root, else raise."""
    depth = path.count("/")  # directories above the link, inside the root
    level = depth
    for part in target.split("/"):
        if part == "..":
            level -= 1
        elif part not in ("", "."):
            level += 1
        if level < 0:
            break
    if not target or target.startswith("/") or "\x00" in target or level < 0:
        raise WorkspaceError(
            f"symlink {path!r} points to {target!r}, outside the workspace; tether keeps only "
            "relative links that stay inside it: replace it with a copy, or exclude it",
            path,
        )
    return target


def excluded(path: str, patterns: Sequence[str]) -> bool:
    """Whether `path` matches an exclusion pattern.

    A pattern without `/` matches any path component (`.git`, `*.pyc`, `node_modules`); one
    with `/` matches the whole relative path (`build/*`, `data/raw`).
    """
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern.strip("/")):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


@contextlib.contextmanager
def open_root(root: str, *, create: bool) -> Iterator[int]:
    """Yield a descriptor of the workspace's root directory (created if asked)."""
    if create:
        os.makedirs(root, exist_ok=True)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise WorkspaceError(
            f"the workspace directory {root!r} does not exist; create it before its first "
            "checkpoint"
        ) from None
    except NotADirectoryError:
        raise WorkspaceError(f"the workspace path {root!r} is not a directory") from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_dir(root_fd: int, rel: str) -> Iterator[int]:
    """Yield a descriptor of directory `rel` under the root, following no symlink."""
    fd = os.dup(root_fd)
    try:
        for part in rel.split("/") if rel else ():
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise WorkspaceChangedError(
                    f"{rel!r} is not a directory inside the workspace any more ({exc.strerror}); "
                    "something changed the workspace while tether worked on it",
                    rel,
                ) from None
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


# -- scanning -----------------------------------------------------------------------------------


def scan(
    root_fd: int, exclude: Sequence[str], limits: Limits | None, *, hashed: bool
) -> list[Entry]:
    """Return the root's entries, sorted by path; with `hashed`, files carry their hashes.

    Raises:
        WorkspaceError: a file or the whole is over `limits`, or a symlink leaves the root.
    """
    out: list[Entry] = []
    _walk(root_fd, "", exclude, out, hashed)
    out.sort(key=lambda e: e.path)
    if limits is not None:
        _check_totals(out, limits)
    return out


def _walk(dir_fd: int, prefix: str, exclude: Sequence[str], out: list[Entry], hashed: bool) -> None:
    with os.scandir(dir_fd) as listing:
        items = sorted(listing, key=lambda d: d.name)
    for item in items:
        rel = prefix + item.name
        if item.name.startswith(_TEMP_PREFIX) or excluded(rel, exclude):
            continue
        st = item.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            out.append(Entry(rel, DIR, stat.S_IMODE(st.st_mode) & 0o777))
            try:
                sub = os.open(item.name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                raise _changed(rel, exc) from None
            try:
                _walk(sub, rel + "/", exclude, out, hashed)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            out.append(_file(dir_fd, item.name, rel, st) if hashed else _unhashed(rel, st))
        elif stat.S_ISLNK(st.st_mode):
            out.append(Entry(rel, LINK, target=os.readlink(item.name, dir_fd=dir_fd)))


def _unhashed(rel: str, st: os.stat_result) -> Entry:
    return Entry(rel, FILE, stat.S_IMODE(st.st_mode) & 0o777, st.st_size)


def _file(dir_fd: int, name: str, rel: str, st: os.stat_result) -> Entry:
    whole = hashlib.sha256()
    chunks: list[str] = []
    size = 0
    for piece in read_pieces(dir_fd, name, rel):
        whole.update(piece)
        chunks.append(hashlib.sha256(piece).hexdigest())
        size += len(piece)
    digest = whole.hexdigest()
    return Entry(rel, FILE, stat.S_IMODE(st.st_mode) & 0o777, size, digest, tuple(chunks))


def read_pieces(dir_fd: int, name: str, rel: str) -> Iterator[bytes]:
    """Yield the file's `CHUNK`-sized pieces, read through a descriptor that follows no link."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _changed(rel, exc) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _changed(rel, OSError(errno.EINVAL, "no longer a regular file"))
        while piece := f.read(CHUNK):
            yield piece


def _changed(rel: str, exc: OSError) -> WorkspaceChangedError:
    return WorkspaceChangedError(
        f"{rel!r} changed while tether read the workspace ({exc.strerror}); the checkpoint "
        "is tried again: pause what writes to the workspace while it is checkpointed",
        rel,
    )


def _check_totals(entries: list[Entry], limits: Limits) -> None:
    files = [e for e in entries if e.kind == FILE]
    for e in files:
        if e.size > limits.max_file_bytes:
            raise WorkspaceError(
                f"{e.path!r} is {e.size:,} bytes, over the workspace's max_file_bytes of "
                f"{limits.max_file_bytes:,}; exclude it (Workspace(exclude=[...])) or raise "
                "the limit",
                e.path,
            )
    for e in entries:
        if e.kind == LINK:
            check_link(e.path, e.target)
    total = sum(e.size for e in files)
    if total > limits.max_total_bytes or len(files) > limits.max_files:
        raise WorkspaceError(
            f"the workspace holds {len(files):,} files of {total:,} bytes, over its limits "
            f"(max_files={limits.max_files:,}, max_total_bytes={limits.max_total_bytes:,}); "
            "exclude build outputs and caches (Workspace(exclude=[...])) or raise the limits"
        )


# -- uploading ----------------------------------------------------------------------------------


def missing_pieces(
    root_fd: int, entries: Sequence[Entry], missing: set[str]
) -> Iterator[tuple[str, bytes]]:
    """Yield (hash, bytes) of each chunk in `missing`, once, reading the files that hold them.

    Raises:
        WorkspaceChangedError: a file no longer holds the chunks it was hashed with.
    """
    todo = set(missing)
    for e in entries:
        if e.kind != FILE or todo.isdisjoint(e.chunks):
            continue
        parent, name = _split(e.path)
        with open_dir(root_fd, parent) as pfd:
            for index, piece in enumerate(read_pieces(pfd, name, e.path)):
                key = hashlib.sha256(piece).hexdigest()
                if index >= len(e.chunks) or key != e.chunks[index]:
                    raise _changed(e.path, OSError(errno.EAGAIN, "its content changed"))
                if key in todo:
                    todo.discard(key)
                    yield key, piece


def batches(pieces: Iterator[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    """Group pieces into batches of at most `BATCH_BYTES` (one piece may exceed it alone)."""
    batch: list[tuple[str, bytes]] = []
    size = 0
    for key, data in pieces:
        if batch and size + len(data) > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append((key, data))
        size += len(data)
    if batch:
        yield batch


# -- restoring ----------------------------------------------------------------------------------

Fetch = Callable[[Sequence[str]], Mapping[str, bytes]]
"""Return the verified bytes of these chunk hashes (all of them, or raise)."""


@dataclasses.dataclass(slots=True)
class Restored:
    """What a restore changed on disk."""

    written: int = 0
    deleted: int = 0


def materialize(
    root_fd: int, entries: Sequence[Entry], exclude: Sequence[str], fetch: Fetch
) -> Restored:
    """Make the tree under the root exactly `entries` (excluded paths are left alone)."""
    wanted = {e.path: e for e in entries}
    current = {e.path: e for e in scan(root_fd, exclude, None, hashed=False)}
    done = Restored()
    _make_writable(root_fd, [e for e in current.values() if e.kind == DIR])
    for path in sorted(current, reverse=True):  # children before their parents
        if not _keeps(current[path], wanted.get(path)):
            done.deleted += _remove(root_fd, current[path])
            del current[path]
    for e in entries:
        if e.kind == DIR and e.path not in current:
            parent, name = _split(e.path)
            with open_dir(root_fd, parent) as pfd:
                os.mkdir(name, 0o700, dir_fd=pfd)
    stale = [e for e in entries if e.kind == FILE and not _same_file(root_fd, e, current)]
    done.written += _write_files(root_fd, stale, fetch)
    for e in entries:
        if e.kind == LINK and e.path not in current:
            parent, name = _split(e.path)
            with open_dir(root_fd, parent) as pfd:
                os.symlink(check_link(e.path, e.target), name, dir_fd=pfd)
            done.written += 1
    _set_modes(root_fd, [e for e in entries if e.kind != LINK])
    return done


def _keeps(have: Entry, want: Entry | None) -> bool:
    """Whether what is on disk may stay in place (a file's content is checked later)."""
    if want is None or want.kind != have.kind:
        return False
    return have.kind != LINK or have.target == want.target


def _make_writable(root_fd: int, dirs: Sequence[Entry]) -> None:
    """Let the owner write into existing directories; their modes are set again at the end."""
    for e in dirs:
        if e.mode & 0o700 != 0o700:
            parent, name = _split(e.path)
            with open_dir(root_fd, parent) as pfd:
                fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
                try:
                    os.fchmod(fd, e.mode | 0o700)
                finally:
                    os.close(fd)


def _remove(root_fd: int, e: Entry) -> int:
    parent, name = _split(e.path)
    with open_dir(root_fd, parent) as pfd:
        if e.kind != DIR:
            os.unlink(name, dir_fd=pfd)
            return 1
        try:
            os.rmdir(name, dir_fd=pfd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            return 0  # it holds excluded files, which a restore leaves alone
        return 1


def _same_file(root_fd: int, e: Entry, current: Mapping[str, Entry]) -> bool:
    have = current.get(e.path)
    if have is None or have.kind != FILE or have.size != e.size:
        return False
    parent, name = _split(e.path)
    with open_dir(root_fd, parent) as pfd:
        whole = hashlib.sha256()
        for piece in read_pieces(pfd, name, e.path):
            whole.update(piece)
    return whole.hexdigest() == e.sha256


def _write_files(root_fd: int, files: Sequence[Entry], fetch: Fetch) -> int:
    group: list[Entry] = []
    size = 0
    for e in files:
        if group and (size + e.size > BATCH_BYTES or len(group) >= BATCH_KEYS):
            _write_group(root_fd, group, fetch)
            group, size = [], 0
        group.append(e)
        size += e.size
    if group:
        _write_group(root_fd, group, fetch)
    return len(files)


def _write_group(root_fd: int, group: Sequence[Entry], fetch: Fetch) -> None:
    if len(group) == 1 and group[0].size > BATCH_BYTES:
        _write_file(root_fd, group[0], _streamed(group[0], fetch))
        return
    blobs = fetch([c for e in group for c in e.chunks])
    for e in group:
        _write_file(root_fd, e, (blobs[c] for c in e.chunks))


def _streamed(e: Entry, fetch: Fetch) -> Iterator[bytes]:
    per_call = max(1, BATCH_BYTES // CHUNK)
    for start in range(0, len(e.chunks), per_call):
        keys = e.chunks[start : start + per_call]
        blobs = fetch(keys)
        yield from (blobs[k] for k in keys)


def _write_file(root_fd: int, e: Entry, pieces: Iterator[bytes]) -> None:
    """Write the file beside its place under a temporary name, check it, then rename it in."""
    parent, name = _split(e.path)
    temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open_dir(root_fd, parent) as pfd:
        fd = os.open(temp, flags, 0o600, dir_fd=pfd)
        try:
            whole = hashlib.sha256()
            with os.fdopen(fd, "wb", closefd=False) as f:
                for piece in pieces:
                    whole.update(piece)
                    f.write(piece)
            if whole.hexdigest() != e.sha256:
                raise WorkspaceError(
                    f"the stored content of {e.path!r} does not match its hash; the snapshot's "
                    "blobs are damaged",
                    e.path,
                )
            os.fchmod(fd, e.mode)
            os.close(fd)
            fd = -1
            os.replace(temp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=pfd)
            raise


def _set_modes(root_fd: int, entries: Sequence[Entry]) -> None:
    """Apply modes deepest first, so a read-only directory is made so after its children."""
    for e in sorted(entries, key=lambda x: x.path, reverse=True):
        parent, name = _split(e.path)
        with open_dir(root_fd, parent) as pfd:
            flags = _DIR_FLAGS if e.kind == DIR else _READ_FLAGS
            fd = os.open(name, flags, dir_fd=pfd)
            try:
                if stat.S_IMODE(os.fstat(fd).st_mode) != e.mode:
                    os.fchmod(fd, e.mode)
            finally:
                os.close(fd)
