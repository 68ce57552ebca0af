"""`tether evaluate PATH...`: judge trajectories recorded elsewhere with the mission monitors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tether.cli.common import JsonOption, fail, out
from tether.errors import ConfigError
from tether.mission import evaluate as evaluation
from tether.mission.monitors.intent import check_measure


def evaluate(
    paths: Annotated[list[Path], typer.Argument(help="Trajectory files, or folders of them.")],
    workspace: Annotated[
        Path | None, typer.Option(help="Folder the file checks of a mission spec read from.")
    ] = None,
    as_json: JsonOption = False,
    intent: Annotated[
        str,
        typer.Option(
            help="The intent monitor's measure: lexical, or semantic (needs tether[semantic])."
        ),
    ] = "lexical",
) -> None:
    """Judge each trajectory: the signals that fired and the scores.

    A file is JSON lines of OpenAI-style chat messages, or a JSON object with "messages" and
    optional "objective" and "mission" (a mission spec). Monitors that need a spec are skipped
    when none is given, and the output says so.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    try:
        check_measure(intent)
    except ConfigError as exc:
        fail(str(exc))
    failures = 0
    for path in evaluation.files(paths):
        try:
            report = evaluation.judge(evaluation.load(path), workspace, intent)
        except (ValueError, OSError) as exc:
            failures += 1
            report = {"file": str(path), "error": str(exc)}
        if as_json:
            print(json.dumps(report, default=str))  # one object per line, for pipes
        else:
            _show(report)
    if failures:
        raise typer.Exit(1)


def _show(report: dict[str, Any]) -> None:
    out.print(f"[bold]{escape(report['file'])}[/bold]")
    if "error" in report:
        out.print(f"  [red]cannot judge:[/red] {escape(report['error'])}")
        return
    for signal in report["signals"]:
        evidence = json.dumps(signal["evidence"], default=str)
        what = f"{signal['kind']}/{signal['rule']}"
        out.print(
            f"  step {signal['step']:>3}  {signal['severity']:<8} {what}  {escape(evidence[:160])}"
        )
    if not report["signals"]:
        out.print("  no signals")
    scores = ", ".join(
        f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in report["scores"].items()
    )
    out.print(f"  scores: {scores}")
    if report["skipped"]:
        out.print(f"  skipped (no mission spec): {', '.join(report['skipped'])}")
