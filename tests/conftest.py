"""Fixtures every test directory shares."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.ttclient import TTClient


@pytest.fixture
async def clients() -> AsyncIterator[list[TTClient]]:
    """Collects the TeamTalk clients a test opens and closes them afterwards."""
    opened: list[TTClient] = []
    yield opened
    for client in opened:
        await client.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) the
    tests of one file stay on one worker, so a module's cluster fixture starts
    once, and every test of tests/multihost on the same one: they share the
    root namespace's bridge."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        path = item.nodeid.split("::", 1)[0]
        group = "multihost" if path.startswith("tests/multihost/") else path
        item.add_marker(pytest.mark.xdist_group(group))
