"""`tether services list`: every service's breaker and rate window, from another process's view."""

from __future__ import annotations

import json

import tether
from tether.agent.services import ServicePolicy, Services
from tether.clock import FakeClock

from .helpers import ainvoke


async def test_services_list__shows_breakers_and_window_use(app: tether.App):
    app.store.migrate()
    clock = FakeClock(start=app.store.database_time())
    services = Services(
        app.store,
        {
            "llm": ServicePolicy(requests_per_minute=10, tokens_per_minute=5000),
            "search": ServicePolicy(failure_threshold=2, cooldown=60.0),
        },
        clock=clock,
    )
    for tokens in (300, 200):
        await services.release(
            await services.acquire("llm", tokens=tokens), ok=True, tokens_used=tokens
        )
    for _ in range(2):
        await services.release(await services.acquire("search"), ok=False, failure=True)

    listed = await ainvoke(app, "services", "list", "--json")

    assert listed.exit_code == 0, listed.output
    by_name = {s["service"]: s for s in json.loads(listed.output)}
    assert sorted(by_name) == ["llm", "search"]
    llm, search = by_name["llm"], by_name["search"]
    assert (llm["state"], llm["window_requests"], llm["window_tokens"]) == ("closed", 2, 500)
    assert (llm["requests_per_minute"], llm["tokens_per_minute"]) == (10, 5000)
    assert (search["state"], search["failures"]) == ("open", 0)
    assert search["opened_until"] == clock.now() + 60.0
    table = await ainvoke(app, "services", "list")
    assert table.exit_code == 0, table.output
    rows = [line.split() for line in table.output.splitlines()]
    assert rows[0] == [
        "SERVICE",
        "STATE",
        "FAILURES",
        "RETRY",
        "AT",
        "PROBE",
        "REQUESTS",
        "TOKENS",
        "WINDOW",
    ]
    assert rows[1][:3] == ["llm", "closed", "0"]
    assert rows[1][-3:] == ["2/10", "500/5000", "60s"]
    assert rows[2][:3] == ["search", "open", "0"]
    assert rows[2][-3:] == ["2/-", "0/-", "60s"]


async def test_services_list__none_yet__says_so(app: tether.App):
    app.store.migrate()
    result = await ainvoke(app, "services", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []
    assert "no service has been called yet" in (await ainvoke(app, "services", "list")).output
