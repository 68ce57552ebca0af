"""A tether app for the mission crash test: a mission that drifts, is corrected and rolled back.

    python mission_run.py WORKDIR RUN_ID MODE      (database from TETHER_DATABASE_URL etc.)

The first model claims completion twice without doing the work: a corrective message, then a
rollback whose strategy hands the run to the second model, which writes the report. MODE
chooses where the process SIGKILLs itself (once; a marker file remembers it):

- `none`: nowhere (the reference run).
- `after-audit`: right after the audit records of the rollback decision are appended, before
  the step that decided it is journaled.
- `restart`: when the second model is first called, after the rollback was recorded.

The parent may also kill the process from outside at any moment. The app prints READY, waits
for the mission and prints the outcome as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import tether
from tether.agent import Agent, Model
from tether.agent.providers import scripted as s
from tether.agent.types import ModelRequest, ModelResponse, OnToken
from tether.mission import spec
from tether.mission.correction import Policy, Strategy
from tether.mission.mission import Mission
from tether.store.base import AuditRow

WORK, RUN_ID, MODE = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
ROOT = WORK / "ws"
MARKER = WORK / f"killed-{MODE}"

app = tether.App()


def die_once() -> None:
    if not MARKER.exists():
        MARKER.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


@app.tool(side_effect="read_only")
async def read_file(path: str) -> str:
    """Read a file."""
    await asyncio.sleep(random.uniform(0.01, 0.05))
    return (ROOT / path).read_text()


@app.tool(side_effect="idempotent")
async def write_file(path: str, content: str) -> str:
    """Write a file."""
    await asyncio.sleep(random.uniform(0.01, 0.05))
    (ROOT / path).write_text(content)
    return f"wrote {len(content)} characters to {path}"


class Second(s.ScriptedProvider):
    """The second model; in `restart` mode the process dies when it is first called."""

    async def complete(
        self,
        request: ModelRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's parameter
        on_token: OnToken | None = None,
    ) -> ModelResponse:
        if MODE == "restart":
            die_once()
        return await super().complete(request, timeout=timeout, on_token=on_token)


READ = s.call("read_file", path="data/sales.csv").slow(0.03)
WRITE = s.call("write_file", path="report.md", content="Revenue by quarter: Q1 1200, Q2 1350")
DONE = s.reply("The report is in report.md: revenue went from 1200 in Q1 to 1350 in Q2.")
first = s.ScriptedProvider([READ, s.claim_done().slow(0.03)], recovery=[s.claim_done().slow(0.03)])
second = Second([], recovery=[WRITE.slow(0.03), DONE.slow(0.03)], name="second")
CONTRACT = spec.MissionSpec(
    objective="Write report.md summarizing the quarterly revenue figures in data/sales.csv",
    phases=(spec.Phase(name="report", tools=("read_file", "write_file")),),
    final_checks=(spec.FileContainsCheck(path="report.md", pattern="1350"),),
)
agent = Agent(
    model=[Model(first, "m1"), Model(second, "m2")],
    tools=[read_file, write_file],
    retry=tether.Retry(attempts=2, initial_delay=0.01, jitter=0.0),
)
mission = Mission(
    spec=CONTRACT,
    agent=agent,
    workspace=ROOT,
    policy=Policy(
        strategies=[Strategy("next model", "Another model takes over.", rotate_models=1)]
    ),
)


@app.workflow(name="mission_job")
async def mission_job(task: str) -> dict[str, Any]:
    return (await mission.run(task)).model_dump(mode="json")


def kill_after_rollback_is_audited() -> None:
    append = app.store.append_audit

    def appended(rows: Any, now: float) -> None:
        append(rows, now)
        if any(_is_rollback(row) for row in rows):
            die_once()

    app.store.append_audit = appended  # type: ignore[method-assign]


def _is_rollback(row: AuditRow) -> bool:
    return row.kind == "correction" and b'"action":"rollback"' in row.body.replace(b" ", b"")


async def main() -> None:
    (ROOT / "data").mkdir(parents=True, exist_ok=True)
    (ROOT / "data" / "sales.csv").write_text("quarter,revenue\nQ1,1200\nQ2,1350\n")
    if MODE == "after-audit":
        kill_after_rollback_is_audited()
    async with app:
        print("READY", flush=True)
        handle = await app.start(mission_job, CONTRACT.objective, id=RUN_ID)
        outcome = await handle.result()
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
