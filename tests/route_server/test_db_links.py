"""What db_proxies send a route server besides pushes: directory invalidations, relayed
to every other linked db_proxy (never back to the sender), and profile changes, taken
exactly as from a gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from common.commands import Cmd, OneWays
from common.link import Identity, LinkSettings, Upstream
from common.pb import internal_pb2
from common.rpc import Commands
from tests.route_server.conftest import TIMEOUT, Bed, cluster, online, until
from tests.route_server.test_profile_notices import sign_change


def relayed() -> float:
    value = REGISTRY.get_sample_value("imcluster_route_db_invalidations_total", {"outcome": "relayed"})
    return value or 0.0


class FakeDbProxy:
    """A db_proxy's route link that keeps the invalidations it is sent."""

    def __init__(self, node_id: str, port: int) -> None:
        self.node_id = node_id
        self.got: asyncio.Queue[internal_pb2.DbInvalidate] = asyncio.Queue()
        self.link = Upstream(
            f"db@{node_id}",
            [("127.0.0.1", port)],
            Identity(internal_pb2.ROLE_DB_PROXY, node_id),
            settings=LinkSettings.from_cluster(cluster()),
            expect_role=internal_pb2.ROLE_ROUTE_SERVER,
            commands=Commands().oneway(OneWays.DB_INVALIDATE, lambda link, msg: self.got.put_nowait(msg)),
        )


@pytest.fixture
async def proxies(bed: Bed) -> AsyncIterator[list[FakeDbProxy]]:
    # The bed's own db_proxy link takes no invalidations: out of the way.
    await bed.db.stop()
    await until(lambda: "db-t" not in bed.server.db_proxy_links)
    made = [FakeDbProxy(f"db-{i}", bed.port) for i in (1, 2, 3)]
    for proxy in made:
        proxy.link.start()
    for proxy in made:
        assert await proxy.link.wait_ready(TIMEOUT)
    await until(lambda: {"db-1", "db-2", "db-3"} <= set(bed.server.db_proxy_links))
    yield made
    for proxy in made:
        await proxy.link.stop()


async def test_an_invalidation_reaches_every_other_db_proxy_once(
    bed: Bed, proxies: list[FakeDbProxy]
) -> None:
    sender, *others = proxies
    before = relayed()
    msg = internal_pb2.DbInvalidate(user_ids=[7, 8], from_node=sender.node_id)
    assert sender.link.send(Cmd.DB_INVALIDATE, msg)
    for proxy in others:
        got = await asyncio.wait_for(proxy.got.get(), TIMEOUT)
        assert list(got.user_ids) == [7, 8]
    await until(lambda: relayed() == before + 2)
    assert sender.got.empty()


async def test_a_db_proxy_gone_is_not_relayed_to(bed: Bed, proxies: list[FakeDbProxy]) -> None:
    sender, gone, kept = proxies
    await gone.link.stop()
    await until(lambda: "db-2" not in bed.server.db_proxy_links)
    assert sender.link.send(Cmd.DB_INVALIDATE, internal_pb2.DbInvalidate(user_ids=[1], from_node="db-1"))
    got = await asyncio.wait_for(kept.got.get(), TIMEOUT)
    assert list(got.user_ids) == [1]
    assert gone.got.empty()


async def test_a_profile_change_from_a_db_proxy_reaches_the_gateways(bed: Bed) -> None:
    gateway = await bed.gateway("gw-a", [online(1, 1)])
    assert bed.db.send(Cmd.ROUTE_PROFILE_CHANGE, sign_change(1, "from an admin"))
    await until(lambda: bed.server.notices.pending == 1)
    bed.server.send_batches()
    batch = await gateway.next(Cmd.ROUTE_PROFILE_BATCH)
    assert [change.user_id for change in batch.changes] == [1]
