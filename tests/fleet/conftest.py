"""Fixtures of the fleet tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tether
from tether.settings import Settings

from .helpers import client


@pytest.fixture
def fleet_client(settings: Settings) -> Iterator[tether.App]:
    """A client app of the test's database that knows the `job` workflow; closed afterwards."""
    app = client(settings)
    yield app
    app.close()
