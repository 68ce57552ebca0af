"""tether's options, in one frozen dataclass.

`Settings.from_env()` is the only place that reads `TETHER_*` environment variables: each
field `x` can be set with `TETHER_X` (for example `TETHER_DATABASE_URL`, `TETHER_LEASE_TTL`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal, cast

from tether.crypto import parse_keys
from tether.errors import ConfigError

DEFAULT_SQLITE_PATH = ".tether/tether.db"

SqliteSynchronous = Literal["NORMAL", "FULL"]


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Options of an `App`, its store and its worker.

    Attributes:
        database_url: `sqlite:///path`, `postgresql://...`, or None for a SQLite file at
            `./.tether/tether.db`.
        sqlite_synchronous: SQLite's durability. `NORMAL` (WAL; a commit survives a process
            crash, the last commits may be lost on power failure) or `FULL` (fsync per commit).
        pg_schema: the PostgreSQL schema holding tether's tables.
        pg_pool_size: connections per process for reads and transactional steps.
        lease_ttl: seconds after a worker's last heartbeat before its runs may be taken over.
        heartbeat_interval: seconds between a worker's heartbeats.
        poll_interval: seconds between a worker's looks for runs to claim.
        max_payload_bytes: the largest encoded payload (input, step result, output) accepted.
        max_recoveries: how many times a run may be resumed after a crash before it is
            failed as a poison pill.
        max_concurrency: how many runs one worker executes at once.
        wait_in_memory: how long a waiting run stays in memory before it is evicted (it is
            then woken and replayed by the store when what it waits for comes).
        sync_threads: threads for plain `def` workflows and steps.
        store_retry_timeout: how long a checkpoint write is retried while the database is
            unavailable before the run is abandoned to recovery.
        connect_timeout: seconds to wait for a database connection.
        statement_timeout: seconds a database statement may run.
        shutdown_grace: seconds a worker leaving (`async with app` exiting, or SIGTERM to
            `tether worker`) gives the steps in flight to finish and be recorded.
        audit_key: the HMAC key of mission audit chains (`TETHER_AUDIT_KEY`); without one,
            chains are plain SHA-256 chains. Never shown in `repr` or messages.
        encryption_key: 256-bit AES keys (base64 or hex, comma-separated, newest first) that
            encrypt every payload at rest (`TETHER_ENCRYPTION_KEY`); the first encrypts, all
            decrypt. Never shown in `repr` or messages.
    """

    database_url: str | None = None
    sqlite_synchronous: SqliteSynchronous = "NORMAL"
    pg_schema: str = "tether"
    pg_pool_size: int = 8
    lease_ttl: float = 10.0
    heartbeat_interval: float = 2.0
    poll_interval: float = 1.0
    max_payload_bytes: int = 2 * 1024 * 1024
    max_recoveries: int = 20
    max_concurrency: int = 1000
    wait_in_memory: float = 1.0
    sync_threads: int = 64
    store_retry_timeout: float = 30.0
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    shutdown_grace: float = 30.0
    encryption_key: str | None = dataclasses.field(default=None, repr=False)
    audit_key: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(
                f"sqlite_synchronous={self.sqlite_synchronous!r} is not supported; "
                "use 'NORMAL' or 'FULL'"
            )
        if not self.pg_schema.isidentifier():
            raise ConfigError(
                f"pg_schema={self.pg_schema!r} is not a plain identifier; "
                "use letters, digits and underscores"
            )
        if self.encryption_key is not None:
            parse_keys(self.encryption_key)  # a ConfigError naming the key's position only
        self._check_numbers()

    def _check_numbers(self) -> None:
        for name in ("wait_in_memory", "shutdown_grace"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more seconds")
        for name in (
            "lease_ttl",
            "heartbeat_interval",
            "poll_interval",
            "connect_timeout",
            "statement_timeout",
            "store_retry_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.heartbeat_interval * 2 > self.lease_ttl:
            raise ConfigError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be at most half of "
                f"lease_ttl ({self.lease_ttl}s), or live workers lose their runs"
            )
        for name in (
            "max_payload_bytes",
            "max_recoveries",
            "max_concurrency",
            "sync_threads",
            "pg_pool_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `TETHER_*` variables; keyword arguments take precedence."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"TETHER_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, cast(str, field.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; see tether.Settings")
        return cls(**values)


def _parse(name: str, type_name: str, raw: str) -> Any:
    try:
        if type_name == "float":
            return float(raw)
        if type_name == "int":
            return int(raw)
    except ValueError:
        raise ConfigError(f"TETHER_{name.upper()}={raw!r} is not a valid {type_name}") from None
    return raw
