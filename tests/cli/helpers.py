"""Running the `tether` command against an app's database, as a separate client would."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner, Result

import tether
from tether.cli.main import app as cli


def invoke(app: tether.App, *args: str) -> Result:
    """Run `tether ARGS` on `app`'s database (stdout and stderr both in `.output`)."""
    env = {
        "TETHER_DATABASE_URL": app.settings.database_url or "",
        "TETHER_PG_SCHEMA": app.settings.pg_schema,
    }
    return CliRunner().invoke(cli, list(args), env=env)


async def ainvoke(app: tether.App, *args: str) -> Result:
    """`invoke` from async tests: the command runs its own event loop, so on another thread."""
    return await asyncio.to_thread(invoke, app, *args)
