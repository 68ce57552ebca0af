"""Tools that declare their service: the fleet's circuit breaker and rate budget guard each call
(both backends). Executions are counted by the tools themselves."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import (
    Agent,
    Model,
    Permit,
    ServicePolicy,
    Services,
    ServiceUnavailableError,
    ToolService,
    ToolUnavailableError,
)
from tether.agent.providers import scripted as s
from tether.clock import FakeClock
from tether.settings import Settings

from .helpers import QUICK
from .test_services import most_in_any_window

BREAKER = ServicePolicy(failure_threshold=2, window=120.0, cooldown=60.0)
NEVER = tether.Retry.never()


class GitHub:
    """A fake service behind a tool: up or down, every call the tool makes counted."""

    def __init__(self, app: tether.App, **tool_options: Any) -> None:
        self.up = False
        self.executions = 0
        self.error: BaseException = ConnectionRefusedError("github.example refused the connection")
        options = {"side_effect": "read_only", "retry": NEVER, "service": "github", **tool_options}

        @app.tool(**options)
        async def issues(repo: str) -> list[str]:
            """List a repository's open issues."""
            self.executions += 1
            if not self.up:
                raise self.error
            return [f"{repo}#1"]

        self.tool = issues


def scripted_agent(tools: list[Any], calls: int, **options: Any) -> Agent:
    """An agent whose model calls `issues` `calls` times, one per turn, then answers."""
    turns = [s.call("issues", repo=f"r/{i}") for i in range(calls)]
    model = s.ScriptedProvider([*turns, s.reply("done")])
    return Agent(model=Model(model, "m1"), tools=tools, retry=QUICK, **options)


def define(app: tether.App, agent: Agent, name: str = "triage") -> None:
    @app.workflow(name=name)
    async def triage() -> list[str]:
        result = await agent.run("triage")
        return [m.content for m in result.conversation if m.role == "tool"]


async def run(app: tether.App, run_id: str, name: str = "triage") -> list[str]:
    handle = await app.start(name, id=run_id)
    answers: list[str] = await handle.result(timeout=30)
    return answers


# -- the breaker ---------------------------------------------------------------------------------


async def test_breaker__opens_after_the_threshold__later_calls_and_runs_are_not_executed(
    make_app: MakeApp,
):
    clock = FakeClock()
    app = make_app()
    app.services = Services(app.store, {"github": BREAKER}, clock=clock)
    github = GitHub(app)
    define(app, scripted_agent([github.tool], calls=4))
    other_app = make_app()  # another worker, another agent, its own connection
    other_app.services = Services(other_app.store, {"github": BREAKER}, clock=clock)
    other = GitHub(other_app)
    define(other_app, scripted_agent([other.tool], calls=1), name="other")

    async with app:
        answers = await run(app, "t1")
    assert github.executions == 2, "the calls after the breaker opened were run"
    assert [a.startswith("error: issues failed: ConnectionRefusedError") for a in answers] == [
        True,
        True,
        False,
        False,
    ]
    for refused in answers[2:]:
        assert refused.startswith("error: tool 'issues' was not run: service 'github' is ")
        assert "unavailable until 2027-01-15 08:01:00 UTC (in 60.0s)" in refused
        assert "circuit breaker is open" in refused
    assert app.services.state("github").state == "open"

    async with other_app:
        other_answers = await run(other_app, "t2", "other")
    assert other.executions == 0, "another agent's run called the open service"
    assert "was not run" in other_answers[0]
    # The refusal is the step's journaled outcome, like any tool answer.
    steps = [st for st in app.store.load_steps("t1") if st.name == "tool:issues"]
    assert [st.status for st in steps] == ["error"] * 4

    clock.advance(61)  # the cooldown is over: the next call is the probe
    github.up = True
    define(app, scripted_agent([github.tool], calls=2), name="after")
    async with app:
        after = await run(app, "t3", "after")
    assert after == ['["r/0#1"]', '["r/1#1"]']
    assert github.executions == 4
    assert app.services.state("github").state == "closed"


async def test_breaker__a_failed_probe_reopens_it_for_another_cooldown(make_app: MakeApp):
    clock = FakeClock()
    app = make_app()
    app.services = Services(app.store, {"github": BREAKER}, clock=clock)
    github = GitHub(app)
    define(app, scripted_agent([github.tool], calls=3))
    async with app:
        await run(app, "open")
        clock.advance(61)
        answers = await run(app, "probe")
    assert github.executions == 3  # two to open it, then one probe in the second run
    assert answers[0].startswith("error: issues failed:")
    assert "in 60.0s" in answers[1], answers[1]
    assert "in 60.0s" in answers[2]


