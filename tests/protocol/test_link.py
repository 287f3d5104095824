"""The link adapters on real loopback sockets: a LinkServer and Upstreams in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from common.commands import OneWays, Rpcs
from common.errors import Bug, NotFound, Unavailable
from common.link import Backoff, Identity, Link, LinkServer, LinkSettings, RequestTimeout, Timing, Upstream
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands

SECRET = (b"test-cluster-secret-0123456789",)
FAST = Timing(heartbeat_interval=0.1, heartbeat_misses=3, handshake_timeout=1.0)
GATEWAY = Identity(internal_pb2.ROLE_GATEWAY, "msg-1")


@dataclass
class Fake:
    """What the fake db_proxy was asked, and how it answers."""

    delay: dict[str, float] = field(default_factory=dict)
    pushes: list[internal_pb2.RouteDeliver] = field(default_factory=list)

    async def login(self, link: Link, req: internal_pb2.DbLoginReq) -> internal_pb2.DbLoginRes:
        await asyncio.sleep(self.delay.get(req.user_name, 0.0))
        if req.user_name == "nobody":
            raise NotFound("no user 'nobody'")
        if req.user_name == "bug":
            raise KeyError("a bug")
        return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, result_string=req.user_name)

    def deliver(self, link: Link, msg: internal_pb2.RouteDeliver) -> None:
        self.pushes.append(msg)


@pytest.fixture
async def served() -> AsyncIterator[tuple[LinkServer, int, Fake]]:
    fake = Fake()
    commands = Commands().rpc(Rpcs.DB_LOGIN, fake.login).oneway(OneWays.ROUTE_DELIVER, fake.deliver)
    server = LinkServer(
        {internal_pb2.ROLE_GATEWAY: commands},
        role=internal_pb2.ROLE_DB_PROXY,
        node_id="db-1",
        settings=LinkSettings(secrets=SECRET, timing=FAST),
    )
    port = await server.listen("127.0.0.1", 0)
    yield server, port, fake
    await server.close()


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(
        port: int, me: Identity = GATEWAY, secrets: tuple[bytes, ...] = SECRET, **kwargs: object
    ) -> Upstream:
        upstream = Upstream(
            "test",
            [("127.0.0.1", port)],
            me,
            settings=LinkSettings(secrets=secrets, timing=FAST),
            expect_role=internal_pb2.ROLE_DB_PROXY,
            **kwargs,  # type: ignore[arg-type]
        )
        upstream.start()
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.stop()


def login(name: str) -> internal_pb2.DbLoginReq:
    return internal_pb2.DbLoginReq(user_name=name, password_md5="", peer="test")


async def test_typed_call_and_mapped_errors(served, upstreams) -> None:
    _, port, _ = served
    upstream = upstreams(port)
    assert await upstream.wait_ready(5)
    reply = await upstream.call(Rpcs.DB_LOGIN, login("alice"), 5.0)
    assert isinstance(reply, internal_pb2.DbLoginRes) and reply.result_string == "alice"
    with pytest.raises(NotFound, match="nobody"):
        await upstream.call(Rpcs.DB_LOGIN, login("nobody"), 5.0)
    with pytest.raises(Bug) as bug:
        await upstream.call(Rpcs.DB_LOGIN, login("bug"), 5.0)
    assert "KeyError" not in str(bug.value)  # a bug's internals stay on the server


async def test_a_late_reply_never_answers_a_newer_request(served, upstreams) -> None:
    _, port, fake = served
    fake.delay["slow"] = 0.3
    upstream = upstreams(port)
    assert await upstream.wait_ready(5)
    with pytest.raises(RequestTimeout):
        await upstream.call(Rpcs.DB_LOGIN, login("slow"), 0.1)
    fake.delay["second"] = 0.4  # still pending when the first (late) reply arrives
    reply = await upstream.call(Rpcs.DB_LOGIN, login("second"), 5.0)
    assert reply.result_string == "second"
    assert upstream.link is not None and upstream.link.session is not None
    assert upstream.link.session.late_replies == 1


async def test_wrong_secret_gets_nothing(served, upstreams) -> None:
    server, port, _ = served
    intruder = upstreams(port, secrets=(b"not-the-cluster-secret-000000",), backoff=Backoff(0.02, 0.05))
    async with asyncio.timeout(5):
        while intruder.attempts < 3:
            await asyncio.sleep(0.01)
    assert not intruder.connected
    with pytest.raises(Unavailable):
        await intruder.call(Rpcs.DB_LOGIN, login("alice"), 1.0)
    assert not server.linked


async def test_a_second_peer_with_a_linked_node_id_is_refused(served, upstreams) -> None:
    server, port, _ = served
    first = upstreams(port)
    assert await first.wait_ready(5)
    second = upstreams(port, backoff=Backoff(0.02, 0.05))
    async with asyncio.timeout(5):
        while second.attempts < 3:
            await asyncio.sleep(0.01)
    assert not second.connected and first.connected
    assert first.link is not None and first.link.transport is not None
    local_port = first.link.transport.get_extra_info("sockname")[1]
    assert server.linked[GATEWAY].peer == f"127.0.0.1:{local_port}"
    await first.stop()
    assert await second.wait_ready(5)  # taken over only once the first is gone


async def test_a_command_outside_the_table_closes_the_link(served, upstreams) -> None:
    _, port, _ = served
    upstream = upstreams(port)
    assert await upstream.wait_ready(5)
    link = upstream.link
    assert link is not None
    with pytest.raises(Unavailable):
        await link.call(Rpcs.UNREAD_CNT, _unread(), 5.0)
    await asyncio.wait_for(link.lost, 2)


def _unread():
    from common.pb import message_pb2

    return message_pb2.IMUnreadMsgCntReq(user_id=1)


async def test_one_way_frames_reach_their_handler(served, upstreams) -> None:
    _, port, fake = served
    upstream = upstreams(port)
    assert await upstream.wait_ready(5)
    assert upstream.send(OneWays.ROUTE_DELIVER, internal_pb2.RouteDeliver(command_id=1, body=b"x"))
    await upstream.call(Rpcs.DB_LOGIN, login("alice"), 5.0)  # a marker: frames arrive in order
    assert [p.body for p in fake.pushes] == [b"x"]


async def test_a_peer_that_accepts_then_closes_is_retried_with_backoff(upstreams) -> None:
    """No reconnect spin (issue 7 measured ~600 reconnects/s)."""
    accepted = 0

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    listener = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        upstream = upstreams(port)
        await asyncio.sleep(1.0)
        assert not upstream.connected
        assert 1 <= accepted <= 12, accepted
    finally:
        listener.close()


async def test_a_frozen_peer_is_not_taken_for_alive(upstreams) -> None:
    """A listener that accepts but never answers (SIGSTOP: the kernel still accepts)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        upstream = upstreams(sock.getsockname()[1])
        assert not await upstream.wait_ready(1.5)
        assert upstream.attempts >= 1
    finally:
        sock.close()


