"""The bubblewrap sandbox: what a command can and cannot reach, timeouts, output, journaling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import (
    SandboxError,
    SandboxOptions,
    SandboxResult,
    SandboxUnavailableError,
    Workspace,
    sandbox,
)
from tether.errors import ConfigError


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


async def sh(line: str, ws: Path, limit: float = 30, **kw) -> SandboxResult:
    return await sandbox.run(["sh", "-c", line], workspace=ws, timeout=limit, **kw)


async def test_run__exit_code_stdout_stderr__captured(ws: Path):
    result = await sh("echo out; echo err >&2; exit 7", ws)
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert not result.timed_out
    assert not result.ok
    assert result.duration > 0


async def test_run__writes_in_workspace__land_on_host(ws: Path):
    result = await sh("echo made > new.txt && mkdir -p d && echo x > d/y && pwd", ws)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{sandbox.INSIDE}\n"
    assert (ws / "new.txt").read_text() == "made\n"
    assert (ws / "d" / "y").read_text() == "x\n"


@pytest.mark.parametrize("target", ["/etc/tether-test", "/usr/tether-test", "/tether-test"])
async def test_run__writes_outside_workspace__fail(ws: Path, target: str):
    result = await sh(f"echo x > {target}", ws)
    assert result.exit_code != 0
    assert "Read-only file system" in result.stderr
    assert not os.path.exists(target)  # noqa: ASYNC240


async def test_run__host_paths_outside_read_only__invisible(ws: Path, tmp_path: Path):
    (tmp_path / "secret.txt").write_text("s")
    result = await sh(f"cat {tmp_path / 'secret.txt'}; ls /root /home /run /var 2>&1; true", ws)
    assert "No such file or directory" in result.stdout
    assert result.stdout.strip() != "s"


async def test_run__private_tmp__empty_and_discarded(ws: Path):
    marker = f"tether-{uuid.uuid4().hex}"
    result = await sh(f"ls -A /tmp; echo hi > /tmp/{marker}", ws)
    assert (result.exit_code, result.stdout) == (0, "")
    assert not os.path.exists(f"/tmp/{marker}")  # noqa: ASYNC240
    again = await sh(f"test -e /tmp/{marker} && echo kept || echo gone", ws)
    assert again.stdout == "gone\n"


async def test_run__no_network__local_database_unreachable(ws: Path):
    with socket.create_connection(("127.0.0.1", 5432), timeout=5):
        pass  # the host reaches PostgreSQL ...
    result = await sandbox.run(
        ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5432 && echo connected"],
        workspace=ws,
        timeout=30,
    )
    assert result.exit_code != 0  # ... the sandbox does not
    assert "connected" not in result.stdout
    interfaces = await sh("cat /proc/net/dev", ws)
    names = {ln.split(":")[0].strip() for ln in interfaces.stdout.splitlines()[2:]}
    assert names <= {"lo"}


async def test_run__environment__cleared_but_for_what_is_passed(
    ws: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    result = await sh("env", ws, env={"GREETING": "hello"})
    assert "hunter2" not in result.stdout
    assert "GREETING=hello" in result.stdout.splitlines()
    assert "HOME=/tmp" in result.stdout.splitlines()


async def test_run__runs_unprivileged_in_own_pid_namespace(ws: Path):
    result = await sh("id -u; ls /proc | grep -c '^[0-9]'", ws)
    uid, pids = result.stdout.split()
    assert uid == "65534"
    assert int(pids) < 10  # only the sandbox's own processes


def processes_with(marker: str) -> list[int]:
    """Processes running `sleep MARKER` (not bwrap, whose arguments hold the marker too)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0")[:2] == [b"sleep", marker.encode()]:
                found.append(int(entry))
    return found


