"""Read-only queries against a user's database, for checks over the state of the world.

The mission layer's SQL checks run here, beside the other database code, so that no layer
above the store talks to a database driver.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tether.errors import ConfigError, StoreUnavailableError


def query_one(database: str, query: str, timeout: float = 30.0) -> tuple[Any, ...] | None:
    """Run `query` read-only and return its first row (None when it returns none).

    Args:
        database: a SQLite file path, `sqlite:///path`, or a `postgresql://` URL.
        query: one SELECT statement.
        timeout: seconds the query may run.

    Raises:
        ConfigError: an unknown URL scheme.
        StoreUnavailableError: the database cannot be reached or the query failed.
    """
    if database.startswith(("postgresql://", "postgres://")):
        return _postgres(database, query, timeout)
    if "://" in database and not database.startswith("sqlite:///"):
        raise ConfigError(
            f"a SQL check's database must be a SQLite path or a postgresql:// URL, got {database!r}"
        )
    path = Path(database.removeprefix("sqlite:///"))
    if not path.is_file():
        raise StoreUnavailableError(f"{path} does not exist")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as conn:
            row = conn.execute(query).fetchone()
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"the query on {path} failed: {exc}") from None
    return None if row is None else tuple(row)


def _postgres(url: str, query: str, timeout: float) -> tuple[Any, ...] | None:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "SQL checks on PostgreSQL need the extra: pip install 'tether[postgres]'"
        ) from None
    options = f"-c statement_timeout={round(timeout * 1000)} -c default_transaction_read_only=on"
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout)), options=options) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        raise StoreUnavailableError(f"the query failed: {str(exc).strip()}") from None
    return None if row is None else tuple(row)
