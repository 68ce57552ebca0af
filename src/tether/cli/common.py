"""What every command shares: the database option, payload display, output helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console

from tether.codec import Codec
from tether.errors import TetherError
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Store

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
err = Console(stderr=True, highlight=False)


@contextlib.contextmanager
def opened(db: str | None, *, migrate: bool = False) -> Iterator[Store]:
    """Open the store named by `--db`, turning tether errors into a message and exit code 1."""
    try:
        settings = Settings.from_env(database_url=db)
        store = open_store(settings)
        try:
            if migrate:
                store.migrate()
            else:
                store.check_schema()
            yield store
        finally:
            store.close()
    except TetherError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def payload(codec: Codec, data: bytes | None) -> Any:
    """A stored payload as plain JSON, or a note saying why it cannot be shown."""
    if data is None:
        return None
    try:
        return codec.decode(data)
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
