"""`tether worker MODULE:APP`: run an app's worker in this process until it is signalled.

The app is found the way ASGI servers find theirs: `MODULE:ATTRIBUTE`, the module imported
with the current directory on `sys.path`. SIGTERM or SIGINT starts a graceful shutdown (see
`App.shutdown`): no new work is claimed, the steps in flight finish and are recorded within
`--grace` seconds, the runs are released to other workers and the worker deregisters. A
second signal, or the end of the grace period, cuts the runs in flight off; other workers
resume them from their last checkpoint at once.

Exit codes: 0 after a graceful shutdown, 1 when runs were cut off (grace period over, or a
second signal) or on an error before the worker ran (a bad target, or a database it cannot
reach as it starts: the error is logged and a supervisor starts it again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli.common import reported
from tether.engine.app import App
from tether.errors import ConfigError, StoreError
from tether.server.health import DatabaseCheck, HealthServer, WorkerProbe
from tether.server.supervisor import STABLE_AFTER, Backoff, Supervisor, worker_command
from tether.store import open_store
from tether.store.base import Store

log = logging.getLogger("tether.worker")

TargetArgument = Annotated[
    str,
    typer.Argument(
        metavar="MODULE:APP",
        help="The tether.App to run: a module importable from the current directory, a "
        "colon, and the app's name in it (e.g. myproject.jobs:app).",
        show_default=False,
    ),
]
WorkerDbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (sqlite:///path or postgresql://...); default: the app's own "
        "(its URL, else TETHER_DATABASE_URL, else ./.tether/tether.db).",
        show_default=False,
    ),
]
ConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        help="Most runs executing at once in this worker (default: the app's max_concurrency).",
        show_default=False,
    ),
]
GraceOption = Annotated[
    float | None,
    typer.Option(
        "--grace",
        min=0.0,
        help="Seconds the steps in flight get to finish after SIGTERM (default: the app's "
        "shutdown_grace, 30).",
        show_default=False,
    ),
]
HealthOption = Annotated[
    str | None,
    typer.Option(
        "--health-port",
        metavar="[HOST:]PORT",
        help="Serve /healthz, /readyz and /status on this port (all interfaces unless HOST "
        "is given, e.g. 127.0.0.1:8081).",
        show_default=False,
    ),
]
WorkersOption = Annotated[
    int, typer.Option("--workers", min=1, help="How many worker processes to keep running.")
]
StatusFileOption = Annotated[
    Path | None,
    typer.Option(
        "--status-file",
        help="Keep this file up to date with the supervisor's and its workers' pids (JSON).",
        show_default=False,
    ),
]
StableAfterOption = Annotated[
    float,
    typer.Option(
        "--stable-after",
        min=0.0,
        help="Seconds a worker must run to count as healthy: one that exits sooner is "
        "restarted after a backoff (0.5 s, doubling to 30 s), one that ran longer at once.",
    ),
]
LogLevelOption = Annotated[
    str, typer.Option("--log-level", help="debug, info, warning or error.", show_default=True)
]


def worker(
    target: TargetArgument,
    db: WorkerDbOption = None,
    concurrency: ConcurrencyOption = None,
    grace: GraceOption = None,
    health_port: HealthOption = None,
    log_level: LogLevelOption = "info",
) -> None:
    """Run the workflows of MODULE:APP in this process until SIGTERM or SIGINT."""
    with reported():
        setup_logging(log_level)
        health = health_address(health_port)
        app = configure(load_app(target), db=db, concurrency=concurrency, grace=grace)
    asyncio.run(_serve_then_exit(app, health))


async def _serve_then_exit(app: App, health: tuple[str, int] | None) -> None:
    code = await serve(app, health)
    if code != 0:
        # Runs were cut off: a step may still hold a thread (a plain `def` step, or
        # asyncio.to_thread) that the interpreter and asyncio.run would wait for. Leave now,
        # from inside the loop; other workers resume those runs.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def supervise(  # noqa: PLR0913 (each parameter is one of the command's options)
    target: TargetArgument,
    *,
    workers: WorkersOption = 2,
    db: WorkerDbOption = None,
    grace: GraceOption = None,
    health_port: HealthOption = None,
    status_file: StatusFileOption = None,
    stable_after: StableAfterOption = STABLE_AFTER,
) -> None:
    """Run N worker processes of MODULE:APP; restart any that dies; stop them on SIGTERM.

    The workers get the same --db and --grace; other options come from the environment they
    inherit (TETHER_MAX_CONCURRENCY, ...).
    """
    with reported():
        setup_logging("info")
        health = health_address(health_port)
        app = configure(load_app(target), db=db, concurrency=None, grace=grace)
    options = ["--grace", repr(app.settings.shutdown_grace)]
    if db is not None:
        options += ["--db", db]
    opened: list[Store] = []

    def store() -> Store:  # opened on the first readiness probe, in its thread
        if not opened:
            opened.append(open_store(app.settings))
        return opened[0]

    supervisor = Supervisor(
        worker_command(target, options),
        workers,
        app.settings.shutdown_grace,
        database=DatabaseCheck(store),
        status_file=status_file,
        backoff=Backoff(stable_after=stable_after),
    )
    try:
        code = asyncio.run(_supervise(supervisor, health))
    finally:
        for s in opened:
            s.close()
    raise typer.Exit(code)


async def _supervise(supervisor: Supervisor, address: tuple[str, int] | None) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    health = None if address is None else HealthServer(supervisor, address[1], address[0])
    try:
        if health is not None:
            await health.start()
        return await supervisor.run()
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if health is not None:
            await health.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def load_app(target: str) -> App:
    """Import `MODULE:ATTRIBUTE` (dots allowed in both) and return the `tether.App` it names.

    Raises:
        ConfigError: the target is malformed, the module cannot be imported, or the
            attribute is missing or not a `tether.App`.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"{target!r} is not of the form MODULE:APP; name the module and the app in it, "
            "e.g. `tether worker myproject.jobs:app`"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} ({exc}); run the command from the folder "
            "your module is imported from, or install it"
        ) from exc
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigError(
                f"module {module_name!r} has no attribute {attribute!r}; name the "
                "tether.App it defines"
            )
        value = getattr(value, part)
    if not isinstance(value, App):
        raise ConfigError(
            f"{target!r} is a {type(value).__name__}, not a tether.App; name the object "
            "created with tether.App(...)"
        )
    return value


