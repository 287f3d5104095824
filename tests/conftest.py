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


SERIAL_DIRECTORIES = ("tests/multihost/",)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs the suite in two passes: ``-m "not serial"`` on two
    pytest-xdist workers (``--dist loadgroup``), then ``-m serial`` alone.

    Serial are the tests that load the whole machine or time what they
    measure (marked ``serial`` where they are) and all of tests/multihost
    (they share the root namespace's bridge, and time outages). In the
    parallel pass the tests of one file stay on one worker, so that a
    module's cluster fixture starts once.
    """
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(SERIAL_DIRECTORIES):
            item.add_marker(pytest.mark.serial)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(path))
