"""The SQLite store's services: circuit breakers and rate budgets (rules in `store.services`).

Each call is one `BEGIN IMMEDIATE` transaction: SQLite's single writer serializes every
process on the file, so a service's breaker and budget move one decision at a time. The clock
is this machine's (`time.time()`, read once the write lock is held): every process sharing a
SQLite file runs on the same machine.
"""

from __future__ import annotations

import abc
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tether.store import services
from tether.store import sqlite_sql as sql
from tether.store.base import ServiceAdmission, ServiceCall, ServiceLimits, ServiceRow

T = TypeVar("T")


class SqliteServices:
    """Breakers and budgets shared by every process on the file; `SqliteStore` inherits them."""

    @abc.abstractmethod
    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the read connection."""

    @abc.abstractmethod
    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction."""

    def admit_service_call(self, call: ServiceCall, now: float | None = None) -> ServiceAdmission:
        """Admit the call through its service's breaker and budget, or say when to come back.

        A refusal by an open breaker is answered from a read, without the write lock.
        """
        for current in self.list_services([call.service], now):
            refused = services.early_refusal(current, call.id)
            if refused is not None:
                return refused
        return self._write(
            "admit a service call", lambda c: services.admit_call(_Txn(c), call, now)
        )

    def finish_service_call(
        self,
        call: ServiceCall,
        outcome: str,
        tokens_used: int | None = None,
        now: float | None = None,
    ) -> ServiceRow:
        """Record the call's outcome in its service's breaker and its actual token use."""
        return self._write(
            "record a service call's outcome",
            lambda c: services.finish_call(_Txn(c), call, outcome, tokens_used, now),
        )

    def list_services(
        self, names: Sequence[str] = (), now: float | None = None
    ) -> list[ServiceRow]:
        """Return the services named (or all), with their breakers and window use."""

        def read(conn: sqlite3.Connection) -> list[ServiceRow]:
            t = time.time() if now is None else now
            if names:
                rows = conn.execute(sql.SELECT_NAMED_SERVICES, (json.dumps(list(names)),))
            else:
                rows = conn.execute(sql.SELECT_SERVICES)
            out = []
            for r in rows.fetchall():
                b, limits = _breaker(r), services.decode_limits(r[6])
                since = services.window_start(limits, t)
                usage = conn.execute(sql.SERVICE_USAGE, (r[0], since)).fetchone()
                out.append(services.row(r[0], b, (int(usage[0]), int(usage[1])), limits, t))
            return out

        return self._read("list services", read)


def _breaker(r: Sequence[Any]) -> services.Breaker:
    try:
        failures = services.failures_of(json.loads(r[2]))
    except (TypeError, ValueError):
        failures = ()  # unreadable history: count afresh rather than refuse the service
    return services.Breaker(r[1], failures, r[3], r[4], r[5])


class _Txn:
    """`services.Txn` on a SQLite connection inside `BEGIN IMMEDIATE`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def lock(self, name: str, now: float | None) -> services.Locked:
        t = time.time() if now is None else now  # the write lock is held already
        self.conn.execute(sql.ENSURE_SERVICE, (name, t))
        r = self.conn.execute(sql.SELECT_SERVICE, (name,)).fetchone()
        return services.Locked(_breaker(r), services.decode_limits(r[6]), t)

    def call_at(self, call_id: str) -> float | None:
        r = self.conn.execute(sql.SERVICE_CALL_AT, (call_id,)).fetchone()
        return None if r is None else float(r[0])

    def prune(self, name: str, before: float) -> None:
        self.conn.execute(sql.PRUNE_SERVICE_CALLS, (name, before))

    def usage(self, name: str, since: float) -> tuple[int, int]:
        r = self.conn.execute(sql.SERVICE_USAGE, (name, since)).fetchone()
        return int(r[0]), int(r[1])

    def freed_at(self, name: str, since: float, column: str, need: float) -> float | None:
        statement = sql.SERVICE_FREED_AT.format(column=_COLUMNS[column])
        r = self.conn.execute(statement, (name, since, need)).fetchone()
        return None if r is None else float(r[0])

    def add_call(self, call: ServiceCall, at: float) -> None:
        params = (call.id, call.service, at, call.requests, call.tokens)
        self.conn.execute(sql.INSERT_SERVICE_CALL, params)

    def end_call(self, call_id: str, outcome: str, tokens: int | None, now: float) -> str:
        params = (now, now, outcome, tokens, call_id)
        if self.conn.execute(sql.END_SERVICE_CALL, params).rowcount == 1:
            return "ended"
        return "unknown" if self.call_at(call_id) is None else "ended before"

    def save(self, name: str, b: services.Breaker, limits: ServiceLimits, now: float) -> None:
        failures = json.dumps(list(b.failures))
        params = (b.state, failures, b.opened_at, b.retry_at, b.probe_id)
        self.conn.execute(sql.SAVE_SERVICE, (*params, services.encode_limits(limits), now, name))


_COLUMNS = {"requests": "requests", "tokens": "tokens"}
