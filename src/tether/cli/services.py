"""`tether services list`."""

from __future__ import annotations

import dataclasses

import typer
from rich.table import Table

from tether.agent import services
from tether.cli.common import DbOption, JsonOption, err, opened, out, print_json, when

app = typer.Typer(
    help="Inspect the services (model providers, tools) whose health and rate budgets the "
    "workers share.",
    no_args_is_help=True,
)


@app.command("list")
def list_services(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List every service called so far, with its circuit breaker and its rate window's use.

    STATE is closed (calls go), open (calls refused until RETRY AT) or half_open (one probe
    call goes; PROBE says whether it is out). REQUESTS and TOKENS are the use within the
    sliding window ending now, over the budget the latest caller configured (- for none).
    """
    with opened(db) as store:
        states = [services.state_of(row) for row in store.list_services()]
    if as_json:
        print_json([dataclasses.asdict(s) for s in states])
        return
    table = Table(box=None, header_style="bold")
    for column in ("SERVICE", "STATE", "FAILURES", "RETRY AT", "PROBE"):
        table.add_column(column)
    for column in ("REQUESTS", "TOKENS", "WINDOW"):
        table.add_column(column, justify="right")
    for s in states:
        table.add_row(*_cells(s))
    out.print(table)
    if not states:
        err.print("no service has been called yet")


def _cells(s: services.ServiceState) -> list[str]:
    return [
        s.service,
        s.state,
        str(s.failures),
        when(s.opened_until),
        "out" if s.probe_in_flight else "-",
        _use(s.window_requests, s.requests_per_minute),
        _use(s.window_tokens, s.tokens_per_minute),
        f"{s.rate_window:g}s",
    ]


def _use(used: int, limit: int | None) -> str:
    return f"{used}/{'-' if limit is None else limit}"
