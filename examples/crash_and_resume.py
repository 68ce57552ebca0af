"""tether's demo: a workflow is SIGKILLed mid-run, restarted, and resumes where it stopped.

    make demo          (or: python examples/crash_and_resume.py)

A child process runs a small research workflow of eight steps (each takes a moment and says
which process ran it). The parent kills the child with SIGKILL halfway, starts it again, and
prints who ran what: the steps done before the kill are not run again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tether

DB_PATH = Path(".tether/demo.db")
DB_URL = f"sqlite:///{DB_PATH}"
RUN_ID = "demo-report"
TOPICS = ["leases", "fencing", "journals", "replay", "backoff", "idempotency", "codecs", "WAL"]

app = tether.App(DB_URL)


@app.step(name="research")
async def research(topic: str) -> dict[str, object]:
    """Stand-in for a slow call to the outside world (an LLM, a search API)."""
    await asyncio.sleep(0.4)
    print(f"    [pid {os.getpid()}] researched {topic!r}", flush=True)
    return {"topic": topic, "notes": len(topic) * 7, "pid": os.getpid()}


@app.step(name="write_report")
async def write_report(findings: list[dict[str, object]]) -> str:
    await asyncio.sleep(0.2)
    lines = [f"- {f['topic']}: {f['notes']} notes (researched by pid {f['pid']})" for f in findings]
    return "\n".join(lines)


@app.workflow(name="report")
async def report(topics: list[str]) -> str:
    findings = [await research(t) for t in topics]
    return await write_report(findings)


async def child() -> None:
    async with app:  # entering resumes any unfinished run left by a dead process
        handle = await app.start(report, TOPICS, id=RUN_ID)  # idempotent: same id, same run
        await handle.result()


def journal_length() -> int:
    try:
        return len(app.store.load_steps(RUN_ID))
    except tether.TetherError:
        return 0


def main() -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
    me = [sys.executable, __file__, "--child"]

    print("1. starting the workflow in a child process")
    first = subprocess.Popen(me)
    while journal_length() < 4:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = journal_length()
    print(f"2. SIGKILLed pid {first.pid}: {done} of {len(TOPICS) + 1} steps were journaled\n")

    print("3. starting a new process: it resumes the run from its journal")
    started = time.monotonic()
    second = subprocess.Popen(me)
    second.wait()
    print(f"   finished {time.monotonic() - started:.1f}s after the restart\n")

    async def show() -> None:
        handle = app.retrieve(RUN_ID)
        print(f"4. status {await handle.status()}; who ran each step:")
        for step in await handle.steps():
            pid = step.output.get("pid") if isinstance(step.output, dict) else "-"
            print(f"   #{step.seq} {step.name:<12} attempts={step.attempts} pid={pid}")
        print("\nresult:\n" + await handle.result())

    asyncio.run(show())
    print(
        f"\nThe steps before the kill ran once, in pid {first.pid}; the rest ran in pid "
        f"{second.pid}.\nLook closer:  .venv/bin/tether workflows show {RUN_ID} --db {DB_URL}"
    )


if __name__ == "__main__":
    if "--child" in sys.argv:
        asyncio.run(child())
    else:
        main()
