"""Backup files: a portable, versioned snapshot of a tether database, in JSON lines.

```
{"format": "tether-backup", "format_version": 1, "schema_version": 2, "source": "sqlite",
 "created_at": 1795000000.0, "tables": {"runs": ["id", "name", ...], ...}}
["runs", ["run-1", "digest", null, "SUCCEEDED", {"b64": "..."}, ...]]
...
{"end": true, "rows": {"runs": 12, "steps": 80, ...}, "sha256": "<of every row line>"}
```

The first line says what the file is; each following line is one row (values in the header's
column order; bytes as `{"b64": ...}`, times as Unix seconds); the last line counts the rows
and checksums them, so a truncated or damaged file is refused instead of half restored.
Payloads are kept exactly as stored: a backup of an encrypted database stays encrypted, and
restores without the key. The format does not depend on the database, which is how a SQLite
database moves to PostgreSQL (and back).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import IO, Any

from tether.errors import BackupError
from tether.store import migrate
from tether.store.base import BACKUP_TABLES, Store

FORMAT = "tether-backup"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup holds, or what a restore wrote."""

    schema_version: int
    source: str
    rows: dict[str, int]


def write_backup(store: Store, out: IO[str], *, now: float) -> BackupSummary:
    """Write a consistent snapshot of `store` to `out`; return what it holds.

    Raises:
        SchemaVersionError: the database is not at this tether's schema version.
        BackupError: the schema changed while the backup ran (run it again).
    """
    version = store.check_schema()
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_version": version,
        "source": store.dialect,
        "created_at": now,
        "tables": {t: list(c) for t, c in BACKUP_TABLES.items()},
    }
    out.write(json.dumps(header) + "\n")
    digest = hashlib.sha256()
    counts = dict.fromkeys(BACKUP_TABLES, 0)

    def sink(table: str, values: tuple[Any, ...]) -> None:
        line = json.dumps([table, [_encode(v) for v in values]], separators=(",", ":")) + "\n"
        digest.update(line.encode())
        counts[table] += 1
        out.write(line)

    seen = store.backup(sink)
    if seen != version:
        raise BackupError(
            f"the schema moved from version {version} to {seen} while the backup ran; "
            "run the backup again"
        )
    out.write(json.dumps({"end": True, "rows": counts, "sha256": digest.hexdigest()}) + "\n")
    return BackupSummary(version, store.dialect, counts)


def restore_backup(store: Store, source: IO[str], *, replace: bool = False) -> BackupSummary:
    """Restore the backup read from `source` into `store`, all or nothing.

    Raises:
        BackupError: not a tether backup, a newer format or schema, damaged or truncated.
        StoreError: the database holds tether data and `replace` is False.
    """
    header = read_header(source)
    tables: dict[str, list[str]] = header["tables"]
    rows = _rows(source, tables)
    counts = store.restore(tables, rows, replace=replace)
    return BackupSummary(int(header["schema_version"]), str(header["source"]), counts)


def read_header(source: IO[str]) -> dict[str, Any]:
    """Read and check a backup's first line."""
    line = source.readline()
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError(
            "this file is not a tether backup (its first line is not a tether-backup header); "
            "give the file written by `tether backup`"
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"this backup is in format version {header.get('format_version')!r}; this tether "
            f"reads version {FORMAT_VERSION}: restore it with the tether that wrote it"
        )
    version = header.get("schema_version")
    newest = min(migrate.latest(d) for d in ("sqlite", "postgresql"))
    if not isinstance(version, int) or version > newest:
        raise BackupError(
            f"this backup holds schema version {version!r}, newer than this tether knows "
            f"({newest}); upgrade tether to restore it"
        )
    tables = header.get("tables")
    if not isinstance(tables, dict) or not all(
        isinstance(c, list) and all(isinstance(n, str) for n in c) for c in tables.values()
    ):
        raise BackupError("the backup's header lists no tables; the file is damaged")
    return header


def _rows(source: IO[str], tables: dict[str, list[str]]) -> Iterator[tuple[str, list[Any]]]:
    """Yield the rows; raise `BackupError` (rolling the restore back) on any damage."""
    digest = hashlib.sha256()
    counts = dict.fromkeys(tables, 0)
    for number, line in enumerate(source, start=2):
        try:
            item = json.loads(line)
        except ValueError:
            raise BackupError(
                f"line {number} of the backup is not JSON; the file is damaged"
            ) from None
        if isinstance(item, dict) and item.get("end") is True:
            _check_end(item, counts, digest.hexdigest())
            return
        if (
            not isinstance(item, list)
            or len(item) != 2
            or item[0] not in tables
            or not isinstance(item[1], list)
            or len(item[1]) != len(tables[item[0]])
        ):
            raise BackupError(f"line {number} of the backup is not a row of a known table")
        digest.update(line.encode() if line.endswith("\n") else (line + "\n").encode())
        counts[item[0]] += 1
        yield item[0], [_decode(v, number) for v in item[1]]
    raise BackupError(
        "the backup ends before its last line: the file is truncated (was the backup "
        "interrupted?); nothing was restored"
    )


def _check_end(end: dict[str, Any], counts: dict[str, int], digest: str) -> None:
    if end.get("rows") != counts:
        raise BackupError(
            f"the backup's rows do not match its count ({counts} read, {end.get('rows')} "
            "written); the file is damaged, nothing was restored"
        )
    if end.get("sha256") != digest:
        raise BackupError("the backup's checksum does not match: the file was altered or damaged")


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def _decode(value: Any, number: int) -> Any:
    if isinstance(value, dict):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise BackupError(f"line {number} of the backup holds a damaged value") from None
    return value