async def test_breaker__while_a_probe_is_out__other_calls_are_refused(make_app: MakeApp):
    clock = FakeClock()
    app = make_app()
    app.services = gate = Services(app.store, {"github": BREAKER}, clock=clock)
    github = GitHub(app)
    define(app, scripted_agent([github.tool], calls=2))
    async with app:
        await run(app, "open")
        clock.advance(61)
        probe = await gate.acquire("github")  # another caller's probe, still out
        assert probe.probe
        answers = await run(app, "during")
        await gate.release(probe, ok=True)
    assert github.executions == 2
    assert all("a probe call is testing whether it has recovered" in a for a in answers)
    assert all("(in 60.0s)" in a for a in answers)  # when the probe is given up (probe_timeout)


async def test_breaker__opened_by_another_process__this_one_does_not_call(
    settings: Settings, make_app: MakeApp, tmp_path: Path
):
    log = tmp_path / "executions.txt"
    log.touch()
    env = dict(
        os.environ,
        TETHER_DATABASE_URL=settings.database_url or "",
        TETHER_PG_SCHEMA=settings.pg_schema,
        TETHER_POLL_INTERVAL="0.05",
        TOOL_LOG=str(log),
        RUN_ID="child-run",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), *sys.path]),
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.agent.apps.tool_service_agent",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=90)
    assert child.returncode == 0, err.decode()[-3000:]
    child_answers = json.loads(out.decode().strip().splitlines()[-1])
    assert all(a.startswith("error: issues failed: ConnectionRefusedError") for a in child_answers)
    child_pids = log.read_text().splitlines()
    assert len(child_pids) == 2  # the threshold: the breaker is open now
    assert str(os.getpid()) not in child_pids

    app = make_app()
    policy = ServicePolicy(failure_threshold=2, window=120.0, cooldown=600.0)
    app.services = Services(app.store, {"github": policy})  # the database's own clock
    github = GitHub(app)
    define(app, scripted_agent([github.tool], calls=3))
    async with app:
        answers = await run(app, "parent-run")
    assert github.executions == 0, "this process called a service another process found down"
    assert all("was not run: service 'github' is unavailable until" in a for a in answers)
    assert log.read_text().splitlines() == child_pids


async def test_replay__a_refusal_is_journaled__resumed_runs_see_it_again(make_app: MakeApp):
    clock = FakeClock()
    app = make_app()
    app.services = Services(app.store, {"github": BREAKER}, clock=clock)
    github = GitHub(app)
    agent = scripted_agent([github.tool], calls=3)
    failures = [1]

    @app.workflow(name="flaky")
    async def flaky() -> list[str]:
        result = await agent.run("triage")
        if failures:
            failures.pop()
            raise RuntimeError("the workflow's own code failed after the agent")
        return [m.content for m in result.conversation if m.role == "tool"]

    async with app:
        handle = await app.start(flaky, id="rp")
        with pytest.raises(tether.WorkflowFailedError):
            await handle.result(timeout=20)
        assert github.executions == 2
        clock.advance(3600)  # the breaker would now let a probe through...
        github.up = True
        await app.resume("rp")
        answers = await app.retrieve("rp").result(timeout=20)
    assert github.executions == 2, "the replay ran a tool call whose refusal was journaled"
    assert "was not run" in answers[2]
    assert "in 60.0s" in answers[2]  # the words of the first run, not of the present


# -- what counts as the service failing ----------------------------------------------------------


async def failures_after(app: tether.App, error: BaseException, **tool_options: Any) -> int:
    clock = FakeClock()
    app.services = Services(app.store, {"github": BREAKER}, clock=clock)
    github = GitHub(app, **tool_options)
    github.error = error
    define(app, scripted_agent([github.tool], calls=1))
    async with app:
        answers = await run(app, "f")
    assert github.executions == 1
    assert answers[0].startswith("error: issues failed:")
    return app.services.state("github").failures


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (ServiceUnavailableError("github answered 503"), True),
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("reset by peer"), True),
        (ValueError("no such repository"), False),
        (KeyError("title"), False),
        (PermissionError("token lacks the repo scope"), False),
    ],
)
async def test_failures__what_says_the_service_is_unwell_counts(
    make_app: MakeApp, error: BaseException, counted: bool
):
    assert await failures_after(make_app(), error) == int(counted)


class HTTPStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize(
    ("failures", "status", "counted"),
    [
        ((HTTPStatusError,), 404, True),
        (HTTPStatusError, 500, True),
        (lambda e: getattr(e, "status_code", 0) >= 500, 503, True),
        (lambda e: getattr(e, "status_code", 0) >= 500, 404, False),
    ],
)
async def test_failures__the_tool_author_says_which_exceptions_count(
    make_app: MakeApp, failures: Any, status: int, counted: bool
):
    service = ToolService("github", failures=failures)
    found = await failures_after(make_app(), HTTPStatusError(status), service=service)
    assert found == int(counted)


