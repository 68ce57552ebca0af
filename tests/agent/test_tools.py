"""Tool declarations: schemas from hints, side-effect classes, clear errors."""

from __future__ import annotations

from typing import Annotated

import pydantic
import pytest

import tether
from tether.agent import Agent, Tool
from tether.agent.providers import scripted as s


def test_tool__schema_from_hints_with_descriptions_and_defaults(tmp_path):
    app = tether.App(f"sqlite:///{tmp_path / 'x.db'}")

    @app.tool(side_effect="read_only", timeout=5)
    async def search(
        query: Annotated[str, pydantic.Field(description="what to look for")], limit: int = 5
    ) -> list[str]:
        """Search the knowledge base.

        More details the model does not need.
        """
        return [query] * limit

    assert isinstance(search, Tool)
    assert app.tools == {"search": search}
    spec = search.spec
    assert spec.description == "Search the knowledge base."
    assert spec.parameters["properties"]["query"]["description"] == "what to look for"
    assert spec.parameters["properties"]["limit"]["default"] == 5
    assert spec.parameters["required"] == ["query"]
    assert search.options.retry == tether.Retry(attempts=3)
    assert search.parse({"query": "x"}) == {"query": "x", "limit": 5}
    with pytest.raises(pydantic.ValidationError):
        search.parse({"query": "x", "unexpected": 1})


def test_tool__effectful_is_not_retried_unless_asked(tmp_path):
    app = tether.App(f"sqlite:///{tmp_path / 'x.db'}")

    @app.tool()
    def pay(amount: float) -> str:
        return "ok"

    @app.tool(side_effect="effectful", retry=tether.Retry(attempts=2), name="pay_again")
    def pay2(amount: float) -> str:
        return "ok"

    assert pay.options.side_effect == "effectful"
    assert pay.options.retry == tether.Retry.never()
    assert pay2.options.retry == tether.Retry(attempts=2)
    assert pay(1.0) == "ok"  # outside a workflow: a plain call


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"side_effect": "sometimes"}, "side_effect"),
        ({"timeout": 0}, "timeout"),
        ({"name": "has spaces"}, "tool name"),
    ],
)
def test_tool__bad_options__config_error(tmp_path, options, match):
    app = tether.App(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(tether.ConfigError, match=match):
        app.tool(**options)(lambda: None)


def test_agent__rejects_plain_functions_unknown_providers_and_duplicate_models():
    model = s.ScriptedProvider([])
    with pytest.raises(tether.ConfigError, match="not a tool"):
        Agent(model="scripted:m", providers=[model], tools=[print])  # type: ignore[list-item]
    with pytest.raises(tether.ConfigError, match="names provider 'openai'"):
        Agent(model="openai:gpt-4o", providers=[model])
    with pytest.raises(tether.ConfigError, match="provider:model"):
        Agent(model="gpt-4o", providers=[model])
    with pytest.raises(tether.ConfigError, match="twice"):
        Agent(model=["scripted:m", "scripted:m"], providers=[model])
