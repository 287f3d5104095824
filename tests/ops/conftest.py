"""Fixtures of the operations tests: a real cluster (tests/e2e's), started outside the event loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, running_cluster


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster("sqlite", tmp_path / "cluster", files=True) as started:
        yield started


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """With TLS on: the certificate expiry metric is exported."""
    with running_cluster("sqlite", tmp_path / "cluster", tls=True, files=True) as started:
        yield started