async def test_failures__the_tools_timeout_counts_and_the_model_hears_of_it(make_app: MakeApp):
    app = make_app()
    app.services = Services(app.store, {"github": BREAKER}, clock=FakeClock())
    started: list[float] = []

    @app.tool(side_effect="read_only", retry=NEVER, timeout=0.2, service="github")
    async def slow(repo: str) -> str:
        """Hang."""
        started.append(time.monotonic())
        await asyncio.sleep(30)
        return "never"

    model = s.ScriptedProvider([s.call("slow", repo="x"), s.reply("done")])
    define(app, Agent(model=Model(model, "m1"), tools=[slow], retry=QUICK))
    async with app:
        answers = await run(app, "slow")
    assert len(started) == 1
    assert answers[0].startswith("error: slow failed: StepTimeoutError: step 'tool:slow'")
    assert app.services.state("github").failures == 1


async def test_failures__a_retried_tool_takes_a_permit_per_attempt_and_stops_when_refused(
    make_app: MakeApp,
):
    app = make_app()
    app.services = Services(app.store, {"github": BREAKER}, clock=FakeClock())
    quick = tether.Retry(attempts=5, initial_delay=0.01, jitter=0.0)
    github = GitHub(app, retry=quick)
    define(app, scripted_agent([github.tool], calls=1))
    async with app:
        answers = await run(app, "retried")
    assert github.executions == 2  # attempts 1 and 2 failed and opened it; 3 was refused
    assert answers[0].startswith("error: tool 'issues' was not run")
    [step] = [st for st in app.store.load_steps("retried") if st.name == "tool:issues"]
    assert step.attempts == 3


# -- the rate budget -----------------------------------------------------------------------------


class Recorder:
    """A service gate that records the admission times of one service's permits."""

    def __init__(self, inner: Services, service: str) -> None:
        self.inner = inner
        self.service = service
        self.admitted: list[float] = []  # the database's clock

    async def acquire(self, service: str, *, tokens: int = 0, max_wait: float = 60.0) -> Permit:
        permit = await self.inner.acquire(service, tokens=tokens, max_wait=max_wait)
        if service == self.service:  # the agent's model calls go through the gate too
            self.admitted.append(permit.admitted_at)
        return permit

    async def release(
        self, permit: Any, *, ok: bool, failure: bool = False, tokens_used: int = 0
    ) -> None:
        await self.inner.release(permit, ok=ok, failure=failure, tokens_used=tokens_used)


@pytest.mark.timeout(120)
async def test_budget__never_exceeded_across_concurrent_runs_on_two_workers(make_app: MakeApp):
    requests, window, runs, calls = 4, 0.5, 6, 3
    policy = ServicePolicy(requests_per_minute=requests, rate_window=window)
    apps, recorders, executions = [], [], []
    for w in range(2):
        app = make_app()
        recorder = Recorder(Services(app.store, {"search": policy}), "search")

        @app.tool(side_effect="read_only", service="search")
        async def search(query: str) -> str:
            """Search."""
            executions.append(time.time())
            await asyncio.sleep(0.02)
            return f"results for {query}"

        # The agent's gate (not the app's): the agent path takes `services=` first.
        define(app, scripted_agent_search([search], calls, services=recorder), name=f"w{w}")
        apps.append(app)
        recorders.append(recorder)

    async with apps[0], apps[1]:
        started = time.monotonic()
        results = await asyncio.gather(
            *(run(apps[i % 2], f"run-{i}", f"w{i % 2}") for i in range(runs))
        )
        elapsed = time.monotonic() - started
    assert all(answers == [f"results for q{j}" for j in range(calls)] for answers in results)
    admitted = [t for r in recorders for t in r.admitted]
    assert len(admitted) == len(executions) == runs * calls
    assert {len(r.admitted) > 0 for r in recorders} == {True}
    busiest = most_in_any_window(admitted, [1] * len(admitted), window)
    assert busiest <= requests
    by_start = most_in_any_window(executions, [1] * len(executions), window)
    print(
        f"{runs * calls} tool calls in {elapsed:.2f}s, budget {requests}/{window}s: busiest "
        f"window {busiest} admissions, {by_start} tool starts"
    )


def scripted_agent_search(tools: list[Any], calls: int, **options: Any) -> Agent:
    turns = [s.call("search", query=f"q{i}") for i in range(calls)]
    model = s.ScriptedProvider([*turns, s.reply("done")])
    return Agent(model=Model(model, "m1"), tools=tools, retry=QUICK, **options)


