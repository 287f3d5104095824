"""login_server end to end in-process: real loopback sockets, fake gateways
linked with common.link's Upstream, discovery over aiohttp's client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from common.cluster_config import ClusterConfig
from common.commands import Cmd
from common.link import Backoff, Identity, Link, LinkSettings, Timing, Upstream
from common.pb import internal_pb2
from login_server.config import LoginServerConfig
from login_server.server import serve

MSFS = "http://files.example:8700/"
DISCOVERY = "http://im.example/api/discovery"


@dataclass
class Cluster:
    http: aiohttp.ClientSession
    http_port: int
    gateway_port: int
    upstreams: list[Upstream] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    async def get(self, path: str) -> tuple[aiohttp.ClientResponse, bytes]:
        async with self.http.get(self.url(path)) as response:
            return response, await response.read()

    async def discover(self) -> dict[str, Any]:
        response, body = await self.get("/msg_server")
        assert response.status == 200
        result: dict[str, Any] = json.loads(body)
        return result

    async def gateways(self) -> list[dict[str, Any]]:
        response, body = await self.get("/gateways")
        assert response.status == 200
        result: list[dict[str, Any]] = json.loads(body)
        return result

    async def gateway(
        self,
        node_id: str,
        *,
        prior_ip: str = "192.0.2.1",
        backup_ip: str = "",
        port: int = 8000,
        max_connections: int = 100,
        connections: int | None = None,
        load_first: bool = False,
    ) -> Upstream:
        """Link a fake gateway; it registers (and reports a load) on connect."""
        info = internal_pb2.GatewayInfo(
            prior_ip=prior_ip,
            backup_ip=backup_ip,
            port=port,
            max_connections=max_connections,
            started_at=1_700_000_000,
        )

        def on_connected(link: Link) -> None:
            load = internal_pb2.GatewayLoad(connections=connections or 0)
            if load_first and connections is not None:
                link.send(Cmd.GATEWAY_LOAD, load)
            link.send(Cmd.GATEWAY_INFO, info)
            if not load_first and connections is not None:
                link.send(Cmd.GATEWAY_LOAD, load)

        upstream = Upstream(
            f"login-{node_id}",
            [("127.0.0.1", self.gateway_port)],
            internal_pb2.LinkHello(role=internal_pb2.ROLE_GATEWAY, node_id=node_id),
            on_connected=on_connected,
        )
        self.upstreams.append(upstream)
        upstream.start()
        assert await upstream.wait_ready(5)
        await self.until(
            lambda rows: any(
                r["node_id"] == node_id
                and r["prior_ip"] == prior_ip
                and (connections is None or r["connections"] == connections)
                for r in rows
            )
        )
        return upstream

    async def report(self, upstream: Upstream, node_id: str, connections: int) -> None:
        assert upstream.send(Cmd.GATEWAY_LOAD, internal_pb2.GatewayLoad(connections=connections))
        await self.until(
            lambda rows: any(
                r["node_id"] == node_id and r["connections"] == connections and r["handed_out"] == 0
                for r in rows
            )
        )

    async def until(self, check: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Poll /gateways until ``check`` holds: the link is asynchronous."""
        for _ in range(200):
            if check(await self.gateways()):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never happened; gateways: {await self.gateways()}")


@pytest.fixture
def heartbeat_interval() -> float:
    return 1.0


