"""A worker process for the fault tests: it runs chains of steps until SIGTERM or SIGKILL.

    python worker.py LEDGER        (database and options from TETHER_* variables)
    FAULTS_LEDGER=LEDGER tether supervise worker:app ...   (this folder on PYTHONPATH)

Workflows (a client starts them; this process only executes):

- `chain(steps, pause)`: `async def`, `steps` async steps that each sleep `pause` seconds.
- `chain_sync(steps, pause)`: plain `def`, the same with plain `def` steps (a thread cannot be
  cancelled, so a paused or cut-off worker really does try its late writes).
- `nap(seconds, pause)`: a durable sleep, then one step, which notes `W,run,pid,time,due`.

The LEDGER, outside the journal, gets one line per event, each written with O_APPEND and
fsync (it survives SIGKILL): `E,run,seq,pid,time,value` when a step body runs (before its
checkpoint), `C,run,seq,pid,time` when the workflow got back a step outcome this process
computed (it was committed), `F,run,seq,pid,time` when a step's checkpoint was refused because
the run belongs to another worker now, `D,run,pid,time` when a workflow returns. Each step
returns `pid:nonce`, a value no other execution can reproduce.

Run as a script it prints READY once its worker is up. Imported (by `tether worker` or
`tether supervise`), it takes the ledger's path from `FAULTS_LEDGER` and the CLI runs `app`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import time

import tether

LEDGER = sys.argv[1] if __name__ == "__main__" else os.environ["FAULTS_LEDGER"]
PID = os.getpid()
_fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

app = tether.App()
_noted: set[tuple[str, int]] = set()


def note(*fields: object) -> None:
    """Append one line to the ledger and fsync it."""
    os.write(_fd, (",".join(map(str, fields)) + "\n").encode())
    os.fsync(_fd)


def effect(seq: int) -> str:
    value = f"{PID}:{random.getrandbits(48):012x}"
    note("E", tether.context().workflow_id, seq, PID, time.time(), value)
    return value


def committed(seq: int, value: str) -> None:
    """Note a step outcome this process computed and got back from the journal."""
    run = tether.context().workflow_id
    if value.startswith(f"{PID}:") and (run, seq) not in _noted:
        _noted.add((run, seq))
        note("C", run, seq, PID, time.time())


@app.step(name="work")
async def work(seq: int, pause: float) -> str:
    value = effect(seq)
    await asyncio.sleep(pause)
    return value


@app.step(name="work_sync")
def work_sync(seq: int, pause: float) -> str:
    value = effect(seq)
    time.sleep(pause)
    return value


@app.workflow(name="chain")
async def chain(steps: int, pause: float) -> list[str]:
    out = []
    for i in range(steps):
        try:
            value = await work(i, pause)
        except tether.LeaseLostError:
            note("F", tether.context().workflow_id, i, PID, time.time())
            raise
        committed(i, value)
        out.append(value)
    note("D", tether.context().workflow_id, PID, time.time())
    return out


@app.workflow(name="chain_sync")
def chain_sync(steps: int, pause: float) -> list[str]:
    out = []
    for i in range(steps):
        try:
            value = work_sync(i, pause)
        except tether.LeaseLostError:
            note("F", tether.context().workflow_id, i, PID, time.time())
            raise
        committed(i, value)
        out.append(value)
    note("D", tether.context().workflow_id, PID, time.time())
    return out


@app.step(name="wake")
async def wake(due: float) -> str:
    value = effect(0)
    note("W", tether.context().workflow_id, PID, time.time(), due)
    return value


@app.workflow(name="nap")
async def nap(seconds: float, pause: float) -> str:
    """Sleep durably `seconds`, then run one step (noted with the time it was due)."""
    due = await started_at() + seconds
    await tether.sleep(seconds)
    value = await wake(due)
    note("D", tether.context().workflow_id, PID, time.time())
    return value


@app.step(name="started_at")
async def started_at() -> float:
    return time.time()


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app:
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
