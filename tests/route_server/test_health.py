"""/healthz and /metrics of a route server run by its serve(), on the real clock."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from common.commands import Rpcs
from common.link import Identity, LinkSettings, Upstream
from common.pb import internal_pb2
from route_server.config import RouteServerConfig
from route_server.server import serve
from tests.route_server.conftest import TIMEOUT, FakeGateway, cluster, online, push_msg


async def test_healthz_says_when_pushes_are_answered() -> None:
    config = RouteServerConfig(node_id="route-h", port=0, metrics_port=0, cluster=cluster())
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, stop, ready.set_result))
    db = gateway = None
    try:
        ports = await asyncio.wait_for(ready, TIMEOUT)
        url = f"http://127.0.0.1:{ports['metrics_port']}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz") as response:
                first = await response.json()
                assert response.status == 200  # alive while settling: a probe must not restart it
            assert first["ready"] is False and first["settling"] == "no gateway linked"
            gateway = FakeGateway("gw-h", ports["port"], [online(42, 1)])
            assert await gateway.start().wait_ready(TIMEOUT)
            async with asyncio.timeout(TIMEOUT):  # settles after the detection time (0.3 s here)
                while not first["ready"]:
                    await asyncio.sleep(0.05)
                    async with http.get(f"{url}/healthz") as response:
                        first = await response.json()
            db = Upstream(
                "db-h",
                [("127.0.0.1", ports["port"])],
                Identity(internal_pb2.ROLE_DB_PROXY, "db-h"),
                settings=LinkSettings.from_cluster(cluster()),
                expect_role=internal_pb2.ROLE_ROUTE_SERVER,
            )
            db.start()
            assert await db.wait_ready(TIMEOUT)
            assert list((await db.call(Rpcs.PUSH_MSG, push_msg([42]), TIMEOUT)).retry_user_ids) == []
            assert [list(p.user_ids) for p in gateway.pushes] == [[42]]
            async with http.get(f"{url}/metrics") as response:
                text = await response.text()
        assert "imcluster_route_ready 1.0" in text
        assert "imcluster_route_push_seconds_count" in text
        assert 'imcluster_route_pushes_dropped_total{reason="gateway_timeout"}' in text
    finally:
        if db is not None:
            await db.stop()
        if gateway is not None and gateway.link is not None:
            await gateway.link.stop()
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
