"""Bad input gets a named error that says what to do, and leaves the store consistent."""

from __future__ import annotations

import pytest

import tether
from tests.conftest import MakeApp
from tether.store.base import RunFilter


def no_runs(app: tether.App) -> bool:
    return app.store.list_runs(RunFilter()) == []


async def test_unserializable_argument__raises_and_writes_nothing(app: tether.App):
    @app.workflow()
    async def wf(x: object) -> None:
        return None

    async with app:
        with pytest.raises(tether.SerializationError, match="argument 'x' of workflow") as info:
            await app.start(wf, object())
    assert "JSON types, dataclasses or pydantic models" in str(info.value)
    assert no_runs(app)


async def test_oversized_argument__raises_and_writes_nothing(make_app: MakeApp):
    app = make_app(max_payload_bytes=1000)

    @app.workflow()
    async def wf(blob: str) -> None:
        return None

    async with app:
        with pytest.raises(tether.PayloadTooLargeError, match="over the limit of 1,000") as info:
            await app.start(wf, "x" * 5000)
    assert info.value.limit == 1000
    assert "pass a reference" in str(info.value)
    assert no_runs(app)


async def test_wrong_arguments__raises_and_writes_nothing(app: tether.App):
    @app.workflow()
    async def wf(a: int, b: int) -> int:
        return a + b

    async with app:
        with pytest.raises(
            tether.WorkflowArgumentError, match=r"signature is .*\(a: int, b: int\)"
        ):
            await app.start(wf, 1)
        with pytest.raises(TypeError):  # also a TypeError, as Python would raise
            await app.start(wf, 1, 2, c=3)
    assert no_runs(app)


@pytest.mark.parametrize("bad_id", ["", "x" * 201, 42])
async def test_malformed_id__raises_and_writes_nothing(app: tether.App, bad_id: object):
    @app.workflow()
    async def wf() -> None:
        return None

    async with app:
        with pytest.raises(tether.WorkflowArgumentError, match="non-empty string"):
            await app.start(wf, id=bad_id)  # type: ignore[call-overload]
    assert no_runs(app)


async def test_unknown_workflow__raises_config_error(app: tether.App):
    async def not_registered() -> None:
        return None

    with pytest.raises(tether.ConfigError, match=r"@app\.workflow"):
        await app.start(not_registered)
    assert no_runs(app)


async def test_unserializable_step_result__step_and_run_fail_cleanly(app: tether.App):
    @app.step()
    async def bad() -> object:
        return {"handle": object()}

    @app.workflow()
    async def wf() -> None:
        await bad()

    async with app:
        handle = await app.start(wf)
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=10)
        [step] = await handle.steps()
    assert isinstance(info.value.cause, tether.SerializationError)
    assert "the result of step" in str(info.value.cause)
    assert (step.status, step.attempts) == ("error", 1)  # not retried: it would fail alike


async def test_oversized_step_result__payload_too_large(make_app: MakeApp):
    app = make_app(max_payload_bytes=2000)

    @app.step()
    async def big() -> str:
        return "y" * 10_000

    @app.workflow()
    async def wf() -> str:
        return await big()

    async with app:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await (await app.start(wf)).result(timeout=10)
    assert isinstance(info.value.cause, tether.PayloadTooLargeError)


async def test_step_result_not_matching_annotation__clear_error(app: tether.App):
    @app.step()
    async def lies() -> int:
        return "not a number"  # type: ignore[return-value]

    @app.workflow()
    async def wf() -> int:
        return await lies()

    async with app:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await (await app.start(wf)).result(timeout=10)
    assert "does not fit its declared type int" in str(info.value.cause)


async def test_unserializable_workflow_result__run_fails(app: tether.App):
    @app.workflow()
    async def wf() -> object:
        return object()

    async with app:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await (await app.start(wf)).result(timeout=10)
    assert isinstance(info.value.cause, tether.SerializationError)


async def test_corrupted_step_row__raises_corrupt_row_error(app: tether.App):
    from tether.engine import failures

    with pytest.raises(tether.CorruptRowError, match="damaged"):
        failures.decode_error(b"\x00\x01 not json")
    with pytest.raises(tether.CorruptRowError, match="not valid JSON"):
        app.codec.decode(b"{not json", int)


def test_duplicate_workflow_name__config_error(app: tether.App):
    @app.workflow(name="dup")
    async def one() -> None:
        return None

    with pytest.raises(tether.ConfigError, match="two workflows are named 'dup'"):

        @app.workflow(name="dup")
        async def two() -> None:
            return None


def test_settings__bad_values__config_error():
    with pytest.raises(tether.ConfigError, match="sqlite_synchronous"):
        tether.Settings(sqlite_synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(tether.ConfigError, match="at most half"):
        tether.Settings(lease_ttl=1.0, heartbeat_interval=1.0)
    with pytest.raises(tether.ConfigError, match="TETHER_LEASE_TTL"):
        tether.Settings.from_env({"TETHER_LEASE_TTL": "soon"})
    with pytest.raises(tether.ConfigError, match="not supported"):
        tether.App("mysql://x").store  # noqa: B018


def test_settings__from_env__reads_tether_variables():
    s = tether.Settings.from_env(
        {"TETHER_DATABASE_URL": "sqlite:///x.db", "TETHER_LEASE_TTL": "30"}, poll_interval=0.5
    )
    assert (s.database_url, s.lease_ttl, s.poll_interval) == ("sqlite:///x.db", 30.0, 0.5)
