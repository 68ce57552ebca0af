"""Commands in a bubblewrap sandbox: no network, a read-only system, the workspace writable.

    from tether.agent import sandbox

    result = await sandbox.run(["pytest", "-q"], workspace=ws, timeout=300)       # async
    result = sandbox.run_blocking(["make"], workspace="/srv/ws/7", timeout=60)    # plain def
    result = await sandbox.run_step(["pytest"], workspace=ws, timeout=300)        # durable

The command runs under `bwrap` (Debian/Ubuntu: `apt-get install bubblewrap`) in new user,
mount, PID, network, IPC, UTS and cgroup namespaces, as uid/gid 65534. It sees:

- `/workspace`: the workspace directory, read-write (the working directory);
- `/tmp`: a private, empty tmpfs (also `HOME`), gone when the command ends;
- `/proc` of its own PID namespace and a minimal `/dev` (null, zero, random, tty ...);
- the host paths of `SandboxOptions.read_only` (system directories by default), read-only;
- nothing else: the root is an empty read-only tmpfs.

There is no network interface but loopback (which is the sandbox's own), so nothing on the
host or beyond is reachable. The environment is cleared: the command gets `PATH`, `HOME`,
`TMPDIR`, `LANG` and the variables you pass. The sandbox dies with the process that started
it, and a timeout kills every process in it. Output is captured up to a cap per stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tether.engine import runtime
from tether.errors import ConfigError, TetherError

if TYPE_CHECKING:
    from tether.agent.workspace import Workspace

__all__ = [
    "DEFAULT_READ_ONLY",
    "SandboxError",
    "SandboxOptions",
    "SandboxResult",
    "SandboxUnavailableError",
    "run",
    "run_blocking",
    "run_step",
]

DEFAULT_READ_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""Host paths a command sees read-only by default: the system's programs and libraries."""
INSIDE = "/workspace"
"""Where the workspace appears inside the sandbox."""
_PATH = "/usr/local/bin:/usr/bin:/bin"
_READ = 64 * 1024
_DRAIN = 5.0  # seconds to collect output after the sandbox was killed
_INSTALL = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install "
    "bubblewrap`) or pass SandboxOptions(bwrap=...) with its path"
)


class SandboxError(TetherError):
    """A command could not be run in the sandbox as asked."""


class SandboxUnavailableError(SandboxError):
    """bubblewrap is missing or cannot create the sandbox's namespaces on this machine."""


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxResult:
    """What a sandboxed command did.

    Attributes:
        exit_code: the command's exit status; negative (the signal) if it was killed, as
            on timeout.
        stdout: its standard output (UTF-8, undecodable bytes replaced), up to the cap.
        stderr: its standard error, likewise.
        duration: seconds from start to end.
        timed_out: True if the timeout killed it.
        truncated: True if output beyond `SandboxOptions.max_output_bytes` was dropped.
    """

    exit_code: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_code == 0 and not self.timed_out


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxOptions:
    """How a command is sandboxed.

    Attributes:
        read_only: host paths the command can read (never write), at the same place inside;
            those missing on this host are left out; a symlink is recreated as a symlink.
            Add your toolchains here, for example a Python outside /usr.
        max_output_bytes: the most bytes kept of each of stdout and stderr.
        bwrap: the bubblewrap executable (a name looked up in PATH, or a path).
    """

    read_only: tuple[str, ...] = DEFAULT_READ_ONLY
    max_output_bytes: int = 256 * 1024
    bwrap: str = "bwrap"

    def __post_init__(self) -> None:
        if self.max_output_bytes < 0:
            raise ConfigError("SandboxOptions.max_output_bytes must be 0 or more")
        for path in self.read_only:
            if not os.path.isabs(path):
                raise ConfigError(f"SandboxOptions.read_only path {path!r} must be absolute")