def configure(app: App, *, db: str | None, concurrency: int | None, grace: float | None) -> App:
    """Apply the command line's options to the app's settings (before it opens its store)."""
    overrides: dict[str, Any] = {}
    if db is not None:
        overrides["database_url"] = db
    if concurrency is not None:
        overrides["max_concurrency"] = concurrency
    if grace is not None:
        overrides["shutdown_grace"] = grace
    if overrides:
        app.close()  # a store opened at import would use the old settings
        app.settings = dataclasses.replace(app.settings, **overrides)
    if not app.workflows:
        raise ConfigError("the app declares no workflows: this worker would have nothing to run")
    return app


def setup_logging(level: str) -> None:
    """Log to stderr with the process id, unless the application configured logging."""
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ConfigError(f"--log-level {level!r} is not one of debug, info, warning, error")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
            stream=sys.stderr,
        )
    logging.getLogger("tether").setLevel(number)


def health_address(value: str | None) -> tuple[str, int] | None:
    """`--health-port`'s (host, port): `PORT` binds all interfaces, `HOST:PORT` one.

    Raises:
        ConfigError: not a port number from 0 to 65535.
    """
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--health-port {value!r} is not [HOST:]PORT with PORT 0 to 65535")
    return host, int(port)


async def serve(app: App, health_address: tuple[str, int] | None) -> int:
    """Run the app's worker until a signal, then shut down gracefully; return the exit code."""
    stop = asyncio.Event()
    signals = _Signals(stop)
    health = None
    if health_address is not None:
        host, port = health_address
        health = HealthServer(WorkerProbe(app), port, host)
    try:
        if health is not None:
            await health.start()
        async with app:
            names = sorted(app.workflows)
            log.info("worker %s running %s (pid %d)", app.worker_id, names, os.getpid())
            await stop.wait()
            clean = await app.shutdown()
    except asyncio.CancelledError:
        signals.uncancel()
        clean = False
    except ConfigError as exc:
        log.error("%s", exc)
        clean = False
    except StoreError as exc:  # e.g. the database is down as the worker starts
        log.error("the worker cannot run: %s", exc)
        clean = False
    finally:
        signals.restore()
        if health is not None:
            await health.stop()
    log.info("worker stopped %s", "gracefully" if clean else "with runs cut off")
    return 0 if clean else 1


class _Signals:
    """SIGTERM/SIGINT: the first sets `stop` (graceful), the second cancels the main task."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.count = 0
        self.loop = asyncio.get_running_loop()
        self.main = asyncio.current_task()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            log.info("%s: shutting down gracefully; send it again to stop at once", sig.name)
            self.stop.set()
        elif self.count == 2 and self.main is not None:
            log.warning("%s again: stopping now, cutting off the runs in flight", sig.name)
            self.main.cancel()

    def uncancel(self) -> None:
        if self.main is not None:
            self.main.uncancel()

    def restore(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.remove_signal_handler(sig)
