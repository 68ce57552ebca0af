"""`tether missions list|show`: missions as their audit chains tell them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tether.cli.audit import KeyOption
from tether.cli.common import DbOption, JsonOption, err, fail, opened, out, print_json, when
from tether.codec import Codec
from tether.mission import audit
from tether.mission.ledger import Ledger

app = typer.Typer(
    help="Inspect missions: state, transitions, signals, corrections, scores.", no_args_is_help=True
)
PREFIX = "mission/"


def summary(ledger: Ledger, intact: bool) -> dict[str, Any]:
    """One mission's headline figures."""
    launch = ledger.of_kind("launch")
    scores = ledger.of_kind("scores")
    return {
        "id": ledger.chain_id.removeprefix(PREFIX),
        "state": ledger.state.value,
        "objective": launch[0].data.get("objective", "") if launch else "",
        "signals": len(ledger.of_kind("signal")),
        "corrections": sum(
            1 for r in ledger.of_kind("correction") if r.data.get("action") != "note"
        ),
        "scores": scores[-1].data["scores"] if scores else {},
        "records": len(ledger.records),
        "audit": "intact" if intact else "broken",
        "updated_at": ledger.records[-1].created_at if ledger.records else None,
    }


@app.command("list")
def list_missions(
    limit: Annotated[int, typer.Option(help="Most missions to show.")] = 50,
    key: KeyOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List missions, most recently active first."""
    codec, secret = Codec(), key.encode() if key else None
    rows = []
    with opened(db) as store:
        for head in store.list_audit_heads(PREFIX, limit):
            records, chain_head = store.load_audit(head.chain_id)
            verdict = audit.verify(head.chain_id, records, chain_head, codec, secret)
            rows.append(summary(Ledger(head.chain_id, _decoded(records, codec)), verdict.ok))
    if as_json:
        print_json(rows)
        return
    table = Table(box=None, header_style="bold")
    for column in ("MISSION", "STATE", "SIGNALS", "CORRECTIONS", "AUDIT", "UPDATED", "OBJECTIVE"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["id"],
            r["state"],
            str(r["signals"]),
            str(r["corrections"]),
            r["audit"],
            when(r["updated_at"]),
            escape(r["objective"][:60]),
        )
    out.print(table)
    if not rows:
        err.print("no missions")


@app.command("show")
def show(
    mission_id: Annotated[str, typer.Argument(help="The mission's id (its workflow run id).")],
    key: KeyOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a mission: its state, transitions, signals, corrections and scores."""
    chain_id = mission_id if mission_id.startswith(PREFIX) else PREFIX + mission_id
    codec, secret = Codec(), key.encode() if key else None
    with opened(db) as store:
        rows, head = store.load_audit(chain_id)
    if not rows:
        fail(f"no mission {mission_id!r}; `tether missions list` shows the missions there are")
    verdict = audit.verify(chain_id, rows, head, codec, secret)
    ledger = Ledger(chain_id, _decoded(rows, codec))
    detail = {
        **summary(ledger, verdict.ok),
        "audit_detail": verdict.reason,
        "timeline": [
            {"seq": r.seq, "at": r.created_at, "kind": r.kind, "data": _brief(r.kind, r.data)}
            for r in ledger.records
            if r.kind != "decision"
        ],
    }
    if as_json:
        print_json(detail)
        return
    _print_detail(detail)


def _print_detail(detail: dict[str, Any]) -> None:
    out.print(f"[bold]mission {escape(detail['id'])}[/bold]  state [bold]{detail['state']}[/bold]")
    out.print(f"objective: {escape(detail['objective'])}")
    audit_text = (
        "[green]intact[/green]"
        if detail["audit"] == "intact"
        else f"[red]broken[/red]: {detail['audit_detail']}"
    )
    out.print(f"audit chain: {detail['records']} records, {audit_text}")
    scores = detail["scores"]
    if scores:
        out.print(
            "scores: "
            + ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in scores.items())
        )
    table = Table(box=None, header_style="bold")
    for column in ("#", "AT", "KIND", "WHAT"):
        table.add_column(column)
    for entry in detail["timeline"]:
        table.add_row(str(entry["seq"]), when(entry["at"]), entry["kind"], escape(entry["data"]))
    out.print(table)


def _brief(kind: str, data: dict[str, Any]) -> str:
    if kind == "transition":
        evidence = {k: v for k, v in data.get("evidence", {}).items() if k != "checks"}
        return f"{data['from']} -> {data['to']}" + (f"  {evidence}" if evidence else "")
    if kind == "signal":
        return f"{data['severity']} {data['kind']}/{data['rule']} at step {data['step']}"
    if kind == "correction":
        return f"{data['action']} for {data['signal']}/{data['rule']}"
    if kind == "verification":
        checks = data.get("checks", [])
        return ", ".join(f"{c['name']}: {'pass' if c['passed'] else 'FAIL'}" for c in checks)
    if kind == "launch":
        return f"spec {data.get('digest', '')[:12]}"
    return str({k: v for k, v in data.items() if k != "tag"})[:160]


def _decoded(rows: list[Any], codec: Codec) -> list[audit.Record]:
    try:
        return audit.decode(rows, codec)
    except Exception as exc:  # a damaged record: name it, do not print a traceback
        fail(
            f"the mission's records cannot be read ({type(exc).__name__}); "
            "see `tether audit verify`"
        )
