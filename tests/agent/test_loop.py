"""The agent loop end to end in real workflows: tools, observations, structured output,
streaming, and replay that never calls a recorded model call again."""

from __future__ import annotations

import pydantic
import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import Agent, Message, ModelResponse, OutputValidationError, Usage
from tether.agent.providers import scripted as s
from tether.agent.types import ToolCall

from .helpers import Toolbox, agent, define_runner


class Report(pydantic.BaseModel):
    title: str
    total: int


async def test_tools__called_as_steps__answers_fed_back(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    model = s.ScriptedProvider(
        [
            s.call("add", a=2, b=3),
            s.calls(("add", {"a": 5, "b": 5}), ("send_email", {"to": "ana", "body": "10"})),
            s.reply("The sum is 10 and Ana knows."),
        ]
    )
    define_runner(app, agent(model, box.all, instructions="Be brief."))
    async with app:
        result = await (await app.start("runner", "add things", id="t1")).result(timeout=20)
    assert result["text"] == "The sum is 10 and Ana knows."
    roles = [m["role"] for m in result["conversation"]]
    assert roles == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    tool_answers = [m["content"] for m in result["conversation"] if m["role"] == "tool"]
    assert tool_answers == ["5", "10", "sent to ana"]
    assert (result["model_calls"], result["tool_calls"], result["steps"]) == (3, 3, 6)
    assert result["usage"]["input_tokens"] > 0
    assert result["usage"]["output_tokens"] > 0
    names = [st.name for st in app.store.load_steps("t1")]
    assert names == [
        "agent:start",
        "llm:scripted:m1",
        "tool:add",
        "llm:scripted:m1",
        "tool:add",
        "tool:send_email",
        "llm:scripted:m1",
    ]
    # The model saw the tools' schemas derived from their hints.
    spec = box.add.spec
    assert spec.parameters["properties"]["a"]["type"] == "integer"
    assert spec.parameters["required"] == ["a", "b"]
    assert spec.description == "Add two integers."


async def test_tool_exception_invalid_arguments_unknown_tool__observations_not_crashes(
    make_app: MakeApp,
):
    app = make_app()
    box = Toolbox(app)
    model = s.ScriptedProvider(
        [
            s.call("explode", reason="disk full"),
            s.call("add", a="not a number", b=1),
            s.call("drop_tables"),
            s.reply("I could not do it."),
        ]
    )
    define_runner(app, agent(model, box.all))
    async with app:
        result = await (await app.start("runner", "try", id="t2")).result(timeout=20)
    answers = [m["content"] for m in result["conversation"] if m["role"] == "tool"]
    assert answers[0] == "error: explode failed: RuntimeError: kaboom: disk full"
    assert answers[1].startswith("error: invalid arguments for add: a: Input should be a valid")
    assert answers[2].startswith("error: there is no tool named 'drop_tables'; the tools are: add")
    assert box.count("explode") == 1
    assert box.count("add") == 0
    # The model was told each error: it received them in its next request.
    assert model.calls[-1].turn == 3


async def test_structured_output__malformed_then_invalid_then_corrected(make_app: MakeApp):
    app = make_app()
    model = s.ScriptedProvider(
        [s.malformed(), s.answer({"title": "R"}), s.answer({"title": "R", "total": 3})]
    )
    the_agent = agent(model, [], output=Report)

    @app.workflow(name="structured")
    async def structured() -> Report:
        result = await the_agent.run("report")
        assert isinstance(result.output, Report)
        return result.output

    async with app:
        report = await (await app.start(structured, id="so")).result(timeout=20)
    assert report == Report(title="R", total=3)
    first, second = model.calls[1], model.calls[2]
    assert (first.turn, second.turn) == (1, 2)


async def test_structured_output__gives_up_after_the_bound(make_app: MakeApp):
    app = make_app()
    model = s.ScriptedProvider([s.reply("nope"), s.reply("still no"), s.reply("never")])
    the_agent = agent(model, [], output=Report, output_retries=1)
    define_runner(app, the_agent)
    async with app:
        handle = await app.start("runner", "report", id="so2")
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=20)
    error = info.value.cause
    assert isinstance(error, OutputValidationError)
    assert error.attempts == 2
    assert len(model.calls) == 2


