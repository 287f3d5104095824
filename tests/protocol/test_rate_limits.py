"""The gateway's rate limits and admission hooks, on memory transports."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2, login_pb2, message_pb2
from msg_server.client import ClientConnection
from tests.protocol.fakes import feed, logged_in, login_req, make, settle
from tests.protocol.memory import MemoryTransport


def limited(kind: str) -> float:
    return REGISTRY.get_sample_value("imcluster_gateway_rate_limited_total", {"kind": kind}) or 0.0


def refused_connections(reason: str) -> float:
    return REGISTRY.get_sample_value("imcluster_gateway_connections_refused_total", {"reason": reason}) or 0.0


def msg(n: int) -> message_pb2.IMMsgData:
    return message_pb2.IMMsgData(
        from_user_id=0, to_session_id=8, msg_id=n, create_time=1, msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=b"hi",
    )  # fmt: skip


async def test_messages_past_the_burst_get_no_ack_and_are_counted() -> None:
    gateway, conn, transport, _ = await logged_in(msg_burst=5, msg_rate=20)
    gateway.limiter.clock = lambda: 0.0  # no token comes back
    before = limited("messages")
    for seq in range(1, 9):
        feed(conn, Cmd.MSG_DATA, msg(seq), seq=seq)
    await settle()
    assert limited("messages") - before == 1  # the rest waits, held 1/msg_rate each time
    async with asyncio.timeout(2):
        while limited("messages") - before < 3:
            await asyncio.sleep(0.01)
    await settle()
    acks = [f for f, _ in transport.frames() if f.command_id == Cmd.MSG_DATA_ACK]
    assert len(acks) == 5 and limited("messages") - before == 3
    assert not conn.closing  # refused, not closed: the client resends later


async def test_requests_past_the_burst_get_their_refusal_reply_and_wait_meanwhile() -> None:
    gateway, conn, transport, fake = await logged_in(request_burst=3, request_rate=20)
    gateway.limiter.clock = lambda: 0.0  # no token comes back: every later request is refused
    before = limited("requests")
    for seq in range(1, 6):
        feed(conn, Cmd.USERS_INFO_REQ, buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[8]), seq=seq)
    for seq in range(10, 20):
        feed(conn, Cmd.HEARTBEAT, b"", seq=seq)
    await settle()
    # The login took a token, 1 and 2 the others; 3 is refused, and the rest waits in the
    # decoder (heartbeats too: in order) while the connection is held, 1/request_rate each time.
    assert sorted(f.seq_num for f, _ in transport.frames()) == [1, 2, 3]
    assert not transport.reading
    async with asyncio.timeout(2):
        while len(transport.frames()) < 15:
            await asyncio.sleep(0.01)
    frames = transport.frames()
    infos = [f.seq_num for f, _ in frames if f.command_id == Cmd.USERS_INFO_RES]
    assert sorted(infos) == [1, 2, 3, 4, 5]  # every request answered...
    assert len(fake.requests) == 2  # ...but only 2 reached db_proxy
    assert sum(1 for f, _ in frames if f.command_id == Cmd.HEARTBEAT) == 10  # heartbeats never refused
    assert limited("requests") - before == 3
    assert transport.reading


async def test_a_user_s_profile_changes_are_limited_across_its_connections() -> None:
    gateway, conn, transport, _ = await logged_in(profile_burst=2, profile_rate=20)
    gateway.limiter.clock = lambda: 0.0
    before = limited("profile")
    for seq in range(1, 5):
        feed(conn, Cmd.CHANGE_SIGN_INFO_REQ, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info="x"), seq=seq)
    async with asyncio.timeout(2):
        while len([f for f, _ in transport.frames() if f.command_id == Cmd.CHANGE_SIGN_INFO_RES]) < 4:
            await asyncio.sleep(0.01)
    replies = [r for f, r in transport.frames() if f.command_id == Cmd.CHANGE_SIGN_INFO_RES]
    assert len(replies) == 4 and [r.result_code != 0 for r in replies].count(True) == 2
    assert limited("profile") - before == 2
    # The buckets go with the connection.
    conn.abort()
    await settle()
    assert gateway.limiter.limits.sizes() == (0, 0)


async def test_connections_past_the_per_source_pre_login_cap_are_closed_on_accept() -> None:
    gateway, first, _, _ = make(max_unauthenticated_per_source=2)
    before = refused_connections("unauthenticated_per_source")
    second = ClientConnection(gateway)
    second.connection_made(MemoryTransport(second))
    third = ClientConnection(gateway)
    third_transport = MemoryTransport(third)
    third.connection_made(third_transport)
    other = ClientConnection(gateway)
    other.connection_made(MemoryTransport(other, peer=("127.0.0.2", 1)))
    assert third_transport.aborted and not other.closing and not first.closing
    assert refused_connections("unauthenticated_per_source") - before == 1
    await settle()
    assert gateway.admitter.admission.connections == 3


async def test_logins_past_an_address_s_burst_are_refused_late_and_never_reach_db_proxy() -> None:
    """One address reconnecting for every guess: past its login burst each try is answered (a
    refusal, then the close TeamTalk's clients expect) only after limits.HOLD, so its capped
    connections before login bound its tries a second."""
    from msg_server import limits

    config = {"login_burst_per_source": 2, "login_rate_per_source": 0.001}
    gateway, first, _, fake = make(**config)
    conns = [first]
    for _ in range(2):
        conn = ClientConnection(gateway)
        conn.connection_made(MemoryTransport(conn))
        conns.append(conn)
    before = limited("logins")
    started = asyncio.get_running_loop().time()
    for conn in conns:
        feed(conn, Cmd.LOGIN_REQ, login_req(), seq=1)
    await settle()
    assert len(fake.requests) == 2 and limited("logins") - before == 1  # the third never reached it
    third = conns[2].transport
    assert isinstance(third, MemoryTransport) and not third.frames()  # not answered yet
    async with asyncio.timeout(limits.HOLD + 2):
        while not third.closed:
            await asyncio.sleep(0.01)
    assert asyncio.get_running_loop().time() - started >= limits.HOLD * 0.9
    [(frame, body)] = third.frames()
    assert frame.command_id == Cmd.LOGIN_RES
    assert isinstance(body, login_pb2.IMLoginRes) and body.result_code != base_pb2.REFUSE_REASON_NONE
