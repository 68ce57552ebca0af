"""A worker process whose agent calls a tool guarded by the fleet's breaker on `github`.

    TOOL_LOG=/file RUN_ID=id python -m tests.agent.apps.tool_service_agent
    (database from TETHER_DATABASE_URL and TETHER_PG_SCHEMA)

The tool `issues` (a plain `def`) appends `pid` to TOOL_LOG each time it runs and fails with a
connection error (the service is down). The agent calls it twice, then answers; the process
prints the run's tool answers as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import os

import tether
from tether.agent import Agent, Model, ServicePolicy, Services
from tether.agent.providers import scripted as s

POLICY = ServicePolicy(failure_threshold=2, window=120.0, cooldown=600.0)

app = tether.App()
app.services = Services(app.store, {"github": POLICY})


@app.tool(side_effect="read_only", retry=tether.Retry.never(), service="github")
def issues(repo: str) -> list[str]:
    """List a repository's open issues (a plain def: it runs on a thread)."""
    with open(os.environ["TOOL_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")
    raise ConnectionRefusedError(f"github.example is down (asked for {repo})")


model = s.ScriptedProvider(
    [s.call("issues", repo="a/b"), s.call("issues", repo="a/c"), s.reply("done")]
)
agent = Agent(model=Model(model, "m1"), tools=[issues])


@app.workflow(name="triage")
async def triage() -> list[str]:
    result = await agent.run("triage the issues")
    return [m.content for m in result.conversation if m.role == "tool"]


async def main() -> None:
    async with app:
        handle = await app.start(triage, id=os.environ["RUN_ID"])
        print(json.dumps(await handle.result(timeout=60)))


if __name__ == "__main__":
    asyncio.run(main())
