"""A route server in-process on loopback, with fakes on real links around it.

Fake gateways are real ``Upstream`` links with a gateway's identity: they send
their snapshot on connect (as msg_server's gateway does), answer PUSH_MSG from
a table the test steers (answer, hand back users, hang until released, stop
reading altogether), and keep every frame the route server sends them. The
fake db_proxy is an ``Upstream`` with db_proxy's identity calling PUSH_MSG.
The route server runs on a fake clock, so settling is the test's to decide;
its links run on real, short heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common.cluster_config import ClusterConfig
from common.commands import Cmd, OneWays, Rpcs
from common.link import Identity, Link, LinkSettings, Upstream
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands
from route_server.config import RouteServerConfig
from route_server.server import RouteServer

SECRET = "test-cluster-secret-0123456789"
TIMEOUT = 5.0
PUSH_TIMEOUT = 0.5
ANDROID, IOS, WINDOWS = base_pb2.CLIENT_TYPE_ANDROID, base_pb2.CLIENT_TYPE_IOS, base_pb2.CLIENT_TYPE_WINDOWS


def cluster() -> ClusterConfig:
    # Detection time 0.3 s: a silent peer's link is dropped within it.
    return ClusterConfig(secret=SECRET, heartbeat_interval=0.1, heartbeat_misses=3, handshake_timeout=1.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def online(user_id: int, conn_id: int, client_type: int = WINDOWS) -> internal_pb2.OnlineSession:
    return internal_pb2.OnlineSession(
        user_id=user_id,
        conn_id=conn_id,
        client_type=client_type,  # type: ignore[arg-type]
        status=base_pb2.USER_STATUS_ONLINE,
    )


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for a condition on in-process state (bounded in time)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def dropped(reason: str) -> float:
    value = REGISTRY.get_sample_value("imcluster_route_pushes_dropped_total", {"reason": reason})
    return value or 0.0


def push_msg(user_ids: Iterable[int], msg_id: int = 1) -> internal_pb2.PushMsg:
    return internal_pb2.PushMsg(
        user_ids=list(user_ids),
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        from_user_id=1,
        to_id=2,
        msg_id=msg_id,
        body=b"IMMsgData bytes",
        committed_at_us=int(time.time() * 1e6),
    )


@dataclass
class FakeGateway:
    node_id: str
    port: int
    sessions: list[internal_pb2.OnlineSession] = field(default_factory=list)
    # Until set, the snapshot is held back after the handshake (a slow relink).
    snapshot_gate: asyncio.Event = field(default_factory=asyncio.Event)
    # Until set, PUSH_MSG is not answered (a gateway stuck writing to its clients).
    answer_gate: asyncio.Event = field(default_factory=asyncio.Event)
    hand_back: set[int] = field(default_factory=set)  # users it answers "retry" for
    pushes: list[internal_pb2.PushMsg] = field(default_factory=list)
    push_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    batches: list[int] = field(default_factory=list)  # PUSH_MSGS frames, by how many pushes each had
    frames: asyncio.Queue[tuple[int, Any]] = field(default_factory=asyncio.Queue)
    link: Upstream | None = None

    def __post_init__(self) -> None:
        self.snapshot_gate.set()
        self.answer_gate.set()

    async def on_push(self, link: Link, msg: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        self.pushes.append(msg)
        self.push_arrived.set()
        await self.answer_gate.wait()
        return internal_pb2.PushMsgResult(retry_user_ids=[u for u in msg.user_ids if u in self.hand_back])

    async def on_push_many(
        self, link: Link, batch: internal_pb2.PushMsgBatch
    ) -> internal_pb2.PushMsgBatchResult:
        self.batches.append(len(batch.pushes))
        self.pushes.extend(batch.pushes)
        self.push_arrived.set()
        await self.answer_gate.wait()
        return internal_pb2.PushMsgBatchResult(
            results=[
                internal_pb2.PushMsgResult(retry_user_ids=[u for u in p.user_ids if u in self.hand_back])
                for p in batch.pushes
            ]
        )

    async def send_snapshot(self, link: Link) -> None:
        await self.snapshot_gate.wait()
        link.send(Cmd.ROUTE_SNAPSHOT, internal_pb2.RouteSnapshot(sessions=self.sessions))

    def commands(self) -> Commands:
        def keep(command: int) -> Callable[[Link, Any], None]:
            return lambda link, message: self.frames.put_nowait((command, message))

        return (
            Commands()
            .rpc(Rpcs.PUSH_MSG, self.on_push)
            .rpc(Rpcs.PUSH_MSGS, self.on_push_many)
            .oneway(OneWays.ROUTE_DELIVER, keep(Cmd.ROUTE_DELIVER))
            .oneway(OneWays.ROUTE_STATUS_BATCH, keep(Cmd.ROUTE_STATUS_BATCH))
            .oneway(OneWays.ROUTE_PROFILE_BATCH, keep(Cmd.ROUTE_PROFILE_BATCH))
            .oneway(OneWays.ROUTE_KICK, keep(Cmd.ROUTE_KICK))
        )

    def start(self) -> Upstream:
        self.link = Upstream(
            self.node_id,
            [("127.0.0.1", self.port)],
            Identity(internal_pb2.ROLE_GATEWAY, self.node_id),
            settings=LinkSettings.from_cluster(cluster()),
            expect_role=internal_pb2.ROLE_ROUTE_SERVER,
            commands=self.commands(),
            on_connected=self.send_snapshot,
        )
        self.link.start()
        return self.link

    def session_up(self, session: internal_pb2.OnlineSession) -> None:
        self.sessions.append(session)
        assert self.link is not None
        assert self.link.send(Cmd.ROUTE_SESSION_UP, internal_pb2.RouteSessionUp(session=session))

    def freeze(self) -> None:
        """Stop reading from the route server, as a SIGSTOPped process's socket does."""
        assert self.link is not None and self.link.link is not None
        transport = self.link.link.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()

    def received(self) -> list[int]:
        """The commands of the frames kept so far (taken off the queue)."""
        commands = []
        while not self.frames.empty():
            commands.append(self.frames.get_nowait()[0])
        return commands

    async def next(self, command_id: int, timeout: float = TIMEOUT) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                command, message = await self.frames.get()
                if command == command_id:
                    return message