async def test_structured_output__callable_validator_and_correction_text(make_app: MakeApp):
    app = make_app()

    def upper(text: str) -> str:
        if text != text.upper():
            raise ValueError("answer in capitals")
        return text

    model = s.ScriptedProvider([s.reply("hello"), s.reply("HELLO")])
    define_runner(app, agent(model, [], output=upper))
    async with app:
        result = await (await app.start("runner", "shout", id="cv")).result(timeout=20)
    assert result["output"] == "HELLO"
    correction = result["conversation"][-2]
    assert correction["role"] == "user"
    assert "ValueError: answer in capitals" in correction["content"]


async def test_streaming__tokens_reach_observers_while_the_answer_is_journaled(
    make_app: MakeApp,
):
    app = make_app()
    model = s.ScriptedProvider([s.reply("one two three four")], token_delay=0.001)
    the_agent = agent(model, [])
    seen: list[str] = []
    subscribed: list[tuple[str, str]] = []
    stop = the_agent.subscribe(lambda run, fragment: subscribed.append((run, fragment)))

    @app.workflow(name="streamer")
    async def streamer() -> str:
        result = await the_agent.run("count", on_token=seen.append)
        return result.text

    async with app:
        text = await (await app.start(streamer, id="st")).result(timeout=20)
    stop()
    assert text == "one two three four"
    assert seen == ["one ", "two ", "three ", "four"]
    assert subscribed == [("st", f) for f in seen]
    [llm] = [st for st in app.store.load_steps("st") if st.name.startswith("llm:")]
    assert llm.output is not None
    recorded = app.codec.decode(llm.output, ModelResponse)
    assert recorded.message.content == text


async def test_replay__resumed_run_never_calls_a_recorded_model_call_again(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    model = s.ScriptedProvider(
        [
            s.call("add", a=1, b=1),
            s.call("send_email", to="bo", body="2"),
            s.reply("done"),
        ]
    )
    the_agent = agent(model, box.all)
    failures = [1]

    @app.workflow(name="flaky_end")
    async def flaky_end() -> str:
        result = await the_agent.run("go")
        if failures:
            failures.pop()
            raise RuntimeError("the workflow's own code failed after the agent")
        return result.text

    async with app:
        handle = await app.start(flaky_end, id="rp")
        with pytest.raises(tether.WorkflowFailedError):
            await handle.result(timeout=20)
        assert len(model.calls) == 3
        await app.resume("rp")
        assert await app.retrieve("rp").result(timeout=20) == "done"
    assert len(model.calls) == 3, "a replay called the model again"
    assert box.count("add") == 1
    assert box.count("send_email") == 1


async def test_fork__from_a_later_turn_replays_earlier_calls_and_reruns_the_rest(
    make_app: MakeApp,
):
    app = make_app()
    box = Toolbox(app)
    model = s.ScriptedProvider([s.call("add", a=1, b=2), s.reply("three")])
    define_runner(app, agent(model, box.all))
    async with app:
        await (await app.start("runner", "sum", id="fk")).result(timeout=20)
        # Positions: 0 agent:start, 1 llm, 2 tool:add, 3 llm. Fork from the last model call.
        forked = await app.fork("fk", 3, new_id="fk2")
        result = await forked.result(timeout=20)
    assert result["text"] == "three"
    assert [c.turn for c in model.calls] == [0, 1, 1]
    assert box.count("add") == 1


def test_model_response__round_trips_through_the_codec():
    codec = tether.Codec()
    response = ModelResponse(
        provider="p",
        model="m",
        message=Message(
            role="assistant",
            content="x",
            tool_calls=(ToolCall(id="c1", name="t", arguments={"a": [1, {"b": None}]}),),
        ),
        finish_reason="tool_calls",
        usage=Usage(input_tokens=3, output_tokens=4),
    )
    assert codec.decode(codec.encode(response, "r"), ModelResponse) == response


async def test_run_outside_a_workflow__clear_error():
    the_agent = Agent(model="scripted:m", providers=[s.ScriptedProvider([])])
    with pytest.raises(tether.NotInWorkflowError):
        await the_agent.run("x")