async def run(
    cmd: Sequence[str],
    *,
    workspace: Workspace | str | os.PathLike[str],
    timeout: float,  # noqa: ASYNC109 - the timeout kills the sandbox, it is not a wait
    env: Mapping[str, str] | None = None,
    options: SandboxOptions | None = None,
) -> SandboxResult:
    """Run `cmd` in a sandbox whose only writable place is `workspace`; return its result.

    A non-zero exit or a timeout is a result, not an error. If the awaiting task is
    cancelled, the sandbox is killed.

    Args:
        cmd: the program and its arguments (no shell: pass `["sh", "-c", "..."]` for one).
        workspace: a `Workspace` or a directory; it is `/workspace` inside.
        timeout: seconds before every process of the sandbox is killed.
        env: variables added to the command's minimal environment.
        options: what the sandbox exposes and keeps (see `SandboxOptions`).

    Raises:
        SandboxUnavailableError: bubblewrap is missing or cannot create namespaces here.
        SandboxError: the workspace directory does not exist.
    """
    opts = options if options is not None else SandboxOptions()
    status_r, status_w = os.pipe()
    try:
        argv = _argv(_command(cmd), _directory(workspace), opts, env)
        argv[1:1] = ["--json-status-fd", str(status_w)]  # says whether the command started
        started = time.monotonic()
        try:
            proc = await _spawn(argv, status_w, opts)
        finally:
            os.close(status_w)
            status_w = -1
        out, err, timed_out = await _communicate(proc, timeout, opts.max_output_bytes)
        status = _read_status(status_r)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
    duration = time.monotonic() - started
    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    if "child-pid" not in status and not timed_out:
        raise _setup_failed(opts, code, bytes(err.data))
    reported = status.get("exit-code")
    if isinstance(reported, int) and not timed_out:
        code = reported
    return SandboxResult(
        exit_code=-signal.SIGKILL if timed_out else code,
        stdout=out.data.decode("utf-8", "replace"),
        stderr=err.data.decode("utf-8", "replace"),
        duration=duration,
        timed_out=timed_out,
        truncated=out.truncated or err.truncated,
    )


