"""Provider failures by kind: retry, fail over, fail fast; durable and deterministic."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import Agent, ErrorKind, Model, ModelCallError, ModelsExhaustedError
from tether.agent.llm import estimate_tokens
from tether.agent.providers import scripted as s
from tether.agent.types import Message, ModelRequest, ToolCall, ToolSpec

from .helpers import QUICK, define_runner


def chain(primary_script: list[Any], backup_script: list[Any] | None = None, **model: Any):
    primary = s.ScriptedProvider(primary_script, name="primary")
    backup = s.ScriptedProvider(backup_script or [s.reply("from backup")], name="backup")
    models = [Model(primary, "m1", **model), Model(backup, "m2")]
    return primary, backup, models


def llm_journal(app: tether.App, run_id: str) -> list[tuple[str, str]]:
    return [
        (st.name, st.status)
        for st in app.store.load_steps(run_id)
        if st.name.startswith(("llm:", "tether.sleep"))
    ]


async def run_to_end(app: tether.App, run_id: str) -> Any:
    async with app:
        return await (await app.start("runner", "task", id=run_id)).result(timeout=30)


async def test_rate_limited__waits_the_retry_after_durably_then_retries_same_model(
    make_app: MakeApp,
):
    app = make_app()
    primary, backup, models = chain([s.reply("ok").failing(s.rate_limited(retry_after=0.2))])
    define_runner(app, Agent(model=models, retry=QUICK))
    result = await run_to_end(app, "rl")
    assert result["text"] == "ok"
    assert result["model"] == "primary:m1"
    assert [(c.attempt, c.outcome) for c in primary.calls] == [(1, "rate_limited"), (2, "ok")]
    assert backup.calls == []
    assert llm_journal(app, "rl") == [
        ("llm:primary:m1", "error"),
        ("tether.sleep", "ok"),
        ("llm:primary:m1", "ok"),
    ]
    failed = next(st for st in app.store.load_steps("rl") if st.status == "error")
    assert failed.error is not None
    assert json.loads(failed.error)["attributes"]["retry_after"] == 0.2  # what the wait used


async def test_rate_limited__long_retry_after_fails_over_when_a_fallback_exists(
    make_app: MakeApp,
):
    app = make_app()
    primary, backup, models = chain([s.reply("ok").failing(s.rate_limited(retry_after=3600))])
    define_runner(app, Agent(model=models, retry=QUICK))
    result = await run_to_end(app, "rl-long")
    assert result["model"] == "backup:m2"
    assert len(primary.calls) == 1
    assert len(backup.calls) == 1


@pytest.mark.parametrize(
    "fault",
    [
        s.rate_limited(times=None),
        s.overloaded(times=None),
        s.server_error(times=None),
        s.timeout(delay=0.05, times=None),
    ],
    ids=lambda f: f.kind.value,
)
async def test_retryable_kinds__back_off_then_fail_over(make_app: MakeApp, fault: s.Fault):
    app = make_app()
    primary, backup, models = chain([s.reply("never").failing(fault)])
    define_runner(app, Agent(model=models, retry=QUICK))
    result = await run_to_end(app, f"retry-{fault.kind.value}")
    assert result["text"] == "from backup"
    assert [c.outcome for c in primary.calls] == [fault.kind.value] * QUICK.attempts
    assert len(backup.calls) == 1
    assert llm_journal(app, f"retry-{fault.kind.value}") == [
        ("llm:primary:m1", "error"),
        ("tether.sleep", "ok"),
        ("llm:primary:m1", "error"),
        ("tether.sleep", "ok"),
        ("llm:primary:m1", "error"),
        ("llm:backup:m2", "ok"),
    ]


async def test_a_real_slow_answer_past_the_models_timeout__is_a_timeout(make_app: MakeApp):
    app = make_app()
    _primary, _, models = chain([s.reply("late").slow(5.0)], timeout=0.1)
    define_runner(app, Agent(model=models, retry=tether.Retry.never()))
    result = await run_to_end(app, "slow")
    assert result["model"] == "backup:m2"
    [record] = [st for st in app.store.load_steps("slow") if st.name == "llm:primary:m1"]
    assert record.error is not None
    assert b"timeout" in record.error


@pytest.mark.parametrize("fault", [s.connection(), s.context_too_long()], ids=lambda f: f.kind)
async def test_connection_and_context_too_long__fail_over_at_once(
    make_app: MakeApp, fault: s.Fault
):
    app = make_app()
    primary, backup, models = chain([s.reply("never").failing(fault)])
    define_runner(app, Agent(model=models, retry=QUICK))
    result = await run_to_end(app, f"fo-{fault.kind.value}")
    assert result["model"] == "backup:m2"
    assert len(primary.calls) == 1
    assert len(backup.calls) == 1
    assert llm_journal(app, f"fo-{fault.kind.value}") == [
        ("llm:primary:m1", "error"),
        ("llm:backup:m2", "ok"),
    ]


@pytest.mark.parametrize(
    ("fault", "advice"),
    [
        (s.auth_failed(), "check the API key"),
        (s.bad_request(), "fix the request"),
        (s.content_filtered(), "change the task"),
    ],
    ids=["authentication", "bad_request", "content_filtered"],
)
async def test_auth_bad_request_content_filter__fail_fast_naming_provider_and_model(
    make_app: MakeApp, fault: s.Fault, advice: str
):
    app = make_app()
    primary, backup, models = chain([s.reply("never").failing(fault)])
    define_runner(app, Agent(model=models, retry=QUICK))
    async with app:
        handle = await app.start("runner", "task", id="ff")
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=30)
    error = info.value.cause
    assert isinstance(error, ModelCallError)
    assert (error.provider, error.model, error.kind) == ("primary", "m1", fault.kind.value)
    assert "primary:m1" in str(error)
    assert advice in str(error)
    assert len(primary.calls) == 1
    assert backup.calls == []


async def test_every_model_failing__models_exhausted_with_each_attempt(make_app: MakeApp):
    app = make_app()
    primary, backup, models = chain(
        [s.reply("x").failing(s.connection(times=None))],
        [s.reply("y").failing(s.overloaded(times=None))],
    )
    define_runner(app, Agent(model=models, retry=QUICK))
    async with app:
        handle = await app.start("runner", "task", id="ex")
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=30)
    error = info.value.cause
    assert isinstance(error, ModelsExhaustedError)
    assert (len(primary.calls), len(backup.calls)) == (1, 3)
    assert [(f["model"], f["kind"]) for f in error.failures] == [
        ("primary:m1", "connection"),
        ("backup:m2", "overloaded"),
        ("backup:m2", "overloaded"),
        ("backup:m2", "overloaded"),
    ]


async def test_failover__replay_takes_the_same_path_without_calling_providers(
    make_app: MakeApp,
):
    app = make_app()
    primary, backup, models = chain(
        [s.reply("p").failing(s.overloaded(), s.connection())],
        [s.reply("from backup")],
    )
    the_agent = Agent(model=models, retry=QUICK)
    fail_once = [1]

    @app.workflow(name="then_fail")
    async def then_fail() -> str:
        result = await the_agent.run("task")
        if fail_once:
            fail_once.pop()
            raise RuntimeError("fails after the agent, once")
        return result.model

    async with app:
        with pytest.raises(tether.WorkflowFailedError):
            await (await app.start(then_fail, id="det")).result(timeout=30)
        before = llm_journal(app, "det")
        await app.resume("det")
        assert await app.retrieve("det").result(timeout=30) == "backup:m2"
    assert llm_journal(app, "det") == before
    assert len(primary.calls) == 2
    assert len(backup.calls) == 1


class CircuitOpenError(tether.TetherError):
    """Stands in for the fleet-shared services' error (same attributes)."""

    def __init__(self, service: str, retry_at: float) -> None:
        super().__init__(f"circuit open for {service}")
        self.service = service
        self.retry_at = retry_at