@dataclass
class Bed:
    server: RouteServer
    port: int
    clock: FakeClock
    db: Upstream  # the fake db_proxy
    gateways: list[FakeGateway] = field(default_factory=list)
    closed: bool = False
    settled: bool = False  # settle() was called: the clock keeps up with every settle window

    def settle(self) -> None:
        """Past the detection time since start, and since any later (re)join; snapshots
        are another matter."""
        self.settled = True
        self.clock.now = max(self.clock.now, self.server.readiness.settled_at)

    async def gateway(
        self, node_id: str, sessions: Iterable[internal_pb2.OnlineSession] = (), wait: bool = True
    ) -> FakeGateway:
        gateway = FakeGateway(node_id, self.port, list(sessions))
        self.gateways.append(gateway)
        if not wait:
            gateway.snapshot_gate.clear()
        upstream = gateway.start()
        await until(lambda: node_id in self.server.gateway_links)
        if self.settled:
            self.settle()
        if wait:
            assert await upstream.wait_ready(TIMEOUT)
            await until(lambda: self.snapshot_seen(node_id))
        return gateway

    def snapshot_seen(self, node_id: str) -> bool:
        return node_id in self.server.gateway_links and node_id not in self.server.readiness.awaiting(
            self.clock()
        )

    async def push(self, user_ids: Iterable[int], msg_id: int = 1) -> list[int]:
        result = await self.db.call(Rpcs.PUSH_MSG, push_msg(user_ids, msg_id), TIMEOUT)
        return list(result.retry_user_ids)

    def placed(self, user_id: int) -> list[tuple[str, int]]:
        return sorted((s.gateway_id, s.conn_id) for s in self.server.table.sessions_of(user_id))


async def open_bed(node_id: str = "route-t") -> Bed:
    """A route server on a fake clock, and a fake db_proxy linked to it."""
    clock = FakeClock()
    config = RouteServerConfig(
        node_id=node_id, port=0, metrics_port=-1, push_timeout=PUSH_TIMEOUT, cluster=cluster()
    )
    server = RouteServer(config, clock=clock)
    port = await server.listen("127.0.0.1", 0)
    db = Upstream(
        f"db@{node_id}",
        [("127.0.0.1", port)],
        Identity(internal_pb2.ROLE_DB_PROXY, "db-t"),
        settings=LinkSettings.from_cluster(cluster()),
        expect_role=internal_pb2.ROLE_ROUTE_SERVER,
    )
    db.start()
    assert await db.wait_ready(TIMEOUT)
    return Bed(server, port, clock, db)


async def close_bed(made: Bed) -> None:
    if made.closed:
        return
    made.closed = True
    for gateway in made.gateways:
        gateway.snapshot_gate.set()
        gateway.answer_gate.set()
        if gateway.link is not None:
            await gateway.link.stop()
    await made.db.stop()
    await made.server.close()


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    made = await open_bed()
    yield made
    await close_bed(made)
