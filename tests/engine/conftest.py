"""Engine fixtures: Apps on a fresh database of each backend, with fast polling."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

import tether
from tether.settings import Settings

FAST = {"poll_interval": 0.05, "heartbeat_interval": 0.5, "lease_ttl": 2.0}

MakeApp = Callable[..., tether.App]


@pytest.fixture
def make_app(settings: Settings) -> Iterator[MakeApp]:
    """Build Apps on the test's database (several Apps = several workers or clients)."""
    apps: list[tether.App] = []

    def make(**options: object) -> tether.App:
        app = tether.App(settings=dataclasses.replace(settings, **{**FAST, **options}))  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: MakeApp) -> tether.App:
    return make_app()
