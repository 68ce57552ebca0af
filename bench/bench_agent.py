"""What one model call costs through tether, against the same local server, beside the SDK.

    python bench/bench_agent.py --backend sqlite|sqlite-full|postgres [--n 300]
                                [--provider openai|anthropic]

A fake chat-completions (or messages) server runs in a process of its own on 127.0.0.1
(tests/agent/servers) and answers every call at once. Per iteration, measured back to back in
one loop so that load on a shared machine hits all of them alike:

- sdk: `client.chat.completions.create(...)` (or `client.messages.create`) on the official SDK;
- provider: `provider.complete(request, timeout=...)` (conversion both ways, classification);
- step: `await llm(request)` inside a running workflow, where `llm` is an `@app.step` that
  calls `provider.complete`: the answer is checkpointed in the journal before the workflow
  goes on;
- checkpoint: `await tiny(i)`, a trivial step in the same workflow: the floor of one
  checkpoint on this database, in the same run;
- agent: one run of a `tether.agent.Agent` (budget with prices, default retry and failover
  policy, no hooks) whose server-scripted conversation makes MODEL_CALLS model calls, with a
  call of a trivial read-only tool after each but the last. Each model call is timed from
  inside the agent loop: the whole of `_Loop.model_turn` (budget checks, the request built
  from the conversation, the journaled `llm:*` step, the provider call, the tally), so the
  tool calls, the run's start and its end are not in the figure. The same conversations are
  sent by the SDK directly (the same request bodies the provider sends: agent-sdk), call k
  paired with the agent's call k;
- gated: the same agent with a `Services` gate on its model (circuit breaker and rate budget
  in the same database): each call takes a permit before and returns it after.

The differences are medians of the per-iteration differences (call k of each case ran back
to back). The target: agent - agent-sdk <= 2 ms + checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import tether
from tether.agent import Agent, Budget, Model, Price, ServicePolicy, Services
from tether.agent import agent as agent_loop
from tether.agent.types import Message, ModelRequest, ModelResponse, Provider
from tether.store import base

from benchlib import emit, fresh_database, median, pct

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench-model"
REQUEST = ModelRequest(
    model=MODEL,
    messages=(
        Message(role="system", content="You are a terse assistant."),
        Message(role="user", content="Say ok."),
    ),
)
TIMEOUT = 30.0
MODEL_CALLS = 3
"""Model calls per agent run: MODEL_CALLS - 1 answers that call the tool, then the answer."""
CHUNK = 50
"""Iterations per workflow: each workflow runs this many iterations of every case."""
GATE_POLICY = ServicePolicy(
    failure_threshold=5,
    window=30.0,
    cooldown=30.0,
    requests_per_minute=1_000_000,
    tokens_per_minute=1_000_000_000,
)
"""A breaker and a rate budget that the benchmark never exhausts: the gate's work, no waits."""


def responder(recorded: Any) -> Any:
    """The fake server's answer (run in the server's process; see `fake_server`).

    A request with tools (an agent's) is answered with a call of `lookup` until it carries
    MODEL_CALLS - 1 answers, then with the final text; a request without tools with "ok".
    """
    from tests.agent.servers.base import Reply

    from tether.agent.types import ToolCall

    body = recorded.body
    answered = sum(1 for m in body.get("messages") or () if m.get("role") == "assistant")
    if body.get("tools") and answered + 1 < MODEL_CALLS:
        call = ToolCall(id=f"call_{answered}", name="lookup", arguments={"key": answered})
        return Reply(tool_calls=(call,))
    return Reply(text="ok")


