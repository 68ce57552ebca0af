"""The `tether` command."""

from __future__ import annotations

import typer

from tether.cli import audit, backup, evaluate, messages, missions, queues, services, workflows
from tether.cli import worker as workers
from tether.cli.common import DbOption, opened, out
from tether.store import migrate as migrations

app = typer.Typer(
    name="tether",
    help="Durable execution for AI agents: inspect and administer a tether database.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(workflows.app, name="workflows")
app.add_typer(queues.app, name="queues")
app.add_typer(services.app, name="services")
app.command("send")(messages.send)
app.add_typer(audit.app, name="audit")
app.add_typer(missions.app, name="missions")
app.command("evaluate")(evaluate.evaluate)
app.command("worker")(workers.worker)
app.command("supervise")(workers.supervise)
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)


@app.command()
def migrate(db: DbOption = None) -> None:
    """Create or upgrade tether's tables (workers also do this when they start)."""
    with opened(db, migrate=True) as store:
        version = store.check_schema()
    out.print(f"schema at version {version} (newest known: {migrations.latest(store.dialect)})")


def main() -> None:
    """Entry point of the `tether` script."""
    app()


if __name__ == "__main__":
    main()
