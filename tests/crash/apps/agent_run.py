"""A tether app for the agent crash test: one agent run of 20 model calls and 20 tool calls.

    python agent_run.py WORKDIR      (database from TETHER_DATABASE_URL etc.)

The scripted model appends every answered call to WORKDIR/model.ledger (fsynced) and takes
real time to answer, so kills land inside calls. Turn i calls `lookup(i)` (read only) when i
is even and `charge(i)` (effectful) when odd; two turns first fail (a 429 with retry-after, a
529). `charge` performs its effect once per idempotency key, as a payment API does: the first
execution for a key creates WORKDIR/effects/<key> and appends to WORKDIR/effects.log; every
execution appends to WORKDIR/tools.ledger. The app prints READY, waits for the run and prints
DONE.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import pydantic

import tether
from tether.agent import Agent, Model
from tether.agent.providers import scripted as s

WORK = Path(sys.argv[1])
TURNS = 20
PID = os.getpid()

app = tether.App()


def append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@app.tool(side_effect="read_only")
async def lookup(n: int) -> int:
    """Look a number up."""
    await asyncio.sleep(random.uniform(0.0, 0.02))
    append(WORK / "tools.ledger", f"lookup,{tether.context().idempotency_key},{PID}")
    return n * n


@app.tool(side_effect="effectful")
async def charge(n: int) -> str:
    """Charge n cents, once per idempotency key."""
    key = tether.context().idempotency_key
    append(WORK / "tools.ledger", f"charge,{key},{PID}")
    marker = WORK / "effects" / key
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return marker.read_text()  # the effect happened already: its original receipt
    receipt = f"charged {n} by {PID}"
    os.write(fd, receipt.encode())
    os.fsync(fd)
    os.close(fd)
    append(WORK / "effects.log", key)
    await asyncio.sleep(random.uniform(0.0, 0.02))
    return receipt


class Summary(pydantic.BaseModel):
    turns: int


def script() -> list[s.Turn]:
    turns = []
    for i in range(TURNS):
        turn = s.call("lookup", n=i) if i % 2 == 0 else s.call("charge", n=i)
        turns.append(turn.slow(random.Random(i).uniform(0.03, 0.08)))
    turns[3] = turns[3].failing(s.rate_limited(retry_after=0.05))
    turns[11] = turns[11].failing(s.overloaded())
    turns.append(s.answer({"turns": TURNS}))
    return turns


model = s.ScriptedProvider(script(), ledger=WORK / "model.ledger")
agent = Agent(
    model=Model(model, "scripted-1"),
    tools=[lookup, charge],
    instructions="Work through the numbers.",
    output=Summary,
    retry=tether.Retry(attempts=3, initial_delay=0.05, jitter=0.0),
)


@app.workflow(name="agent_job")
async def agent_job() -> int:
    result = await agent.run("Process 20 numbers.")
    return int(result.output.turns)


async def main() -> None:
    (WORK / "effects").mkdir(parents=True, exist_ok=True)
    async with app:
        print("READY", flush=True)
        handle = await app.start(agent_job, id="agent-1")
        await handle.result()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
