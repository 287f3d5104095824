"""msg_server's ClientConnection on an in-memory transport (fakes in tests.protocol.fakes)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from common.codec import encode_frame
from common.commands import Cmd
from common.connection import CHUNK, WRITE_HIGH
from common.pb import base_pb2, internal_pb2, message_pb2
from msg_server.client import ClientConnection
from tests.protocol.fakes import feed, logged_in, login_req, make, settle
from tests.protocol.memory import MemoryTransport

TEXT = base_pb2.MSG_TYPE_SINGLE_TEXT


async def test_heartbeat_before_login_is_echoed_with_its_seq() -> None:
    _, conn, transport, _ = make()
    conn.data_received(encode_frame(Cmd.HEARTBEAT, b"", 42))
    await settle()  # written at the end of the loop turn (common.connection coalesces)
    [(frame, _)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.HEARTBEAT, 42)
    assert not transport.closed


@pytest.mark.parametrize("command", [Cmd.MSG_DATA, Cmd.UNREAD_CNT_REQ, Cmd.LOGOUT_REQ])
async def test_command_before_login_closes_the_connection(command: int) -> None:
    _, conn, transport, fake = make()
    conn.data_received(encode_frame(command, b"", 1))
    assert transport.aborted
    assert transport.frames() == []
    assert fake.requests == []


async def test_oversized_frame_closes_before_the_body_arrives() -> None:
    _, conn, transport, _ = make(max_frame_size=1024)
    conn.data_received(struct.pack(">IHHHHHH", 1 << 20, 1, 0, 3, 0x0301, 1, 0))
    assert transport.aborted


async def test_malformed_body_closes_the_connection() -> None:
    _, conn, transport, _ = make()
    conn.data_received(encode_frame(Cmd.LOGIN_REQ, b"\xff\xff\xff", 1))
    assert transport.aborted


async def test_login_success_replies_with_user_info_and_seq() -> None:
    gateway, conn, transport, _fake = make()
    feed(conn, Cmd.LOGIN_REQ, login_req(), seq=9)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.LOGIN_RES, 9)
    assert res.result_code == 0 and res.user_info.user_id == 7
    assert gateway.sessions[7] == [conn]
    assert not transport.closed


async def test_failed_login_gets_code_6_and_is_closed() -> None:
    gateway, conn, transport, _ = make()
    feed(conn, Cmd.LOGIN_REQ, login_req("wrong"))
    await settle()
    [(_, res)] = transport.frames()
    assert res.result_code == base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED
    assert transport.closed and not conn.logged_in
    assert gateway.sessions == {}


async def test_login_with_db_down_is_refused_not_crashed() -> None:
    _, conn, transport, fake = make()
    fake.down = True
    feed(conn, Cmd.LOGIN_REQ, login_req())
    await settle()
    [(_, res)] = transport.frames()
    assert res.result_code == base_pb2.REFUSE_REASON_NO_DB_SERVER
    assert transport.closed


async def test_second_login_while_first_is_pending_closes() -> None:
    _, conn, transport, fake = make()
    fake.release.clear()
    feed(conn, Cmd.LOGIN_REQ, login_req())
    await settle()
    feed(conn, Cmd.LOGIN_REQ, login_req(), seq=2)
    assert transport.aborted


async def test_message_is_acked_with_the_stored_id_and_sender_overwritten() -> None:
    _, conn, transport, fake = await logged_in()
    msg = message_pb2.IMMsgData(
        from_user_id=999, to_session_id=8, msg_id=55, create_time=0, msg_type=TEXT, msg_data=b"\x00\xffbody"
    )
    feed(conn, Cmd.MSG_DATA, msg, seq=3)
    await settle()
    command, sent = fake.requests[-1]
    assert command == Cmd.DB_SAVE_MSG_REQ and isinstance(sent, internal_pb2.DbSaveMsgReq)
    assert sent.msg.from_user_id == 7  # not the 999 the client claimed
    assert sent.msg.msg_id == 55 and sent.msg.msg_data == b"\x00\xffbody"
    [(frame, ack)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.MSG_DATA_ACK, 3)
    assert (ack.user_id, ack.session_id, ack.msg_id, ack.session_type) == (7, 8, 1, 1)


async def test_message_not_stored_is_not_acked() -> None:
    _, conn, transport, fake = await logged_in()
    fake.down = True
    msg = message_pb2.IMMsgData(
        from_user_id=7, to_session_id=8, msg_id=1, create_time=0, msg_type=TEXT, msg_data=b"x"
    )
    feed(conn, Cmd.MSG_DATA, msg)
    await settle()
    assert transport.frames() == []
    assert not transport.closed


async def test_slow_reader_is_cut_off() -> None:
    gateway, _conn, transport, _ = await logged_in(max_write_buffer=100_000)
    transport.stuck = True
    push = internal_pb2.RouteDeliver(user_ids=[7], command_id=Cmd.MSG_DATA, body=b"x" * 10_000)
    for _ in range(100):  # the transport's 256 KiB, then the 100 KB of max_write_buffer
        gateway.push_local(push)
        if transport.aborted:
            break
    assert transport.aborted
    assert len(transport.written) <= WRITE_HIGH + CHUNK  # the rest was held, then dropped


async def test_too_many_pending_requests_pause_reading() -> None:
    _, conn, transport, fake = await logged_in(max_pending_requests=4)
    fake.release.clear()
    msg = message_pb2.IMMsgData(
        from_user_id=7, to_session_id=8, msg_id=0, create_time=0, msg_type=TEXT, msg_data=b""
    )
    for seq in range(4):
        feed(conn, Cmd.MSG_DATA, msg, seq=seq + 1)
    assert not transport.reading
    fake.release.set()
    await settle()
    assert transport.reading
    assert len(transport.frames()) == 4


async def test_login_timeout_closes_an_idle_connection() -> None:
    _, _conn, transport, _ = make(login_timeout=0.05)
    await asyncio.sleep(0.15)
    assert transport.aborted


async def test_push_skips_the_origin_connection() -> None:
    gateway, conn, transport, _ = await logged_in()
    other = ClientConnection(gateway)
    other_transport = MemoryTransport(other)
    other.connection_made(other_transport)
    other.became_logged_in(7, base_pb2.CLIENT_TYPE_ANDROID, base_pb2.USER_STATUS_ONLINE)
    body = message_pb2.IMMsgData(
        from_user_id=7, to_session_id=8, msg_id=1, create_time=1, msg_type=TEXT, msg_data=b"hi"
    ).SerializeToString()
    deliver = internal_pb2.RouteDeliver(
        user_ids=[7],
        command_id=Cmd.MSG_DATA,
        body=body,
        origin=internal_pb2.Origin(gateway_id="msg-1", conn_id=conn.conn_id),
    )
    gateway.push_local(deliver)
    await settle()
    assert transport.frames() == []
    assert [f.command_id for f, _ in other_transport.frames()] == [Cmd.MSG_DATA]


async def test_disconnect_detaches_the_session() -> None:
    gateway, _conn, transport, _ = await logged_in()
    transport.close()
    await settle()
    assert gateway.sessions == {} and gateway.logged_in == 0


async def test_unsupported_teamtalk_command_is_ignored_not_fatal() -> None:
    _, conn, transport, _ = await logged_in()
    conn.data_received(encode_frame(0x0501, b"\x08\x01", 5))  # a file-server login, sent to the gateway
    assert not transport.closed and transport.frames() == []
    conn.data_received(encode_frame(0x0701, b"", 6))
    await settle()
    assert [f.seq_num for f, _ in transport.frames()] == [6]  # still served


async def test_command_outside_teamtalks_services_closes() -> None:
    _, conn, transport, _ = await logged_in()
    conn.data_received(encode_frame(0x0822, b"", 5))  # internal, never from a client
    assert transport.aborted