@pytest.fixture
async def cluster(heartbeat_interval: float) -> AsyncIterator[Cluster]:
    config = LoginServerConfig(
        host="127.0.0.1",
        http_port=0,
        gateway_port=0,
        metrics_port=-1,  # the default port would collide with another test's server
        msfs_prior=MSFS,
        discovery_url=DISCOVERY,
        cluster=ClusterConfig(heartbeat_interval=heartbeat_interval),
    )
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, stop, ready.set_result))
    # If serve fails before announcing, surface its error instead of a timeout.
    waiting: set[asyncio.Future[Any]] = {ready, task}
    await asyncio.wait(waiting, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    ports = ready.result()
    async with aiohttp.ClientSession() as http:
        harness = Cluster(http, ports["http_port"], ports["gateway_port"])
        try:
            yield harness
        finally:
            for upstream in harness.upstreams:
                await upstream.stop()
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_discovery_json_is_teamtalks_exactly(cluster: Cluster) -> None:
    await cluster.gateway("msg-1", prior_ip="192.0.2.10", backup_ip="198.51.100.10", port=8001)
    response, body = await cluster.get("/msg_server")
    assert response.status == 200
    assert response.content_type == "text/html"  # what TeamTalk sends
    assert response.charset == "utf-8"
    assert body == (
        b'{"code":0,"msg":"","priorIP":"192.0.2.10","backupIP":"198.51.100.10",'
        b'"port":"8001","msfsPrior":"http://files.example:8700/",'
        b'"msfsBackup":"http://files.example:8700/",'
        b'"discovery":"http://im.example/api/discovery"}'
    )
    assert isinstance(json.loads(body)["port"], str)


async def test_any_path_starting_with_msg_server(cluster: Cluster) -> None:
    await cluster.gateway("msg-1", prior_ip="192.0.2.10")
    for path in ("/msg_server/", "/msg_server?uid=1&t=2", "/msg_server_list", "/msg_server/x/y"):
        response, body = await cluster.get(path)
        assert response.status == 200, path
        assert json.loads(body)["priorIP"] == "192.0.2.10", path
    async with cluster.http.post(cluster.url("/msg_server"), data=b"x") as response:
        assert json.loads(await response.read())["code"] == 0
    response, _ = await cluster.get("/other")
    assert response.status == 404


async def test_backup_ip_falls_back_to_prior_ip(cluster: Cluster) -> None:
    await cluster.gateway("msg-1", prior_ip="192.0.2.10", backup_ip="")
    reply = await cluster.discover()
    assert reply["backupIP"] == reply["priorIP"] == "192.0.2.10"


async def test_no_gateway_is_code_1(cluster: Cluster) -> None:
    response, body = await cluster.get("/msg_server")
    assert response.status == 200
    assert body == b'{"code":1,"msg":"no msg server available"}'


async def test_all_full_is_code_2(cluster: Cluster) -> None:
    await cluster.gateway("msg-1", max_connections=10, connections=10)
    await cluster.gateway("msg-2", max_connections=0)
    _, body = await cluster.get("/msg_server")
    assert body == b'{"code":2,"msg":"all msg servers are full"}'


async def test_least_loaded_and_full_skipped(cluster: Cluster) -> None:
    await cluster.gateway("msg-1", prior_ip="192.0.2.1", max_connections=100, connections=50)
    await cluster.gateway("msg-2", prior_ip="192.0.2.2", max_connections=30, connections=30)
    g3 = await cluster.gateway("msg-3", prior_ip="192.0.2.3", max_connections=100, connections=20)
    assert (await cluster.discover())["priorIP"] == "192.0.2.3"
    # msg-3 gets busier than msg-1; msg-2, though emptier now, is full.
    await cluster.report(g3, "msg-3", 80)
    assert (await cluster.discover())["priorIP"] == "192.0.2.1"


async def test_hand_outs_spread_between_reports(cluster: Cluster) -> None:
    await cluster.gateway("msg-1", prior_ip="192.0.2.1", connections=0)
    await cluster.gateway("msg-2", prior_ip="192.0.2.2", connections=0)
    ips = [(await cluster.discover())["priorIP"] for _ in range(6)]
    assert ips == ["192.0.2.1", "192.0.2.2"] * 3


async def test_load_before_info_is_kept(cluster: Cluster) -> None:
    await cluster.gateway("msg-1", prior_ip="192.0.2.1", connections=40, load_first=True)
    await cluster.gateway("msg-2", prior_ip="192.0.2.2", connections=10)
    assert (await cluster.discover())["priorIP"] == "192.0.2.2"


async def test_dropped_gateway_is_no_longer_handed_out(cluster: Cluster) -> None:
    g1 = await cluster.gateway("msg-1", prior_ip="192.0.2.1", connections=0)
    await cluster.gateway("msg-2", prior_ip="192.0.2.2", connections=50)
    assert (await cluster.discover())["priorIP"] == "192.0.2.1"
    await g1.stop()
    await cluster.until(lambda rows: [r["node_id"] for r in rows] == ["msg-2"])
    assert {(await cluster.discover())["priorIP"] for _ in range(3)} == {"192.0.2.2"}


async def test_last_gateway_dropping_gives_code_1(cluster: Cluster) -> None:
    g1 = await cluster.gateway("msg-1")
    await g1.stop()
    await cluster.until(lambda rows: rows == [])
    assert (await cluster.discover())["code"] == 1


async def test_a_linked_node_id_cannot_be_taken_over(cluster: Cluster) -> None:
    """A second gateway claiming "msg-1" is refused while the real one is linked;
    the real one is handed out throughout, and the newcomer only once it is gone."""
    real = await cluster.gateway("msg-1", prior_ip="192.0.2.1")
    rogue = Upstream(
        "rogue",
        [("127.0.0.1", cluster.gateway_port)],
        Identity(internal_pb2.ROLE_GATEWAY, "msg-1"),
        on_connected=sender("192.0.2.99", 8000),
        backoff=Backoff(initial=0.02, cap=0.05),
    )
    cluster.upstreams.append(rogue)
    rogue.start()
    await until_true(lambda: rogue.attempts >= 3)
    assert not rogue.connected
    assert [(r["node_id"], r["prior_ip"]) for r in await cluster.gateways()] == [("msg-1", "192.0.2.1")]
    for _ in range(10):
        assert (await cluster.discover())["priorIP"] == "192.0.2.1"
    await real.stop()
    # Only now may a gateway of that name register again.
    await cluster.until(
        lambda rows: [(r["node_id"], r["prior_ip"]) for r in rows] == [("msg-1", "192.0.2.99")]
    )


async def test_a_relinked_gateway_is_handed_out_again(cluster: Cluster) -> None:
    gateway = await cluster.gateway("msg-1", prior_ip="192.0.2.1")
    assert gateway.link is not None
    gateway.link.abort()  # the link drops; the gateway relinks and registers again
    await cluster.until(lambda rows: rows == [])
    await cluster.until(lambda rows: [r["node_id"] for r in rows] == ["msg-1"])
    assert (await cluster.discover())["priorIP"] == "192.0.2.1"


async def until_true(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_healthz_and_gateways(cluster: Cluster) -> None:
    response, body = await cluster.get("/healthz")
    assert response.status == 200
    assert json.loads(body) == {"status": "ok", "gateways": 0}
    await cluster.gateway("msg-1", prior_ip="192.0.2.1", port=8001, max_connections=500, connections=12)
    response, body = await cluster.get("/healthz")
    assert json.loads(body) == {"status": "ok", "gateways": 1}
    (row,) = await cluster.gateways()
    assert row["node_id"] == "msg-1"
    assert (row["prior_ip"], row["backup_ip"], row["port"]) == ("192.0.2.1", "192.0.2.1", 8001)
    assert (row["connections"], row["max_connections"]) == (12, 500)
    assert isinstance(row["uptime"], int) and row["uptime"] > 0
    assert row["peer"].startswith("127.0.0.1:")


def sender(prior_ip: str, port: int) -> Callable[[Link], None]:
    def on_connected(link: Link) -> None:
        link.send(
            Cmd.GATEWAY_INFO,
            internal_pb2.GatewayInfo(
                prior_ip=prior_ip,
                backup_ip="",
                port=port,
                max_connections=1,
                started_at=0,
            ),
        )

    return on_connected


async def test_wrong_role_and_unusable_address_are_not_registered(cluster: Cluster) -> None:
    admin = Upstream(
        "admin",
        [("127.0.0.1", cluster.gateway_port)],
        internal_pb2.LinkHello(role=internal_pb2.ROLE_ADMIN, node_id="imctl"),
        on_connected=sender("192.0.2.1", 8000),
    )
    cluster.upstreams.append(admin)
    admin.start()
    bad = Upstream(
        "bad",
        [("127.0.0.1", cluster.gateway_port)],
        internal_pb2.LinkHello(role=internal_pb2.ROLE_GATEWAY, node_id="msg-bad"),
        on_connected=sender("", 0),
    )
    cluster.upstreams.append(bad)
    bad.start()
    assert await bad.wait_ready(5)
    await cluster.gateway("msg-ok")  # processed after the others' frames had time to arrive
    await asyncio.sleep(0.05)
    assert [r["node_id"] for r in await cluster.gateways()] == ["msg-ok"]


@pytest.mark.parametrize("heartbeat_interval", [0.1])
async def test_silent_gateway_link_is_dropped(cluster: Cluster) -> None:
    """A peer that stops sending (a frozen process) is dropped after interval x misses."""
    silent = Upstream(
        "silent",
        [("127.0.0.1", cluster.gateway_port)],
        Identity(internal_pb2.ROLE_GATEWAY, "msg-silent"),
        settings=LinkSettings(timing=Timing(heartbeat_interval=60.0, heartbeat_misses=10)),
        on_connected=sender("192.0.2.7", 8000),
    )
    cluster.upstreams.append(silent)
    silent.start()
    assert await silent.wait_ready(5)
    assert silent.link is not None
    link = silent.link
    await cluster.until(lambda rows: [r["node_id"] for r in rows] == ["msg-silent"])
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(link.lost, 2)
    assert asyncio.get_running_loop().time() - started < 1.0
    await cluster.until(lambda rows: rows == [])
    assert (await cluster.discover())["code"] == 1
