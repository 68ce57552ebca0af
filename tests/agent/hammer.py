"""A process that hammers two services' rate budgets, for the fleet test.

python hammer.py LOG SECONDS       (database from TETHER_DATABASE_URL, TETHER_PG_SCHEMA)

Runs TASKS concurrent callers for SECONDS: half call `req` (REQUESTS per WINDOW seconds), half
`tok` (TOKENS per WINDOW seconds, estimates then smaller actual uses). Each admitted call
appends `service,admitted_at,tokens_used,pid` to LOG.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

from tether.agent.services import RateBudgetError, ServicePolicy, Services
from tether.settings import Settings
from tether.store import open_store

WINDOW, REQUESTS, TOKENS, TASKS = 1.0, 8, 1000, 4
POLICIES = {
    "req": ServicePolicy(requests_per_minute=REQUESTS, rate_window=WINDOW),
    "tok": ServicePolicy(tokens_per_minute=TOKENS, rate_window=WINDOW),
}


async def caller(services: Services, service: str, until: float, fd: int) -> None:
    while time.monotonic() < until:
        estimate = random.randint(50, 250) if service == "tok" else 0
        try:
            permit = await services.acquire(service, tokens=estimate, max_wait=2.0)
        except RateBudgetError:
            continue
        used = random.randint(estimate // 2, estimate)
        os.write(fd, f"{service},{permit.admitted_at!r},{used},{os.getpid()}\n".encode())
        await asyncio.sleep(random.uniform(0, 0.01))
        await services.release(permit, ok=True, tokens_used=used)


async def main(log: str, seconds: float) -> None:
    store = open_store(Settings.from_env())
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    services = Services(store, POLICIES)
    until = time.monotonic() + seconds
    try:
        await asyncio.gather(
            *(caller(services, ("req", "tok")[i % 2], until, fd) for i in range(TASKS))
        )
    finally:
        os.close(fd)
        store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
