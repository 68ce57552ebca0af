"""A worker process for the agent outage tests: it runs four agent runs and exits.

    python agent_fleet.py INDEX PRIMARY_URL FALLBACK_URL     (database from TETHER_DATABASE_URL)

The model chain is [primary, fallback]: tether's OpenAIProvider named "primary" and its
AnthropicProvider named "fallback", over the unmodified SDKs, each client sending this
process's pid as `x-client-id`. Every process shares one `Services` gate through the
database, with the policy of the service "primary" given as JSON in TETHER_TEST_POLICY
(the fields of `ServicePolicy`). Each turn the model calls the read-only tool `work`. The
process prints READY, starts the runs `w<INDEX>-r0` .. `w<INDEX>-r3`, waits for them and
prints DONE.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import anthropic
import openai

import tether
from tether.agent import Agent, Model, ServicePolicy, Services
from tether.agent.providers.anthropic import AnthropicProvider
from tether.agent.providers.openai import OpenAIProvider

INDEX, PRIMARY_URL, FALLBACK_URL = sys.argv[1], sys.argv[2], sys.argv[3]
RUNS = 4
HEADERS = {"x-client-id": str(os.getpid())}

app = tether.App()


@app.tool(side_effect="read_only")
async def work(n: int) -> int:
    """Work on item n."""
    await asyncio.sleep(0.1)
    return n


primary = OpenAIProvider(
    openai.AsyncOpenAI(base_url=PRIMARY_URL, api_key="sk-test", default_headers=HEADERS),
    name="primary",
)
fallback = AnthropicProvider(
    anthropic.AsyncAnthropic(base_url=FALLBACK_URL, api_key="sk-test", default_headers=HEADERS),
    name="fallback",
    max_tokens=64,
)
services = Services(
    app.store, {"primary": ServicePolicy(**json.loads(os.environ["TETHER_TEST_POLICY"]))}
)
agent = Agent(
    model=[
        Model(primary, "gpt-test", max_tokens=64, timeout=10.0),
        Model(fallback, "claude-test", max_tokens=64, timeout=10.0),
    ],
    tools=[work],
    instructions="Work through the items, one per turn.",
    services=services,
    retry=tether.Retry(attempts=3, initial_delay=0.2, backoff=2.0, max_delay=5.0, jitter=0.0),
)


@app.workflow(name="fleet_job")
async def fleet_job(task: str) -> str:
    result = await agent.run(task)
    return str(result.output)


async def main() -> None:
    async with app:
        print("READY", flush=True)
        handles = [
            await app.start(fleet_job, f"job {i} of worker {INDEX}", id=f"w{INDEX}-r{i}")
            for i in range(RUNS)
        ]
        for handle in handles:
            await handle.result(timeout=600)
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
