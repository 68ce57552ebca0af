"""`tether workflows cancel|resume|fork`: act on a run from outside, as `App` methods do."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tether.cli.common import DbOption, JsonOption, call, err, fail, out, print_json
from tether.engine.app import App
from tether.status import Status

WorkflowId = Annotated[str, typer.Argument(help="The run's id.", show_default=False)]


def cancel(workflow_id: WorkflowId, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Cancel a run and its unfinished descendants.

    A running run stops at its next step boundary (a step in flight finishes, its result is
    not recorded); a waiting run stops at once. Cancelling a run that has ended changes
    nothing. `tether workflows resume` lets a cancelled run continue.
    """

    async def act(app: App) -> tuple[list[str], str]:
        cancelled = await app.cancel(workflow_id)
        return cancelled, (await app.retrieve(workflow_id).status()).value

    cancelled, status = call(db, act)
    if as_json:
        print_json({"id": workflow_id, "status": status, "cancelled": cancelled})
        return
    if workflow_id not in cancelled:
        out.print(f"workflow {workflow_id!r} had already ended ({status}); it is left as it is")
    if cancelled:
        out.print(f"cancelled {len(cancelled)} run(s):")
        for run_id in cancelled:
            out.print(f"  {run_id}", markup=False)


def resume(workflow_id: WorkflowId, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Let a CANCELLED or FAILED run continue from its journal.

    The run becomes PENDING; a worker with its workflow registered picks it up, replays the
    steps that succeeded and runs again the ones that failed.
    """

    async def act(app: App) -> str:
        # Checked here because the engine leaves a PENDING run as it is and reports success.
        status = await app.retrieve(workflow_id).status()
        if status not in (Status.CANCELLED, Status.FAILED):
            fail(
                f"workflow {workflow_id!r} is {status}; only a CANCELLED or FAILED run can be "
                "resumed (`tether workflows cancel` stops an unfinished one)"
            )
        handle = await app.resume(workflow_id)
        return (await handle.status()).value

    status = call(db, act)
    if as_json:
        print_json({"id": workflow_id, "status": status})
        return
    out.print(
        f"workflow {workflow_id!r} is {status}; a worker with its workflow registered will pick "
        "it up and continue from its journal"
    )


def fork(
    workflow_id: WorkflowId,
    from_step: Annotated[
        int,
        typer.Option(
            "--from-step",
            min=0,
            help="Journal position to run anew from; the steps before it are kept.",
            show_default=False,
        ),
    ],
    new_id: Annotated[
        str | None,
        typer.Option("--new-id", help="The new run's id; default ID-fork-<random>."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a new run of the same workflow and input, keeping the journal before a step.

    The new run is PENDING; a worker runs it with the code registered now, replaying the
    kept steps (`tether workflows show ID` lists their positions). Prints the new id.
    """

    async def act(app: App) -> dict[str, Any]:
        app.retrieve(workflow_id)  # WorkflowNotFoundError for an unknown id
        # Raw entries: decoding outputs would need the codecs (encryption keys) of your app.
        end = max((s.seq + 1 for s in app.store.load_steps(workflow_id)), default=0)
        if from_step > end:
            held = f"journal positions 0 to {end - 1}" if end else "no journal entries"
            fail(
                f"workflow {workflow_id!r} has {held}; --from-step must be at most {end} "
                "(which keeps the whole journal)"
            )
        handle = await app.fork(workflow_id, from_step, new_id=new_id)
        return {"id": handle.id, "forked_from": workflow_id, "from_step": from_step}

    forked = call(db, act)
    if as_json:
        print_json(forked)
        return
    out.print(forked["id"], markup=False)
    err.print(
        f"forked {workflow_id!r} at step {from_step}: the new run is PENDING; a worker with "
        "its workflow registered will run it"
    )
