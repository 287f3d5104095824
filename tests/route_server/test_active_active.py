"""Two route servers share nothing: every gateway links to each, and a push
through either reaches every gateway; one going away leaves the other whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.route_server.conftest import ANDROID, Bed, close_bed, online, open_bed


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Bed, Bed]]:
    one, two = await open_bed("route-1"), await open_bed("route-2")
    yield one, two
    await close_bed(one)
    await close_bed(two)


async def test_each_route_server_reaches_every_gateway(pair: tuple[Bed, Bed]) -> None:
    one, two = pair
    for bed in pair:
        bed.settle()
        # The same two gateways (one link each to every route server, as msg_server does).
        await bed.gateway("gw-a", [online(1, 1)])
        await bed.gateway("gw-b", [online(2, 1, ANDROID)])
    assert await one.push([1, 2], msg_id=1) == []
    assert await two.push([1, 2], msg_id=2) == []
    for bed, msg_id in ((one, 1), (two, 2)):
        assert [(list(p.user_ids), p.msg_id) for g in bed.gateways for p in g.pushes] == [
            ([1], msg_id),
            ([2], msg_id),
        ]
    await close_bed(one)
    assert await two.push([1, 2], msg_id=3) == []  # the survivor needs nothing from the other
