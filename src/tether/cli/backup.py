"""`tether backup FILE` and `tether restore FILE`: move a whole tether database, any backend.

A backup is one consistent snapshot of every tether table, in a portable file (see
`tether.store.backup`); restoring it into a database of the other kind is how a deployment
moves from the SQLite default to PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from tether.cli.common import DbOption, JsonOption, fail, opened, out, print_json, reported
from tether.settings import Settings
from tether.store import open_store
from tether.store.backup import BackupSummary, restore_backup, write_backup

FileArgument = Annotated[Path, typer.Argument(help="The backup file.", show_default=False)]


def backup(file: FileArgument, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Write a consistent snapshot of the whole database (every run, journal, message...).

    Workers may go on running meanwhile: the snapshot is read in one read transaction. The
    file is written next to FILE and renamed into place only when complete. Payloads are
    copied as stored: an encrypted database gives an encrypted backup.
    """
    folder = file.resolve().parent
    if not folder.is_dir():
        fail(f"folder {str(folder)!r} does not exist; create it or choose another path")
    with opened(db) as store:
        fd, temp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".partial", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                summary = write_backup(store, handle, now=time.time())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, file)
        except OSError as exc:
            fail(f"could not write {str(file)!r}: {exc.strerror or exc}")
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    _report(summary, "backed up", str(file), as_json)


def restore(
    file: FileArgument,
    db: DbOption = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Delete the tether data the database holds first."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into a database (of either kind), all or nothing.

    The schema is created or upgraded first. A database that already holds tether data is
    refused unless --replace is given. Stop the workers of the target database first.
    """
    try:
        handle = file.open(encoding="utf-8")
    except OSError as exc:
        fail(f"could not read {str(file)!r}: {exc.strerror or exc}")
    with handle, reported():
        store = open_store(Settings.from_env(database_url=db))
        try:
            summary = restore_backup(store, handle, replace=replace)
        finally:
            store.close()
    _report(summary, "restored", str(file), as_json)


def _report(summary: BackupSummary, verb: str, file: str, as_json: bool) -> None:
    total = sum(summary.rows.values())
    if as_json:
        print_json(
            {
                "file": file,
                "schema_version": summary.schema_version,
                "source": summary.source,
                "rows": summary.rows,
            }
        )
        return
    detail = ", ".join(f"{n} {t}" for t, n in summary.rows.items() if n) or "no rows"
    out.print(f"{verb} {total} rows ({detail}); schema version {summary.schema_version}")
