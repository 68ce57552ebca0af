"""The raw database floor: a loop of one small INSERT + COMMIT, same durability settings.

    python bench/bench_floor.py [--n 2000]

sqlite / sqlite-full: WAL with synchronous=NORMAL / FULL, BEGIN; INSERT; COMMIT.
postgres: psycopg 3, synchronous_commit=on, INSERT then COMMIT (two round trips), and the
same INSERT in autocommit (one round trip: the least a durable write can cost).
Reports the median microseconds per write.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time

from benchlib import PG_ADMIN_URL, emit, fresh_database, median, pct

ROW = ("run-0123456789abcdef", 3, b'{"value": 42}')


def sqlite_floor(synchronous: str, n: int) -> list[float]:
    with fresh_database("sqlite") as env:
        path = env["TETHER_DATABASE_URL"].removeprefix("sqlite:///")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, run TEXT, seq INT, out BLOB)")
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (run, seq, out) VALUES (?, ?, ?)", ROW)
            conn.execute("COMMIT")
            lat.append(time.perf_counter() - t)
        conn.close()
        os.sync()
        return lat


def postgres_floor(n: int, autocommit: bool) -> list[float]:
    import psycopg

    with fresh_database("postgres") as env, psycopg.connect(env["TETHER_DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, run text, seq int, out bytea)")
        conn.commit()
        conn.autocommit = autocommit
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            conn.execute("INSERT INTO t (run, seq, out) VALUES (%s, %s, %s)", ROW)
            if not autocommit:
                conn.commit()
            lat.append(time.perf_counter() - t)
        return lat


def measure(
    n: int = 2000, backends: tuple[str, ...] = ("sqlite", "sqlite-full", "postgres")
) -> dict[str, float]:
    """Return median (and p90) microseconds per durable write for each case."""
    cases = {}
    if "sqlite" in backends:
        cases["sqlite"] = sqlite_floor("NORMAL", n)
    if "sqlite-full" in backends:
        cases["sqlite-full"] = sqlite_floor("FULL", n)
    if "postgres" in backends:
        cases["postgres"] = postgres_floor(n, autocommit=False)
        cases["postgres-autocommit"] = postgres_floor(n, autocommit=True)
    out: dict[str, float] = {}
    for name, lat in cases.items():
        out[f"{name}_us"] = round(median(lat) * 1e6, 1)
        out[f"{name}_p90_us"] = round(pct(lat, 90) * 1e6, 1)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    args = p.parse_args()
    result = measure(args.n)
    for key, value in result.items():
        print(f"{key:28s} {value:10.1f}")
    emit({"bench": "floor", "pg": PG_ADMIN_URL.rsplit("@", 1)[-1], **result})
