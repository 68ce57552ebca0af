"""Fixtures of the fault tests: a private PostgreSQL cluster that tests may restart."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.cluster import ClusterUnavailable, PrivateCluster


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    """A PostgreSQL server of the test's own, started; destroyed afterwards.

    Skips (fails under CI=true) only where initdb cannot run.
    """
    try:
        cluster = PrivateCluster().init()
    except ClusterUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a private PostgreSQL cluster is needed under CI: {exc}")
        pytest.skip(f"cannot create a private PostgreSQL cluster: {exc}")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
