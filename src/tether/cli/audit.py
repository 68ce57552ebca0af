"""`tether audit verify`: check every link of the audit chains."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tether.cli.common import DbOption, JsonOption, err, opened, out, print_json
from tether.codec import Codec
from tether.mission import audit

app = typer.Typer(help="Verify the hash-chained audit logs of missions.", no_args_is_help=True)

KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="TETHER_AUDIT_KEY",
        help="The HMAC key of keyed chains (default: $TETHER_AUDIT_KEY).",
        show_default=False,
    ),
]


@app.command("verify")
def verify(
    chains: Annotated[
        list[str] | None, typer.Argument(help="Chain ids; default: every chain.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Only chains whose id starts with this.")] = "",
    key: KeyOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify audit chains and name the first broken link of each; exit 1 if any is broken."""
    codec = Codec()
    secret = key.encode() if key else None
    with opened(db) as store:
        ids = chains or [h.chain_id for h in store.list_audit_heads(prefix, limit=1_000_000)]
        verdicts = [audit.verify(c, *store.load_audit(c), codec, secret) for c in ids]
    if as_json:
        print_json([v.__dict__ | {"ok": v.ok} for v in verdicts])
    else:
        table = Table(box=None, header_style="bold")
        for column in ("CHAIN", "RECORDS", "STATUS"):
            table.add_column(column)
        for v in verdicts:
            status = (
                "[green]intact[/green]"
                if v.ok
                else f"[red]broken at {v.broken_at}[/red]: {v.reason}"
            )
            table.add_row(v.chain_id, str(v.records), status)
        out.print(table)
        if not verdicts:
            err.print("no audit chains")
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)
