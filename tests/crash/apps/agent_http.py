"""A tether app for the HTTP agent crash test: one agent run of 21 model calls and 20 tool
calls, its model served over HTTP by a fake OpenAI or Anthropic server in another process.

    python agent_http.py WORKDIR openai|anthropic BASE_URL   (database from TETHER_DATABASE_URL)

The provider is tether's OpenAIProvider or AnthropicProvider over the unmodified SDK; its
client sends this process's pid as `x-client-id`, which the server's request log records.
The model (tests/crash/apps/agent_http_model.py) has turn i call `lookup(i)` (read only) when
i is even and `charge(i)` (effectful) when odd. `charge` performs its effect once per
idempotency key, as a payment API does: the effect is the atomic creation of
WORKDIR/effects/<key> holding its receipt (a hard link, refused if it exists), and a later
execution for the same key returns that receipt; every execution of either tool appends to
WORKDIR/tools.ledger. The app prints READY, waits for the run and prints DONE.
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
from tether.agent.providers.anthropic import AnthropicProvider
from tether.agent.providers.openai import OpenAIProvider
from tether.agent.types import Provider

WORK, KIND, URL = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
PID = os.getpid()
KEY = "sk-test-crash"

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
    if marker.exists():
        return marker.read_text()  # the effect happened already: its original receipt
    receipt = f"charged {n} by {PID}"
    draft = WORK / "drafts" / f"{key}.{PID}"
    draft.write_text(receipt)
    fd = os.open(draft, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    try:
        os.link(draft, marker)  # the effect: atomic, and refused if it happened already
    except FileExistsError:
        return marker.read_text()
    await asyncio.sleep(random.uniform(0.0, 0.02))
    return receipt


class Summary(pydantic.BaseModel):
    turns: int
    receipt: int


def provider() -> Provider:
    headers = {"x-client-id": str(PID)}
    if KIND == "openai":
        import openai

        return OpenAIProvider(
            openai.AsyncOpenAI(base_url=URL, api_key=KEY, default_headers=headers)
        )
    import anthropic

    return AnthropicProvider(
        anthropic.AsyncAnthropic(base_url=URL, api_key=KEY, default_headers=headers),
        max_tokens=256,
    )


agent = Agent(
    model=Model(provider(), f"{KIND}-test-model", timeout=30.0),
    tools=[lookup, charge],
    instructions="Work through the numbers.",
    output=Summary,
    retry=tether.Retry(attempts=3, initial_delay=0.05, jitter=0.0),
)


@app.workflow(name="agent_job")
async def agent_job() -> dict[str, int]:
    result = await agent.run("Process 20 numbers.")
    summary: Summary = result.output
    return summary.model_dump()


async def main() -> None:
    (WORK / "effects").mkdir(parents=True, exist_ok=True)
    (WORK / "drafts").mkdir(parents=True, exist_ok=True)
    async with app:
        print("READY", flush=True)
        handle = await app.start(agent_job, id="agent-1")
        await handle.result()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
