"""The PostgreSQL store's services: circuit breakers and rate budgets (rules in `store.services`).

Each call is one transaction on a pooled connection (not the journal writer: a service call
must not queue behind checkpoints). It takes the service's row lock first, with an
`INSERT ... ON CONFLICT DO UPDATE` that creates the row on first use, and reads the clock
after it: decisions on one service are serialized across every connection and machine, and
each sees every earlier one (READ COMMITTED: each later statement sees what committed before
it began). Deadlock-free: a transaction locks one service row, and only then its calls' rows.

The clock is the database server's (`clock_timestamp()`), so cooldowns and rate windows are
measured alike by every machine of a fleet, whatever the skew between their clocks.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tether.store import services
from tether.store.base import ServiceAdmission, ServiceCall, ServiceLimits, ServiceRow
from tether.store.postgres_coordination import _Conn
from tether.store.postgres_sql import Statements

T = TypeVar("T")


class PostgresServices:
    """Breakers and budgets shared by every process on the database; `PostgresStore` has them."""

    _sql: Statements

    @abc.abstractmethod
    def _pooled(self, what: str, fn: Callable[[_Conn], T], transaction: bool = False) -> T:
        """Run `fn` on a pooled connection (autocommit, or in one transaction)."""

    def admit_service_call(self, call: ServiceCall, now: float | None = None) -> ServiceAdmission:
        """Admit the call through its service's breaker and budget, or say when to come back.

        A refusal by an open breaker is answered from a read, without the write lock.
        """
        for current in self.list_services([call.service], now):
            refused = services.early_refusal(current, call.id)
            if refused is not None:
                return refused
        return self._pooled(
            "admit a service call",
            lambda c: services.admit_call(_Txn(c, self._sql), call, now),
            transaction=True,
        )

    def finish_service_call(
        self,
        call: ServiceCall,
        outcome: str,
        tokens_used: int | None = None,
        now: float | None = None,
    ) -> ServiceRow:
        """Record the call's outcome in its service's breaker and its actual token use."""
        return self._pooled(
            "record a service call's outcome",
            lambda c: services.finish_call(_Txn(c, self._sql), call, outcome, tokens_used, now),
            transaction=True,
        )

    def list_services(
        self, names: Sequence[str] = (), now: float | None = None
    ) -> list[ServiceRow]:
        """Return the services named (or all), with their breakers and window use."""

        def read(conn: _Conn) -> list[ServiceRow]:
            if names:
                rows = conn.execute(self._sql.SELECT_NAMED_SERVICES, (list(names),)).fetchall()
            else:
                rows = conn.execute(self._sql.SELECT_SERVICES).fetchall()
            out = []
            for r in rows:
                t = float(r[7]) if now is None else now
                limits = services.decode_limits(r[6])
                since = services.window_start(limits, t)
                usage = conn.execute(self._sql.SERVICE_USAGE, (r[0], since)).fetchone()
                assert usage is not None  # an aggregate always returns a row
                out.append(services.row(r[0], _breaker(r), (usage[0], usage[1]), limits, t))
            return out

        return self._pooled("list services", read, transaction=True)


def _breaker(r: Sequence[Any]) -> services.Breaker:
    return services.Breaker(r[1], services.failures_of(r[2]), r[3], r[4], r[5])


class _Txn:
    """`services.Txn` on a PostgreSQL connection inside a transaction."""

    def __init__(self, conn: _Conn, statements: Statements) -> None:
        self.conn = conn
        self.sql = statements

    def _one(self, statement: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        return self.conn.execute(statement, params).fetchone()

    def lock(self, name: str, now: float | None) -> services.Locked:
        r = self._one(self.sql.LOCK_SERVICE, (name,))
        assert r is not None  # an upsert with RETURNING returns its row
        t = float(r[7]) if now is None else now
        return services.Locked(_breaker(r), services.decode_limits(r[6]), t)

    def call_at(self, call_id: str) -> float | None:
        r = self._one(self.sql.SERVICE_CALL_AT, (call_id,))
        return None if r is None else float(r[0])

    def prune(self, name: str, before: float) -> None:
        self.conn.execute(self.sql.PRUNE_SERVICE_CALLS, (name, before))

    def usage(self, name: str, since: float) -> tuple[int, int]:
        r = self._one(self.sql.SERVICE_USAGE, (name, since))
        assert r is not None  # an aggregate always returns a row
        return int(r[0]), int(r[1])

    def freed_at(self, name: str, since: float, column: str, need: float) -> float | None:
        statement = self.sql.SERVICE_FREED_TOKENS
        if column == "requests":
            statement = self.sql.SERVICE_FREED_REQUESTS
        r = self._one(statement, (name, since, need))
        return None if r is None else float(r[0])

    def add_call(self, call: ServiceCall, at: float) -> None:
        params = (call.id, call.service, at, call.requests, call.tokens)
        self.conn.execute(self.sql.INSERT_SERVICE_CALL, params)

    def end_call(self, call_id: str, outcome: str, tokens: int | None, now: float) -> str:
        params = (now, now, outcome, tokens, call_id)
        cur = self.conn.execute(self.sql.END_SERVICE_CALL, params)
        if cur.rowcount == 1:
            return "ended"
        return "unknown" if self.call_at(call_id) is None else "ended before"

    def save(self, name: str, b: services.Breaker, limits: ServiceLimits, now: float) -> None:
        params = (b.state, list(b.failures), b.opened_at, b.retry_at, b.probe_id)
        self.conn.execute(
            self.sql.SAVE_SERVICE, (*params, services.encode_limits(limits), now, name)
        )