async def test_a_host_that_drops_syns_is_given_up_on_quickly(upstreams) -> None:
    """The bare TCP connect has its own short bound: a peer whose SYNs go
    unanswered (cut off) must not hold each attempt for the kernel's SYN
    retransmits, up to the whole connect+handshake bound (6 s by default).

    A listener with a full accept queue drops SYNs on Linux: listen(0), and
    connections nobody accepts fill the queue."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        loop = asyncio.get_running_loop()
        started = loop.time()
        upstream = upstreams(port, tcp_connect_timeout=0.2, backoff=Backoff(initial=0.01, cap=0.01))
        assert upstream.tcp_connect_timeout == 0.2
        async with asyncio.timeout(5):
            while upstream.attempts < 4:  # each attempt ends after 0.2 s, not 1 s + the handshake
                await asyncio.sleep(0.05)
        assert not upstream.connected
        assert loop.time() - started < 2.0
    finally:
        for filler in fillers:
            filler.close()
        sock.close()


def test_the_tcp_connect_bound_defaults_to_a_second_at_most() -> None:
    assert Upstream("t", [("127.0.0.1", 1)], GATEWAY).tcp_connect_timeout == 1.0
    quick = LinkSettings(connect_timeout=0.5)
    assert Upstream("t", [("127.0.0.1", 1)], GATEWAY, settings=quick).tcp_connect_timeout == 0.5


async def test_silent_peer_detected_and_sockets_tuned(served, upstreams, caplog) -> None:
    server, port, _ = served
    upstream = upstreams(port)
    assert await upstream.wait_ready(5)
    link = upstream.link
    assert link is not None and link.transport is not None
    sock = link.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 300
    # Freeze the server side: it stops reading and sending, as SIGSTOP would.
    (server_link,) = server.connections
    assert server_link.transport is not None
    server_link.transport.pause_reading()
    assert server_link._timer is not None
    server_link._timer.cancel()
    caplog.set_level(logging.WARNING)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(link.lost, 2)
    assert asyncio.get_running_loop().time() - started < 0.6
    assert "silent" in caplog.text