@contextlib.contextmanager
def fake_server(kind: str) -> Iterator[str]:
    """A fake model server in a child process; yields the base URL for the SDK."""
    path = [str(ROOT), str(ROOT / "src"), str(ROOT / "bench")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.servers", kind, "--respond", "bench_agent:responder"],
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


def sdk_client(kind: str, base_url: str) -> Any:
    if kind == "openai":
        import openai

        return openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    import anthropic

    return anthropic.AsyncAnthropic(base_url=base_url, api_key="bench", max_retries=0)


def sdk_call(
    kind: str, client: Any, provider: Any, request: ModelRequest
) -> Callable[[], Awaitable[Any]]:
    """The SDK called directly with the body the provider sends for `request`."""
    params = provider._params(request)  # the provider's own wire form, computed once
    create = client.chat.completions.create if kind == "openai" else client.messages.create

    async def call() -> Any:
        return await create(**params, timeout=TIMEOUT)

    return call


def make_provider(kind: str, base_url: str) -> Any:
    if kind == "openai":
        from tether.agent.providers.openai import OpenAIProvider

        return OpenAIProvider(base_url=base_url, api_key="bench")
    from tether.agent.providers.anthropic import AnthropicProvider

    return AnthropicProvider(base_url=base_url, api_key="bench")


class Bench:
    """The cases, their latencies, and the workflow that times them side by side."""

    def __init__(self, app: tether.App, kind: str, client: Any, provider: Provider) -> None:
        self.app, self.kind, self.client, self.provider = app, kind, client, provider
        self.lat: dict[str, list[float]] = {}
        self.direct = sdk_call(kind, client, provider, REQUEST)
        self.agent_direct: list[Callable[[], Awaitable[Any]]] = []
        self.agent_requests: list[ModelRequest] = []

        @app.tool(side_effect="read_only")
        async def lookup(key: int) -> str:
            """Look a key up."""
            return f"value {key}"

        model = Model(provider, MODEL, price=Price(1.0, 4.0), timeout=TIMEOUT)
        options: dict[str, Any] = {
            "tools": [lookup],
            "instructions": "You are a terse assistant.",
            "budget": Budget(max_steps=20, max_tokens=100_000, max_cost=1.0, max_time=600),
        }
        self.agent = Agent(model=model, name="agent", **options)
        self.gate = Services(app.store, {model.service_name: GATE_POLICY})
        self.service = model.service_name
        self.gated = Agent(model=model, name="gated", services=self.gate, **options)
        self.calls = self.define()

    def clear(self) -> None:
        self.lat = {}

    def add(self, name: str, seconds: float) -> None:
        self.lat.setdefault(name, []).append(seconds)

    async def clock(self, name: str, call: Awaitable[Any]) -> Any:
        t = time.perf_counter()
        value = await call
        self.add(name, time.perf_counter() - t)
        return value

    def define(self) -> Any:
        app, provider = self.app, self.provider

        @app.step(name="llm")
        async def llm(request: ModelRequest) -> ModelResponse:
            return await provider.complete(request, timeout=TIMEOUT)

        @app.step(name="tiny")
        async def tiny(i: int) -> int:
            return i + 1

        @app.workflow(name="calls")
        async def calls(n: int) -> int:
            # Every case side by side in one loop, so that load on a shared machine falls on
            # all of them alike. The direct calls in the workflow body are not journaled: they
            # are only timed here, and this benchmark never replays.
            for i in range(n):
                await self.clock("sdk", self.direct())
                await self.clock("provider", provider.complete(REQUEST, timeout=TIMEOUT))
                await self.clock("step", llm(REQUEST))
                await self.clock("checkpoint", tiny(i))
                for call in self.agent_direct:
                    await self.clock("agent_sdk", call())
                for request in self.agent_requests:
                    await self.clock("agent_provider", provider.complete(request, timeout=TIMEOUT))
                await self.clock("agent_run", self.agent.run("Look up two keys."))
                await self.clock("gated_run", self.gated.run("Look up two keys."))
            return n

        return calls

    async def conversation(self) -> list[ModelRequest]:
        """Run the agent once and return the requests it made (to replay through the SDK)."""
        sent: list[ModelRequest] = []
        complete = self.provider.complete

        async def recording(request: ModelRequest, **kwargs: Any) -> ModelResponse:
            sent.append(request)
            return await complete(request, **kwargs)

        @self.app.workflow(name="conversation")
        async def conversation() -> int:
            return (await self.agent.run("Look up two keys.")).model_calls

        self.provider.complete = recording  # type: ignore[method-assign]
        try:
            calls = await (await self.app.start(conversation)).result()
        finally:
            del self.provider.complete
        if calls != MODEL_CALLS or len(sent) != MODEL_CALLS:
            raise RuntimeError(f"the agent made {calls} model calls, not {MODEL_CALLS}")
        return sent

    async def run(self, n: int) -> None:
        done = 0
        while done < n:
            chunk = min(CHUNK, n - done)
            await (await self.app.start(self.calls, chunk)).result()
            done += chunk


@contextlib.contextmanager
def timed_turns(bench: Bench) -> Iterator[None]:
    """Time each model call and tool call of the agent loop, from inside the loop."""
    loop = agent_loop._Loop
    model_turn, tool_turn = loop.model_turn, loop.tool_turn

    async def timed_model_turn(self: Any) -> Any:
        t = time.perf_counter()
        try:
            return await model_turn(self)
        finally:
            bench.add(f"{self.agent.name}_model", time.perf_counter() - t)

    async def timed_tool_turn(self: Any, call: Any) -> None:
        t = time.perf_counter()
        try:
            await tool_turn(self, call)
        finally:
            bench.add(f"{self.agent.name}_tool", time.perf_counter() - t)

    loop.model_turn, loop.tool_turn = timed_model_turn, timed_tool_turn  # type: ignore[method-assign]
    try:
        yield
    finally:
        loop.model_turn, loop.tool_turn = model_turn, tool_turn  # type: ignore[method-assign]


async def measure(env: dict[str, str], n: int = 300, kind: str = "openai") -> dict[str, Any]:
    load_before = os.getloadavg()
    with fake_server(kind) as base_url:
        client = sdk_client(kind, base_url)
        provider = make_provider(kind, base_url)
        app = tether.App(settings=tether.Settings.from_env(env))
        bench = Bench(app, kind, client, provider)
        async with app:
            requests = await bench.conversation()
            bench.agent_direct = [sdk_call(kind, client, provider, r) for r in requests]
            bench.agent_requests = requests
            with timed_turns(bench):
                await bench.run(30)  # warm up: connections, caches
                bench.clear()
                await bench.run(n)
            window = bench.gate.state(bench.service).window_requests
        app.close()
        await provider.aclose()
        await client.close()
    out = summarize(bench.lat, n, kind)
    out["gate_window_calls"] = window
    out["load_before"] = [round(x, 2) for x in load_before]
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def gate_scaling(
    env: dict[str, str], occupancies: tuple[int, ...] = (0, 1000, 3000), n: int = 200
) -> dict[str, Any]:
    """What the gate costs a call (acquire then release) with calls already in its window.

    The window is filled through the store (admitted and finished calls, as a fleet's would
    be), then `n` calls are timed at each occupancy.
    """
    app = tether.App(settings=tether.Settings.from_env(env))
    store, limits = app.store, GATE_POLICY.limits()
    gate = Services(store, {"bench": GATE_POLICY})

    async def timed(count: int) -> list[float]:
        lat = []
        for _ in range(count):
            t = time.perf_counter()
            permit = await gate.acquire("bench", tokens=500, max_wait=TIMEOUT)
            await gate.release(permit, ok=True, tokens_used=18)
            lat.append(time.perf_counter() - t)
        return lat

    out: dict[str, Any] = {}
    try:
        asyncio.run(timed(20))  # warm up
        for k in occupancies:
            while (window := gate.state("bench").window_requests) < k:
                for _ in range(min(200, k - window)):
                    call = base.ServiceCall("bench", uuid.uuid4().hex, limits, 1, 500)
                    store.admit_service_call(call)
                    store.finish_service_call(call, base.CALL_OK, 18)
            lat = asyncio.run(timed(n))
            out[str(window)] = {
                "median_us": round(median(lat) * 1e6, 1),
                "p95_us": round(pct(lat, 95) * 1e6, 1),
            }
    finally:
        app.close()
    return out


def rest_of_runs(runs: list[float], models: list[float], tools: list[float]) -> list[float]:
    """What each run spent outside its model and tool calls (its start step, its result)."""
    m, t = MODEL_CALLS, MODEL_CALLS - 1
    return [
        run - sum(models[i * m : (i + 1) * m]) - sum(tools[i * t : (i + 1) * t])
        for i, run in enumerate(runs)
    ]


def summarize(lat: Mapping[str, list[float]], n: int, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"provider_kind": kind, "n": n, "model_calls_per_run": MODEL_CALLS}
    for name, xs in sorted(lat.items()):
        out[f"{name}_us"] = round(median(xs) * 1e6, 1)
        out[f"{name}_p95_us"] = round(pct(xs, 95) * 1e6, 1)
    # medians of the paired differences: call i of each case ran back to back
    pairs = {
        "provider_minus_sdk": ("provider", "sdk"),
        "step_minus_sdk": ("step", "sdk"),
        "agent_provider_minus_sdk": ("agent_provider", "agent_sdk"),
        "agent_minus_sdk": ("agent_model", "agent_sdk"),
        "gated_minus_sdk": ("gated_model", "agent_sdk"),
        "gate": ("gated_model", "agent_model"),
    }
    for label, (a, b) in pairs.items():
        diffs = [x - y for x, y in zip(lat[a], lat[b], strict=True)]
        out[f"{label}_us"] = round(median(diffs) * 1e6, 1)
        out[f"{label}_p95_us"] = round(pct(diffs, 95) * 1e6, 1)
    for name in ("agent", "gated"):
        rest = rest_of_runs(lat[f"{name}_run"], lat[f"{name}_model"], lat[f"{name}_tool"])
        out[f"{name}_rest_of_run_us"] = round(median(rest) * 1e6, 1)
    out["target_us"] = round(2000 + out["checkpoint_us"], 1)
    out["within_target"] = out["step_minus_sdk_us"] <= out["target_us"]
    out["agent_within_target"] = out["agent_minus_sdk_us"] <= out["target_us"]
    out["gated_within_target"] = out["gated_minus_sdk_us"] <= out["target_us"]
    return out


def show(result: dict[str, Any]) -> None:
    def ms(key: str) -> str:
        return f"{result[key] / 1000:7.3f} ms"

    names = ["sdk", "provider", "step", "checkpoint", "agent_sdk", "agent_provider"]
    names += ["agent_model", "gated_model"]
    names += ["agent_tool", "gated_tool", "agent_run", "gated_run"]
    for name in names:
        print(f"{name:12s} median {ms(f'{name}_us')}   p95 {ms(f'{name}_p95_us')}")
    target = f"(target <= 2 ms + checkpoint = {result['target_us'] / 1000:.3f} ms)"
    print(f"provider - sdk       {ms('provider_minus_sdk_us')}  (median of pairs)")
    print(f"step - sdk           {ms('step_minus_sdk_us')}  {target}")
    print(f"agent prov. - sdk    {ms('agent_provider_minus_sdk_us')}  (same conversations)")
    print(f"agent call - sdk     {ms('agent_minus_sdk_us')}  p95 {ms('agent_minus_sdk_p95_us')}")
    print(f"gated call - sdk     {ms('gated_minus_sdk_us')}  p95 {ms('gated_minus_sdk_p95_us')}")
    print(
        f"gate (gated - agent) {ms('gate_us')}  p95 {ms('gate_p95_us')}"
        f"  ({result['gate_window_calls']} calls in the rate window at the end)"
    )
    print(f"load average before {result['load_before']}, after {result['load_after']}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "sqlite-full", "postgres"])
    p.add_argument("--provider", default="openai", choices=["openai", "anthropic"])
    p.add_argument("--n", type=int, default=300)
    p.add_argument(
        "--gate-scaling",
        action="store_true",
        help="instead: the Services gate's cost per call against the calls in its window",
    )
    args = p.parse_args()
    if args.gate_scaling:
        with fresh_database(args.backend) as env:
            scaling = gate_scaling(env)
        for window, figures in scaling.items():
            print(
                f"{window:>6s} calls in the window: acquire + release median "
                f"{figures['median_us'] / 1000:.3f} ms, p95 {figures['p95_us'] / 1000:.3f} ms"
            )
        emit({"bench": "agent-gate", "backend": args.backend, "scaling": scaling})
        sys.exit()
    with fresh_database(args.backend) as env:
        result = asyncio.run(measure(env, args.n, args.provider))
    show(result)
    emit({"bench": "agent", "backend": args.backend, **result})
