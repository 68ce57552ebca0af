"""`tether workflows list|show|cancel|resume|fork`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tether.cli import control
from tether.cli.common import DbOption, JsonOption, duration, err, opened, out, payload, print_json
from tether.cli.common import when as fmt_when
from tether.codec import Codec, run_place, step_place
from tether.crypto import app_codec
from tether.engine.failures import error_summary, open_error
from tether.errors import TetherError
from tether.settings import Settings
from tether.status import Status
from tether.store.base import RunFilter, RunRow, StepRecord

app = typer.Typer(help="List, inspect and control workflow runs.", no_args_is_help=True)

_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "PENDING": "white",
    "WAITING": "magenta",
    "ok": "green",
    "error": "red",
    "retry": "yellow",
}


def _statuses(values: list[str] | None) -> tuple[str, ...]:
    chosen = tuple(v.upper() for v in values or ())
    unknown = [v for v in chosen if v not in Status.__members__]
    if unknown:
        raise typer.BadParameter(
            f"unknown status {', '.join(unknown)}; use one of {', '.join(Status.__members__)}"
        )
    return chosen


@app.command("list")
def list_runs(
    db: DbOption = None,
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Only runs in this status.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Only this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List workflow runs, newest first."""
    query = RunFilter(statuses=_statuses(status), name=name, limit=limit)
    with opened(db) as store:
        runs = store.list_runs(query)
    if as_json:
        print_json([_run_summary(r) for r in runs])
        return
    extras = [c for c in _EXTRA_COLUMNS if any(c.cell(r) != "-" for r in runs)]
    table = Table(box=None, header_style="bold")
    for column in ("ID", "WORKFLOW", "STATUS", "CREATED (UTC)", "DURATION", "RECOVERIES"):
        table.add_column(column)
    for extra in extras:
        table.add_column(extra.title)
    for r in runs:
        table.add_row(
            r.id,
            r.name,
            _styled(r.status),
            fmt_when(r.created_at),
            duration(r.created_at, r.finished_at),
            str(r.recoveries),
            *(escape(extra.cell(r)) for extra in extras),
        )
    out.print(table)
    if not runs:
        err.print("no runs match")


@app.command("show")
def show(
    workflow_id: Annotated[str, typer.Argument(help="The run's id.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one run: its status, input, outcome, and every step with attempts and timings."""
    codec = app_codec(Settings.from_env(database_url=db))
    with opened(db) as store:
        run = store.get_run(workflow_id)
        if run is None:
            err.print(
                f"[red]error:[/red] no workflow run with id {workflow_id!r}; "
                "`tether workflows list` shows the runs in this database"
            )
            raise typer.Exit(1)
        steps = store.load_steps(workflow_id)
    detail = _run_detail(codec, run, steps)
    if as_json:
        print_json(detail)
        return
    out.print(f"[bold]{run.id}[/bold]  {run.name}  {_styled(run.status)}")
    out.print(
        f"created {fmt_when(run.created_at)}  finished {fmt_when(run.finished_at)}  "
        f"duration {duration(run.created_at, run.finished_at)}"
    )
    out.print(f"owner {run.owner or '-'}  epoch {run.epoch}  recoveries {run.recoveries}")
    placement = "  ".join(f"{c.label} {c.cell(run)}" for c in _EXTRA_COLUMNS if c.cell(run) != "-")
    if placement:
        out.print(placement, markup=False)
    out.print(f"input  {detail['input']}")
    if detail["output"] is not None:
        out.print(f"output {detail['output']}")
    if detail["error"] is not None:
        out.print(f"[red]error  {detail['error']['type']}: {detail['error']['message']}[/red]")
        out.print(detail["error"]["traceback"], markup=False)
    table = Table(box=None, header_style="bold", title=f"{len(steps)} steps", title_justify="left")
    for column in ("#", "STEP", "STATUS", "ATTEMPTS", "STARTED (UTC)", "DURATION", "RESULT"):
        table.add_column(column)
    for s in detail["steps"]:
        table.add_row(
            str(s["seq"]),
            s["name"],
            _styled(s["status"]),
            str(s["attempts"]),
            fmt_when(s["started_at"]),
            duration(s["started_at"], s["ended_at"]),
            _short(_result(s)),
        )
    out.print(table)


def _run_summary(r: RunRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "workflow": r.name,
        "status": r.status,
        "created_at": r.created_at,
        "finished_at": r.finished_at,
        "recoveries": r.recoveries,
        "owner": r.owner,
        "queue": r.queue,
        "partition": r.partition,
        "priority": r.priority,
        "started_at": r.started_at,
        "deadline_at": r.deadline_at,
        "wake_at": _wake_at(r),
    }


def _run_detail(codec: Codec, run: RunRow, steps: list[StepRecord]) -> dict[str, Any]:
    error = None
    if run.error is not None:
        kind, message, tb = _error(codec, run.error, run_place(run.id, "error"))
        error = {"type": kind, "message": message, "traceback": tb}
    return {
        **_run_summary(run),
        "epoch": run.epoch,
        "version": run.version,
        "input": payload(codec, run.input, run_place(run.id, "input")),
        "output": payload(codec, run.output, run_place(run.id, "output")),
        "error": error,
        "steps": [_step_detail(codec, s) for s in steps],
    }


def _step_detail(codec: Codec, s: StepRecord) -> dict[str, Any]:
    kind = message = None
    if s.error is not None:
        kind, message, _ = _error(codec, s.error, step_place(s.run_id, s.seq, "error"))
    return {
        "seq": s.seq,
        "name": s.name,
        "status": s.status,
        "attempts": s.attempts,
        "started_at": s.started_at,
        "ended_at": s.ended_at,
        "retry_at": s.retry_at,
        "output": payload(codec, s.output, step_place(s.run_id, s.seq, "output")),
        "error_type": kind,
        "error_message": message,
    }


def _error(codec: Codec, data: bytes, where: str) -> tuple[str, str, str]:
    try:
        return error_summary(open_error(codec, data, where))
    except TetherError as exc:
        return "<unreadable>", str(exc), ""


@dataclasses.dataclass(frozen=True)
class _Extra:
    """An attribute most runs lack: a column in `list` only when a listed run has it."""

    title: str
    label: str
    cell: Callable[[RunRow], str]


_EXTRA_COLUMNS = (
    _Extra("QUEUE", "queue", lambda r: r.queue or "-"),
    _Extra("PARTITION", "partition", lambda r: r.partition or "-"),
    _Extra("PRIORITY", "priority", lambda r: str(r.priority) if r.priority else "-"),
    _Extra("DEADLINE (UTC)", "deadline", lambda r: fmt_when(r.deadline_at)),
    _Extra("WAKES (UTC)", "wakes", lambda r: fmt_when(_wake_at(r))),
)


def _wake_at(r: RunRow) -> float | None:
    # Only a WAITING run has a wake-up time that means anything.
    return r.wake_at if r.status == Status.WAITING else None


def _result(step: dict[str, Any]) -> Any:
    if step["status"] == "ok":
        return step["output"]
    if step["error_type"] is not None:
        return f"{step['error_type']}: {step['error_message']}"
    # A wait in progress: its deadline, if it has one.
    return f"until {fmt_when(step['retry_at'])}" if step["retry_at"] is not None else "-"


def _styled(status: str) -> str:
    color = _STYLE.get(status)
    return f"[{color}]{status}[/{color}]" if color else status


def _short(value: Any, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


app.command("cancel")(control.cancel)
app.command("resume")(control.resume)
app.command("fork")(control.fork)
