"""What every command shares: the database option, errors, payload display, output helpers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tether.codec import Codec
from tether.engine.app import App
from tether.errors import TetherError
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Store

T = TypeVar("T")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TETHER_DATABASE_URL",
        help="Database URL (sqlite:///path or postgresql://...); default ./.tether/tether.db.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print `message` as an error and exit with code 1."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(1)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn a `TetherError` raised inside into its message and exit code 1."""
    try:
        yield
    except TetherError as exc:
        fail(str(exc))


@contextlib.contextmanager
def opened(db: str | None, *, migrate: bool = False) -> Iterator[Store]:
    """Open the store named by `--db`, turning tether errors into a message and exit code 1."""
    with reported():
        store = open_store(Settings.from_env(database_url=db))
        try:
            if migrate:
                store.migrate()
            else:
                store.check_schema()
            yield store
        finally:
            store.close()


def call(db: str | None, action: Callable[[App], Coroutine[Any, Any, T]]) -> T:
    """Run `action` with a client `App` of the `--db` database and return what it returns.

    The app is not entered, so it executes nothing: a worker with the workflows registered
    does. The database must be migrated already; tether errors become a message and exit 1.
    """
    # `opened` first: an App migrates its database on first use, and only `tether migrate`
    # (or a worker) should change the schema.
    with opened(db):
        pass
    with reported():
        app = App(settings=Settings.from_env(database_url=db))
        try:
            return asyncio.run(action(app))
        finally:
            app.close()


def payload(codec: Codec, data: bytes | None, where: str = "") -> Any:
    """A stored payload (at row identity `where`) as plain JSON, or why it cannot be shown."""
    if data is None:
        return None
    try:
        return codec.decode(data, context=where)
    except TetherError as exc:
        return f"<unreadable: {exc}>"


def when(ts: float | None) -> str:
    """A timestamp for tables, in UTC."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def duration(start: float | None, end: float | None) -> str:
    """A human duration between two timestamps."""
    if start is None or end is None:
        return "-"
    seconds = end - start
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout."""
    out.print_json(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)
