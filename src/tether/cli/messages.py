"""`tether send`: deliver a message to a run, as `App.send` does."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tether.cli.common import DbOption, call, out
from tether.engine.app import App

_EXAMPLES = """'{"approved": true}', 42, or '"text"' (a string needs its JSON quotes too)"""


def send(
    workflow_id: Annotated[str, typer.Argument(help="The run's id.", show_default=False)],
    topic: Annotated[str, typer.Argument(help="The topic it waits on with tether.recv(topic).")],
    payload: Annotated[
        str, typer.Argument(help="The message as JSON text, e.g. '{\"approved\": true}'.")
    ],
    key: Annotated[
        str | None,
        typer.Option("--key", "-k", help="Delivers the message once however often you send it."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Send a message to a run; it takes it with `tether.recv(topic)`, exactly once.

    For example `tether send order-7 approval '{"approved": true, "by": "ana"}' --key ana-7`.
    The run must exist and not have ended. With `--key`, sending again delivers nothing more.
    """
    value = _json(payload)

    async def act(app: App) -> bool:
        return await app.send(workflow_id, topic, value, key=key)

    if call(db, act):
        out.print(f"delivered to {workflow_id!r} on topic {topic!r}")
    else:
        out.print(f"already delivered (same key {key!r}); nothing sent")


def _json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{exc}; the payload must be JSON text, for example {_EXAMPLES}",
            param_hint="PAYLOAD",
        ) from None


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, though Python's parser accepts them.
    raise ValueError(f"{name} is not a JSON value")
