"""What one model call costs through tether, against the same local server, beside the SDK.

    python bench/bench_agent.py --backend sqlite|sqlite-full|postgres [--n 300] [--provider openai]

A fake chat-completions (or messages) server runs in a process of its own on 127.0.0.1
(tests/agent/servers) and answers every call at once with a short text. Per call, measured
back to back in one loop so that load on a shared machine hits all of them alike:

- sdk: `client.chat.completions.create(...)` (or `client.messages.create`) on the official SDK;
- provider: `provider.complete(request, timeout=...)` (conversion both ways, classification);
- step: `await llm(request)` inside a running workflow, where `llm` is an `@app.step` that
  calls `provider.complete`: the answer is checkpointed in the journal before the workflow
  goes on;
- checkpoint: `await tiny(i)`, a trivial step in the same workflow: the floor of one
  checkpoint on this database, in the same run.

The differences (provider - sdk, step - sdk) are medians of the per-iteration differences.
The target: step - sdk <= 2 ms + checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tether
from tether.agent.types import Message, ModelRequest, ModelResponse, Provider

from benchlib import emit, fresh_database, median, pct

ROOT = Path(__file__).resolve().parents[1]
REQUEST = ModelRequest(
    model="bench-model",
    messages=(
        Message(role="system", content="You are a terse assistant."),
        Message(role="user", content="Say ok."),
    ),
)
TIMEOUT = 30.0


@contextmanager
def fake_server(kind: str) -> Iterator[str]:
    """A fake model server in a child process; yields the base URL for the SDK."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.servers", kind],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("URL "):
            raise RuntimeError(f"the fake {kind} server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def sdk_call(kind: str, base_url: str) -> tuple[Callable[[], Awaitable[Any]], Any]:
    if kind == "openai":
        import openai

        oa = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
        messages: list[Any] = [{"role": m.role, "content": m.content} for m in REQUEST.messages]

        async def call_openai() -> Any:
            return await oa.chat.completions.create(
                model=REQUEST.model, messages=messages, timeout=TIMEOUT
            )

        return call_openai, oa
    import anthropic

    an = anthropic.AsyncAnthropic(base_url=base_url, api_key="bench", max_retries=0)

    async def call_anthropic() -> Any:
        return await an.messages.create(
            model=REQUEST.model,
            max_tokens=4096,
            system=REQUEST.messages[0].content,
            messages=[{"role": "user", "content": REQUEST.messages[1].content}],
            timeout=TIMEOUT,
        )

    return call_anthropic, an


def make_provider(kind: str, base_url: str) -> Any:
    if kind == "openai":
        from tether.agent.providers.openai import OpenAIProvider

        return OpenAIProvider(base_url=base_url, api_key="bench")
    from tether.agent.providers.anthropic import AnthropicProvider

    return AnthropicProvider(base_url=base_url, api_key="bench")


def build(
    app: tether.App,
    provider: Provider,
    direct: Callable[[], Awaitable[Any]],
    lat: dict[str, list[float]],
) -> Any:
    @app.step(name="llm")
    async def llm(request: ModelRequest) -> ModelResponse:
        return await provider.complete(request, timeout=TIMEOUT)

    @app.step(name="tiny")
    async def tiny(i: int) -> int:
        return i + 1

    async def clock(name: str, call: Awaitable[Any]) -> None:
        t = time.perf_counter()
        await call
        lat[name].append(time.perf_counter() - t)

    @app.workflow(name="calls")
    async def calls(n: int) -> int:
        # The four cases side by side in one loop, so that load on a shared machine falls on
        # all of them alike. The direct calls in the workflow body are not journaled: they
        # are only timed here, and this benchmark never replays.
        for i in range(n):
            await clock("sdk", direct())
            await clock("provider", provider.complete(REQUEST, timeout=TIMEOUT))
            await clock("step", llm(REQUEST))
            await clock("checkpoint", tiny(i))
        return n

    return calls


async def measure(env: dict[str, str], n: int = 300, kind: str = "openai") -> dict[str, Any]:
    lat: dict[str, list[float]] = {"sdk": [], "provider": [], "step": [], "checkpoint": []}
    with fake_server(kind) as base_url:
        direct, client = sdk_call(kind, base_url)
        provider = make_provider(kind, base_url)
        app = tether.App(settings=tether.Settings.from_env(env))
        calls = build(app, provider, direct, lat)
        async with app:
            await (await app.start(calls, 30)).result()  # warm up: connections, caches
            for xs in lat.values():
                xs.clear()
            await (await app.start(calls, n)).result()
        app.close()
        await provider.aclose()
        await client.close()
    out: dict[str, Any] = {"provider_kind": kind, "n": n}
    for name, xs in lat.items():
        out[f"{name}_us"] = round(median(xs) * 1e6, 1)
        out[f"{name}_p95_us"] = round(pct(xs, 95) * 1e6, 1)
    # medians of the paired differences: call i of each case ran back to back
    for name in ("provider", "step"):
        diffs = [x - d for x, d in zip(lat[name], lat["sdk"], strict=True)]
        out[f"{name}_minus_sdk_us"] = round(median(diffs) * 1e6, 1)
    out["target_us"] = round(2000 + out["checkpoint_us"], 1)
    out["within_target"] = out["step_minus_sdk_us"] <= out["target_us"]
    return out


def show(result: dict[str, Any]) -> None:
    for name in ("sdk", "provider", "step", "checkpoint"):
        print(
            f"{name:11s} median {result[f'{name}_us'] / 1000:7.3f} ms"
            f"   p95 {result[f'{name}_p95_us'] / 1000:7.3f} ms"
        )
    print(f"provider - sdk   {result['provider_minus_sdk_us'] / 1000:7.3f} ms  (median of pairs)")
    print(
        f"step - sdk       {result['step_minus_sdk_us'] / 1000:7.3f} ms  (median of pairs)"
        f"   (target <= 2 ms + checkpoint = {result['target_us'] / 1000:.3f} ms)"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "sqlite-full", "postgres"])
    p.add_argument("--provider", default="openai", choices=["openai", "anthropic"])
    p.add_argument("--n", type=int, default=300)
    args = p.parse_args()
    with fresh_database(args.backend) as env:
        result = asyncio.run(measure(env, args.n, args.provider))
    show(result)
    emit({"bench": "agent", "backend": args.backend, **result})
