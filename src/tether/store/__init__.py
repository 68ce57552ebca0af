"""Durable state behind one protocol (`base.Store`), on SQLite or PostgreSQL."""

from __future__ import annotations

from tether.errors import ConfigError
from tether.settings import DEFAULT_SQLITE_PATH, Settings
from tether.store.base import Store


def sqlite_path(url: str | None) -> str | None:
    """Return the file path of a SQLite URL (None for the default), or None if not SQLite.

    `sqlite:///relative.db` is relative to the working directory, `sqlite:////abs.db` absolute.
    """
    if url is None:
        return DEFAULT_SQLITE_PATH
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    return None


def open_store(settings: Settings) -> Store:
    """Open the store `settings.database_url` names (not yet migrated)."""
    url = settings.database_url
    path = sqlite_path(url)
    if path is not None:
        from tether.store.sqlite import SqliteStore

        return SqliteStore(
            path, synchronous=settings.sqlite_synchronous, busy_timeout=settings.statement_timeout
        )
    assert url is not None
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from tether.store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ConfigError(
                f"PostgreSQL needs the psycopg driver ({exc}); install tether[postgres]"
            ) from None
        return PostgresStore(url, settings)
    raise ConfigError(
        f"database URL {redact(url)!r} is not supported; use sqlite:///path/to.db or "
        "postgresql://user@host:5432/dbname"
    )


def redact(url: str) -> str:
    """Return `url` with any password replaced by '***', for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"