class FakeServices:
    """The services interface: a breaker per service, permits recorded."""

    def __init__(self, open_services: set[str]) -> None:
        self.open = open_services
        self.acquired: list[tuple[str, int]] = []
        self.released: list[dict[str, Any]] = []

    async def acquire(self, service: str, *, tokens: int = 0, max_wait: float = 60.0) -> Any:
        if service in self.open:
            raise CircuitOpenError(service, time.time() + 30)
        self.acquired.append((service, tokens))
        return {"service": service}

    async def release(
        self, permit: Any, *, ok: bool, failure: bool = False, tokens_used: int = 0
    ) -> None:
        self.released.append({**permit, "ok": ok, "failure": failure, "tokens": tokens_used})


async def test_services__open_breaker_skips_the_provider_and_fails_over(make_app: MakeApp):
    app = make_app()
    primary, backup, models = chain([s.reply("never")])
    services = FakeServices({"primary"})
    define_runner(app, Agent(model=models, retry=QUICK, services=services))
    result = await run_to_end(app, "cb")
    assert result["model"] == "backup:m2"
    assert primary.calls == []  # never called: the fleet knows it is down
    assert len(backup.calls) == 1
    assert services.acquired[0][0] == "backup"
    assert services.released == [
        {
            "service": "backup",
            "ok": True,
            "failure": False,
            "tokens": result["usage"]["input_tokens"] + result["usage"]["output_tokens"],
        }
    ]


async def test_services__failures_reported_to_the_breaker_by_kind(make_app: MakeApp):
    app = make_app()
    _primary, _, models = chain(
        [s.reply("ok").failing(s.overloaded(), s.rate_limited(retry_after=0.01))]
    )
    services = FakeServices(set())
    define_runner(app, Agent(model=models, retry=QUICK, services=services))
    await run_to_end(app, "cb2")
    assert [(r["ok"], r["failure"]) for r in services.released] == [
        (False, True),  # overloaded counts toward the breaker
        (False, False),  # a 429 is the rate budget, not ill health
        (True, False),
    ]
    assert [k for k in ErrorKind] == list(ErrorKind)  # the kinds are stable


def test_token_estimate__counts_tool_calls_schemas_and_the_most_output():
    spec = ToolSpec(
        name="search",
        description="Search the archive.",
        parameters={"type": "object", "properties": {"query": {"type": "string"}}},
    )
    call = ToolCall(id="c1", name="search", arguments={"query": "x" * 400})
    request = ModelRequest(
        model="m1",
        messages=(
            Message(role="user", content="find it"),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", content="", tool_call_id="c1", name="search"),
        ),
        tools=(spec,),
    )
    model = Model(s.ScriptedProvider([]), "m1", max_tokens=50)
    prompt = len("find it") + len(json.dumps(call.arguments)) + len(json.dumps(spec.parameters))
    assert estimate_tokens(request, model) >= prompt // 4 + 50
    # The request's own max_tokens, when set, is the most the model writes.
    assert estimate_tokens(request.model_copy(update={"max_tokens": 500}), model) >= (
        prompt // 4 + 500
    )