def run_blocking(
    cmd: Sequence[str],
    *,
    workspace: Workspace | str | os.PathLike[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    options: SandboxOptions | None = None,
) -> SandboxResult:
    """`run` for plain `def` code: blocks the calling thread until the command ends.

    It drives the sandbox from an event loop of its own on a helper thread, so it works on
    any thread, an event loop's included (which it then holds until the command ends).
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-sandbox") as pool:
        future = pool.submit(
            asyncio.run,
            run(cmd, workspace=workspace, timeout=timeout, env=env, options=options),
        )
        return future.result()


@runtime.step(name="tether.sandbox.run", retry=None)
async def _sandbox_step(
    cmd: list[str],
    workspace: str,
    timeout: float,  # noqa: ASYNC109 - see run()
    env: dict[str, str] | None,
    options: SandboxOptions | None,
) -> SandboxResult:
    return await run(cmd, workspace=workspace, timeout=timeout, env=env, options=options)


async def run_step(
    cmd: Sequence[str],
    *,
    workspace: Workspace | str | os.PathLike[str],
    timeout: float,  # noqa: ASYNC109 - see run()
    env: Mapping[str, str] | None = None,
    options: SandboxOptions | None = None,
) -> SandboxResult:
    """`run` as a durable step of the calling workflow: its result is journaled.

    On replay the recorded result is returned and the command does not run again. It runs
    once per attempt (no retries: a command's effects are its own); what it changed in the
    workspace survives a move to another worker only if a checkpoint follows it.
    """
    return await _sandbox_step(
        _command(cmd), str(_directory(workspace)), timeout, dict(env or {}) or None, options
    )


# -- building the command line ------------------------------------------------------------------


def _command(cmd: Sequence[str]) -> list[str]:
    if isinstance(cmd, str | bytes) or not cmd or not all(isinstance(a, str) for a in cmd):
        raise ConfigError(
            f"a sandboxed command is a non-empty list of strings, not {cmd!r}; for a shell "
            'line pass ["sh", "-c", "..."]'
        )
    return list(cmd)


def _directory(workspace: Workspace | str | os.PathLike[str]) -> str:
    path = workspace if isinstance(workspace, str | os.PathLike) else workspace.path
    folder = os.path.abspath(os.fspath(path))
    if not os.path.isdir(folder):
        raise SandboxError(
            f"the workspace {folder!r} is not a directory; create it before running commands"
        )
    return folder


def _argv(
    cmd: list[str], folder: str, opts: SandboxOptions, env: Mapping[str, str] | None
) -> list[str]:
    argv = [
        opts.bwrap,
        "--unshare-all",  # user, mount, pid, net, ipc, uts, cgroup (where the kernel has it)
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the caller's terminal
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--hostname",
        "sandbox",
    ]
    for path in opts.read_only:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--bind", folder, INSIDE, "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--remount-ro", "/", "--chdir", INSIDE, "--clearenv"]
    base = {"PATH": _PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    for key, value in {**base, **(env or {})}.items():
        if not key or "=" in key or "\x00" in key + value:
            raise ConfigError(f"environment variable {key!r} is not a valid name and value")
        argv += ["--setenv", key, value]
    return [*argv, "--", *cmd]


# -- running ------------------------------------------------------------------------------------


async def _spawn(
    argv: list[str], status_fd: int, opts: SandboxOptions
) -> asyncio.subprocess.Process:
    exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
    if exe is None or not os.access(exe, os.X_OK):
        raise SandboxUnavailableError(f"bubblewrap ({opts.bwrap!r}) was not found; {_INSTALL}")
    spawning = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            exe,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # one process group: a timeout kills bwrap and its helpers
            pass_fds=(status_fd,),
        )
    )
    try:
        return await asyncio.shield(spawning)
    except (FileNotFoundError, PermissionError) as exc:
        raise SandboxUnavailableError(
            f"bubblewrap ({exe!r}) cannot be started ({exc.strerror}); {_INSTALL}"
        ) from None
    except asyncio.CancelledError:  # the process may exist already: never leave it running
        with contextlib.suppress(Exception):
            proc = await spawning
            _kill(proc)
            await proc.communicate()
        raise


class _Capture:
    """One output stream, read to its end, of which the first `cap` bytes are kept."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ):
            room = self.cap - len(self.data)
            if len(chunk) > room:
                self.truncated = True
            self.data += chunk[: max(0, room)]


async def _communicate(
    proc: asyncio.subprocess.Process,
    timeout: float,  # noqa: ASYNC109 - see run()
    cap: int,
) -> tuple[_Capture, _Capture, bool]:
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = _Capture(cap), _Capture(cap)
    readers = {
        asyncio.ensure_future(out.read(proc.stdout)),
        asyncio.ensure_future(err.read(proc.stderr)),
    }
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await asyncio.wait(readers)
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:  # on timeout, and when the awaiting task is cancelled
        if proc.returncode is None:
            _kill(proc)
            # Every process of the sandbox dies with bwrap, closing the pipes; bound the wait.
            await asyncio.wait(readers, timeout=_DRAIN)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN):
                    await proc.wait()
        for task in readers:
            task.cancel()
    return out, err, timed_out


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _read_status(fd: int) -> dict[str, object]:
    """Merge the JSON documents bwrap wrote to its status pipe (child-pid, exit-code)."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, _READ)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    status: dict[str, object] = {}
    decoder = json.JSONDecoder()
    text, pos = data.decode("utf-8", "replace"), 0
    while (pos := _skip_space(text, pos)) < len(text):
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if isinstance(doc, dict):
            status.update(doc)
    return status


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _setup_failed(opts: SandboxOptions, code: int, stderr: bytes) -> SandboxUnavailableError:
    said = stderr.decode("utf-8", "replace").strip()[-2000:] or f"exit status {code}"
    return SandboxUnavailableError(
        f"bubblewrap ({opts.bwrap!r}) could not create the sandbox: {said}. If it cannot "
        "create namespaces, enable unprivileged user namespaces (sysctl "
        "kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on Ubuntu 24.04 "
        "also kernel.apparmor_restrict_unprivileged_userns=0), or in a container allow them "
        "(for Docker: --security-opt seccomp=unconfined, or a seccomp profile permitting "
        "unshare/clone with CLONE_NEWUSER)"
    )
