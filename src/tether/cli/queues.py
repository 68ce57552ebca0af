"""`tether queues list`."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from tether.cli.common import DbOption, JsonOption, err, opened, out, print_json
from tether.status import Status

app = typer.Typer(help="Inspect the queues runs were enqueued to.", no_args_is_help=True)


@app.command("list")
def list_queues(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List every queue that holds runs, with how many runs are in each status.

    Only queues with at least one run appear: queues are declared in your code, which this
    command does not load.
    """
    with opened(db) as store:
        rows = store.queue_counts()
    queues: dict[str, dict[str, int]] = {}
    for queue, status, count in rows:
        counts = queues.setdefault(queue, {s.value: 0 for s in Status})
        counts[status] = counts.get(status, 0) + count
    listing: list[dict[str, Any]] = [
        {"queue": name, "counts": counts, "total": sum(counts.values())}
        for name, counts in sorted(queues.items())
    ]
    if as_json:
        print_json(listing)
        return
    table = Table(box=None, header_style="bold")
    table.add_column("QUEUE")
    for status in Status:
        table.add_column(status.value, justify="right")
    for q in listing:
        table.add_row(q["queue"], *(str(q["counts"][s.value]) for s in Status))
    out.print(table)
    if not listing:
        err.print("no queued runs")
