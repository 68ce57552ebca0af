"""Helpers shared by the benchmarks: fresh databases, statistics, result lines."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN_URL = os.environ.get(
    "TETHER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "sqlite-full", "postgres")


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[dict[str, str]]:
    """Yield TETHER_* settings for a new empty database of `backend`; remove it afterwards."""
    if backend.startswith("sqlite"):
        folder = Path(tempfile.mkdtemp(prefix="tether-bench-"))
        try:
            yield {
                "TETHER_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
                "TETHER_SQLITE_SYNCHRONOUS": "FULL" if backend == "sqlite-full" else "NORMAL",
            }
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg

    name = f"tether_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"TETHER_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"}
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))]


def emit(result: dict[str, object]) -> None:
    """Print one machine-readable result line."""
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
