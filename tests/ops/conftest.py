"""Fixtures of the operations tests: a real cluster (tests/e2e's), started outside the event loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, running_cluster

ENGINES = ["sqlite", pytest.param("mysql+redis", marks=[pytest.mark.mysql, pytest.mark.redis])]


@pytest.fixture(params=ENGINES)
def any_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """On SQLite, and on MariaDB + Redis (its delivery log too)."""
    with running_cluster(request.param, tmp_path / "cluster", files=True) as started:
        yield started


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """With TLS on: the certificate expiry metric is exported."""
    with running_cluster("sqlite", tmp_path / "cluster", tls=True, files=True) as started:
        yield started
