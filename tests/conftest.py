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