async def gone(marker: str, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not processes_with(marker):
            return True
        await asyncio.sleep(0.01)
    return False


def describe(marker: str) -> str:
    """The state and parent of each process left, for the failure message."""
    lines = []
    for pid in processes_with(marker):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            lines.append(
                f"{pid}: "
                + "; ".join(x for x in status if x.startswith(("State", "PPid", "NSpid")))
            )
    return "\n".join(lines)


async def test_run__timeout__kills_whole_tree(ws: Path):
    marker = f"9{uuid.uuid4().int % 10**6}.5"  # a unique `sleep` argument to look for
    line = f"sleep {marker} & (setsid sleep {marker} &) ; exec sleep {marker}"
    task = asyncio.ensure_future(sh(f"echo started; {line}", ws, limit=3))
    for _ in range(1000):  # all three, the detached one too, are running before the timeout
        if len(processes_with(marker)) == 3 or task.done():
            break
        await asyncio.sleep(0.005)
    assert len(processes_with(marker)) == 3
    result = await task
    assert result.timed_out
    assert result.exit_code < 0
    assert result.stdout == "started\n"
    assert await gone(marker), describe(marker)


async def test_run__cancelled__kills_sandbox(ws: Path):
    marker = f"8{uuid.uuid4().int % 10**6}.5"
    task = asyncio.ensure_future(sh(f"sleep {marker}", ws, limit=600))
    for _ in range(500):
        if processes_with(marker):
            break
        await asyncio.sleep(0.01)
    assert processes_with(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(marker), describe(marker)


async def test_run__output_over_cap__truncated(ws: Path):
    result = await sh(
        "head -c 100000 /dev/zero | tr '\\0' a", ws, options=SandboxOptions(max_output_bytes=1000)
    )
    assert result.stdout == "a" * 1000
    assert result.truncated


def test_run_blocking__plain_function__same_result(ws: Path):
    result = sandbox.run_blocking(["sh", "-c", "echo hi > f; cat f"], workspace=ws, timeout=30)
    assert (result.exit_code, result.stdout) == (0, "hi\n")


async def test_run_blocking__called_on_event_loop__works(ws: Path):
    result = sandbox.run_blocking(["true"], workspace=ws, timeout=30)
    assert result.ok


async def test_run__workspace_object__its_path_is_mounted(ws: Path):
    result = await sandbox.run(["ls"], workspace=Workspace(ws), timeout=30)
    assert result.exit_code == 0


async def test_run__missing_bwrap__unavailable_with_install_hint(ws: Path, tmp_path: Path):
    opts = SandboxOptions(bwrap=str(tmp_path / "no-such-bwrap"))
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
        await sandbox.run(["true"], workspace=ws, timeout=30, options=opts)


async def test_run__bwrap_cannot_create_namespaces__unavailable_with_advice(
    ws: Path, tmp_path: Path
):
    fake = tmp_path / "bwrap"  # fails the way bwrap does where user namespaces are disabled
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because the "
        "kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    opts = SandboxOptions(bwrap=str(fake))
    with pytest.raises(SandboxUnavailableError, match=r"No permissions.*unprivileged_userns"):
        await sandbox.run(["true"], workspace=ws, timeout=30, options=opts)


async def test_run__bad_arguments__named_errors(ws: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="list of strings"):
        await sandbox.run("echo hi", workspace=ws, timeout=30)
    with pytest.raises(SandboxError, match="not a directory"):
        await sandbox.run(["true"], workspace=tmp_path / "missing", timeout=30)
    with pytest.raises(ConfigError, match="absolute"):
        SandboxOptions(read_only=("usr",))


async def test_run_step__replay__recorded_result_command_not_rerun(
    make_app: MakeApp, tmp_path: Path
):
    ws = tmp_path / "ws"
    ws.mkdir()
    ledger: Counter[str] = Counter()

    def define(app: tether.App, gate: asyncio.Event | None) -> None:
        @app.step(name="block")
        async def block() -> None:
            ledger["block"] += 1
            if gate is not None:
                await gate.wait()

        @app.workflow(name="tool")
        async def tool() -> SandboxResult:
            result = await sandbox.run_step(
                ["sh", "-c", "echo run >> runs.log; wc -l < runs.log"], workspace=ws, timeout=30
            )
            await block()
            return result

    first = make_app()
    define(first, asyncio.Event())
    async with first:
        await first.start("tool", id="tool-1")
        for _ in range(1000):
            if ledger["block"]:
                break
            await asyncio.sleep(0.01)
    second = make_app()
    define(second, None)
    async with second:
        result = await second.retrieve("tool-1").result(timeout=30)
    assert (result.exit_code, result.stdout.strip()) == (0, "1")
    assert (ws / "runs.log").read_text() == "run\n"  # the command ran once
    names = [s.name for s in second.store.load_steps("tool-1")]
    assert names == ["tether.sandbox.run", "block"]


async def test_run__measured_overhead(ws: Path):
    """Not an assertion on time: prints what starting a sandbox costs here."""
    started = time.monotonic()
    for _ in range(5):
        assert (await sandbox.run(["true"], workspace=ws, timeout=30)).ok
    print(f"sandbox start-to-exit of `true`: {(time.monotonic() - started) / 5 * 1000:.1f} ms")
