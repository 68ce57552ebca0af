"""Who this process is, and whether another process on this machine is still alive.

A worker records its host name, the kernel's boot id, its pid and the pid's start time. A
worker on the same machine can then tell for certain that the process is gone (the pid is
free, or now belongs to a process started later, or the machine rebooted since) and take its
runs over at once, instead of waiting for its lease to lapse. Workers on other machines are
judged by their heartbeats alone.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """What identifies a process across the machine's lifetime."""

    host: str
    boot_id: str
    pid: int
    pid_start: str


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, str]:
    """The process's state letter and start time in clock ticks ('' where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return "", ""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else ("", "")


def identity() -> Identity:
    """Return this process's identity."""
    pid = os.getpid()
    return Identity(socket.gethostname(), _boot_id(), pid, _stat(pid)[1])


def is_gone(host: str, boot_id: str, pid: int, pid_start: str) -> bool:
    """Whether the process so identified certainly no longer runs (False when unsure).

    Only processes on this machine can be judged; for others this returns False and their
    heartbeats decide.
    """
    me = identity()
    if host != me.host or not boot_id or not me.boot_id:
        return False
    if boot_id != me.boot_id:
        return True  # the machine rebooted since that process started
    if pid == me.pid:
        return pid_start != me.pid_start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    state, started = _stat(pid)
    if state in ("Z", "X"):
        return True  # killed, not yet reaped by its parent
    return bool(started and pid_start and started != pid_start)
