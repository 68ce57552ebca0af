"""Versioned schema migrations: numbered `.sql` files per dialect are the only schema.

`migrations/<dialect>/NNNN_<what>.sql` holds version NNNN. A store applies the files above
the version recorded in its `schema_version` table, each in its own transaction, and refuses
a database whose version is newer than the newest file it knows. Versions increase and are
unique; a number may be skipped (features developed side by side reserve theirs).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from importlib import resources

from tether.errors import SchemaVersionError

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One schema version's SQL."""

    version: int
    name: str
    sql: str


@functools.cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    """Return the dialect's migrations in version order."""
    folder = resources.files("tether.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if not versions or versions[0] < 1 or len(set(versions)) != len(versions):
        raise SchemaVersionError(
            f"the {dialect} migrations must have unique versions from 1 up: {found}"
        )
    return tuple(found)


def latest(dialect: str) -> int:
    """Return the newest schema version this code knows for `dialect`."""
    return migrations(dialect)[-1].version


def pending(dialect: str, current: int) -> list[Migration]:
    """Return the migrations to apply to a database at version `current`."""
    newest = latest(dialect)
    if current > newest:
        raise SchemaVersionError(
            f"the database schema is at version {current} but this tether knows only up to "
            f"{newest}; upgrade tether (a newer version migrated this database)"
        )
    return [m for m in migrations(dialect) if m.version > current]


def require_current(dialect: str, current: int) -> int:
    """Raise `SchemaVersionError` unless `current` is the newest version; return it."""
    pending(dialect, current)
    if current < latest(dialect):
        raise SchemaVersionError(
            f"the database schema is at version {current}, this tether needs "
            f"{latest(dialect)}; run `tether migrate` (workers also migrate when they start)"
        )
    return current