async def test_budget__no_room_within_max_wait__the_model_is_told_and_nothing_runs(
    make_app: MakeApp,
):
    app = make_app()
    app.services = Services(app.store, {"github": ServicePolicy(requests_per_minute=1)})
    github = GitHub(app, service=ToolService("github", max_wait=0.5))
    github.up = True
    define(app, scripted_agent([github.tool], calls=2))
    async with app:
        started = time.monotonic()
        answers = await run(app, "budget")
        elapsed = time.monotonic() - started
    assert github.executions == 1
    assert answers[0] == '["r/0#1"]'
    assert answers[1].startswith("error: tool 'issues' was not run: service 'github' has no ")
    assert "longer than the 0.5s a call may wait" in answers[1]
    print(f"refused without waiting out the window: the run took {elapsed:.2f}s")


# -- without an agent ----------------------------------------------------------------------------


async def test_direct__workflow_code_goes_through_the_apps_gate(make_app: MakeApp):
    clock = FakeClock()
    app = make_app()
    app.services = Services(app.store, {"github": BREAKER}, clock=clock)
    github = GitHub(app)
    sync_runs: list[str] = []

    @app.tool(side_effect="read_only", retry=NEVER, service="github", timeout=5)
    def issue_count(repo: str) -> int:
        """Count issues (a plain def)."""
        sync_runs.append(tether.context().idempotency_key)
        raise ConnectionAbortedError("down")

    @app.workflow(name="direct")
    async def direct() -> list[str]:
        out = []
        for tool in (github.tool, issue_count, github.tool):
            try:
                value = tool("r/x")
                out.append(str(await value if asyncio.iscoroutine(value) else value))
            except (ToolUnavailableError, ConnectionError) as exc:
                out.append(type(exc).__name__)
        return out

    async with app:
        answers = await (await app.start(direct, id="d")).result(timeout=20)
    assert answers == ["ConnectionRefusedError", "ConnectionAbortedError", "ToolUnavailableError"]
    assert (github.executions, len(sync_runs)) == (1, 1)
    assert len(sync_runs[0]) == 36  # the tool ran inside its step, with the step's context


def test_direct__a_plain_def_workflow_and_a_call_outside_any_workflow(make_app: MakeApp):
    app = make_app()
    app.services = Services(app.store, {"github": BREAKER}, clock=FakeClock())
    runs: list[int] = []

    @app.tool(side_effect="read_only", retry=NEVER, service="github")
    def flaky(n: int) -> int:
        """Fail with a 503 unless n is even."""
        runs.append(n)
        if n % 2:
            raise ServiceUnavailableError("503", service="github")
        return n

    @app.workflow(name="plain")
    def plain() -> list[str]:
        out = []
        for n in (2, 1, 3, 4):
            try:
                out.append(str(flaky(n)))
            except tether.TetherError as exc:
                out.append(type(exc).__name__)
        return out

    assert flaky(6) == 6  # outside a workflow: a plain call, still through the gate
    assert tether.run(app, plain, id="plain") == [
        "2",
        "ServiceUnavailableError",
        "ServiceUnavailableError",
        "ToolUnavailableError",
    ]
    assert runs == [6, 2, 1, 3]
    with pytest.raises(ToolUnavailableError, match="circuit breaker is open"):
        flaky(8)


async def test_unguarded__no_gate_or_no_service__the_tool_just_runs(make_app: MakeApp):
    app = make_app()  # no app.services, no agent services: the declaration alone guards nothing
    github = GitHub(app)
    define(app, scripted_agent([github.tool], calls=3))
    async with app:
        answers = await run(app, "free")
    assert github.executions == 3
    assert all(a.startswith("error: issues failed:") for a in answers)


# -- declarations --------------------------------------------------------------------------------


@pytest.mark.parametrize(("service", "match"), [("", "ToolService name"), (42, "service=42")])
def test_declaration__bad_services_are_refused(make_app: MakeApp, service: Any, match: str):
    app = make_app()
    with pytest.raises(tether.ConfigError, match=match):
        app.tool(service=service)(lambda: None)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"failures": ("not a type",)}, "failures holds 'not a type'"),
        ({"failures": 3}, "failures is 3"),
        ({"max_wait": -1}, "max_wait is -1"),
        ({"max_wait": float("inf")}, "max_wait is inf"),
    ],
)
def test_declaration__bad_tool_service_options(options: dict[str, Any], match: str):
    with pytest.raises(tether.ConfigError, match=match):
        ToolService("github", **options)


def test_declaration__a_name_is_a_tool_service(make_app: MakeApp):
    app = make_app()
    github = GitHub(app)
    assert github.tool.service == ToolService("github")
    assert github.tool.service.failures == ()
    assert github.tool.service.max_wait == 30.0
    assert ToolService("x", failures=KeyError).failures == (KeyError,)
