"""Write coalescing on the internal links: a Link writes at most once per event-loop turn.

Real loopback sockets (a LinkServer and an Upstream in-process); each side's
transport is wrapped so its writes are counted. Nothing sleeps: the tests
wait on the calls' own answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.commands import OneWays, Rpcs
from common.errors import NotFound
from common.link import Identity, Link, LinkServer, LinkSettings, Timing, Upstream
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands

SECRET = (b"test-cluster-secret-0123456789",)
TIMING = Timing(heartbeat_interval=5.0, heartbeat_misses=3, handshake_timeout=2.0)
GATEWAY = Identity(internal_pb2.ROLE_GATEWAY, "msg-1")


class CountingTransport:
    """Wraps a transport: counts ``write`` calls, forwards everything else."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def count_writes(link: Link) -> CountingTransport:
    assert link.transport is not None
    counting = CountingTransport(link.transport)
    link.transport = counting  # type: ignore[assignment]
    return counting


class Db:
    def __init__(self) -> None:
        self.links: list[Link] = []
        self.release = asyncio.Event()
        self.held = 0
        self.all_held = asyncio.Event()
        self.expect_held = 0
        self.deliveries: list[int] = []

    async def login(self, link: Link, req: internal_pb2.DbLoginReq) -> internal_pb2.DbLoginRes:
        if req.user_name.startswith("hold"):
            self.held += 1
            if self.held == self.expect_held:
                self.all_held.set()
            await self.release.wait()
        if req.user_name == "nobody":
            raise NotFound("no user 'nobody'")
        return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, result_string=req.user_name)

    def deliver(self, link: Link, msg: internal_pb2.RouteDeliver) -> None:
        self.deliveries.append(msg.command_id)


class Server(LinkServer):
    def __init__(self, db: Db) -> None:
        commands = Commands().rpc(Rpcs.DB_LOGIN, db.login).oneway(OneWays.ROUTE_DELIVER, db.deliver)
        super().__init__(
            {internal_pb2.ROLE_GATEWAY: commands},
            role=internal_pb2.ROLE_DB_PROXY,
            node_id="db-1",
            settings=LinkSettings(secrets=SECRET, timing=TIMING),
        )
        self.db = db

    def on_hello(self, link: Link) -> None:
        self.db.links.append(link)


@pytest.fixture
async def linked() -> AsyncIterator[tuple[Upstream, Db]]:
    db = Db()
    server = Server(db)
    port = await server.listen("127.0.0.1", 0)
    upstream = Upstream(
        "db",
        [("127.0.0.1", port)],
        GATEWAY,
        settings=LinkSettings(secrets=SECRET, timing=TIMING),
        expect_role=internal_pb2.ROLE_DB_PROXY,
    )
    upstream.start()
    assert await upstream.wait_ready(5)
    yield upstream, db
    await upstream.stop()
    await server.close()


def login(name: str) -> internal_pb2.DbLoginReq:
    return internal_pb2.DbLoginReq(user_name=name, password_md5="", peer="test")


async def test_calls_issued_in_one_turn_go_out_in_one_write(linked) -> None:
    upstream, _ = linked
    assert upstream.link is not None
    counting = count_writes(upstream.link)
    calls = [asyncio.ensure_future(upstream.call(Rpcs.DB_LOGIN, login(f"u{i}"), 5.0)) for i in range(50)]
    # gather starts every call's task in the same turn.
    replies = await asyncio.gather(*calls)
    assert [r.result_string for r in replies] == [f"u{i}" for i in range(50)]
    assert counting.writes == 1


async def test_replies_finished_in_one_turn_go_out_in_one_write(linked) -> None:
    upstream, db = linked
    db.expect_held = 20
    calls = [asyncio.ensure_future(upstream.call(Rpcs.DB_LOGIN, login(f"hold{i}"), 5.0)) for i in range(20)]
    await db.all_held.wait()
    (server_link,) = db.links
    counting = count_writes(server_link)
    db.release.set()  # every handler finishes in the same turn
    replies = await asyncio.gather(*calls)
    assert [r.result_string for r in replies] == [f"hold{i}" for i in range(20)]
    assert counting.writes == 1


async def test_one_way_frames_and_calls_of_a_turn_share_the_write_and_keep_their_order(linked) -> None:
    upstream, db = linked
    assert upstream.link is not None
    counting = count_writes(upstream.link)
    for command in (1, 2, 3):
        assert upstream.send(OneWays.ROUTE_DELIVER, internal_pb2.RouteDeliver(command_id=command, body=b""))
    reply = await upstream.call(Rpcs.DB_LOGIN, login("after"), 5.0)
    assert reply.result_string == "after"
    assert db.deliveries == [1, 2, 3]  # handled before the call that followed them
    assert counting.writes == 1


async def test_errors_answered_in_the_same_turn_still_map(linked) -> None:
    upstream, _ = linked
    results = await asyncio.gather(
        upstream.call(Rpcs.DB_LOGIN, login("nobody"), 5.0),
        upstream.call(Rpcs.DB_LOGIN, login("somebody"), 5.0),
        return_exceptions=True,
    )
    assert isinstance(results[0], NotFound)
    assert isinstance(results[1], internal_pb2.DbLoginRes)


async def test_close_writes_what_this_turn_queued_first(linked) -> None:
    upstream, db = linked
    link = upstream.link
    assert link is not None
    for command in (7, 8):
        assert link.send(OneWays.ROUTE_DELIVER, internal_pb2.RouteDeliver(command_id=command, body=b""))
    link.close()  # in the same turn: the two frames are still only queued
    assert not link.send(OneWays.ROUTE_DELIVER, internal_pb2.RouteDeliver(command_id=9, body=b""))
    await link.lost
    (server_link,) = db.links
    await server_link.lost
    assert db.deliveries == [7, 8]


async def test_a_link_already_over_its_write_bound_is_cut_off_when_asked_to_send(linked) -> None:
    upstream, _ = linked
    link = upstream.link
    assert link is not None
    link.max_write_buffer = -1  # anything unsent is too much: the peer "does not read"
    assert not link.send(OneWays.ROUTE_DELIVER, internal_pb2.RouteDeliver(command_id=1, body=b""))
    await link.lost
    assert link.closing
