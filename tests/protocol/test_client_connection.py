"""msg_server's ClientConnection on an in-memory transport.

The db_proxy side is a fake of the internal link (``Gateway.db_request``),
not of storage: these tests are about the protocol object's behaviour.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from google.protobuf.message import Message

from common.codec import encode_frame
from common.commands import Cmd
from common.link import LinkDown
from common.pb import base_pb2, internal_pb2, login_pb2, message_pb2
from msg_server.client import ClientConnection
from msg_server.config import MsgServerConfig
from msg_server.gateway import Gateway
from tests.protocol.memory import MemoryTransport

USER = base_pb2.UserInfo(
    user_id=7,
    user_gender=0,
    user_nick_name="alice",
    avatar_url="",
    department_id=0,
    email="",
    user_real_name="",
    user_tel="",
    user_domain="",
    status=0,
)


class FakeDb:
    """Answers the gateway's db_proxy requests in-process."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, Message]] = []
        self.next_msg_id = 1
        self.password = "right"
        self.release = asyncio.Event()
        self.release.set()
        self.down = False

    async def __call__(self, key: object, command: int, message: Message) -> tuple[int, Message]:
        self.requests.append((command, message))
        await self.release.wait()
        if self.down:
            raise LinkDown("db down")
        if command == Cmd.DB_LOGIN_REQ:
            assert isinstance(message, internal_pb2.DbLoginReq)
            if message.password_md5 != self.password:
                return Cmd.DB_LOGIN_RES, internal_pb2.DbLoginRes(result_code=6, result_string="wrong")
            return Cmd.DB_LOGIN_RES, internal_pb2.DbLoginRes(result_code=0, user_info=USER)
        if command == Cmd.DB_SAVE_MSG_REQ:
            msg_id, self.next_msg_id = self.next_msg_id, self.next_msg_id + 1
            return Cmd.DB_SAVE_MSG_RES, internal_pb2.DbSaveMsgRes(
                msg_id=msg_id, create_time=1, duplicate=False
            )
        raise AssertionError(f"unexpected 0x{command:04x}")


def make(**config: Any) -> tuple[Gateway, ClientConnection, MemoryTransport, FakeDb]:
    gateway = Gateway(MsgServerConfig(**config))
    fake = FakeDb()
    gateway.db_request = fake  # type: ignore[method-assign,assignment]
    conn = ClientConnection(gateway)
    transport = MemoryTransport(conn)
    conn.connection_made(transport)
    return gateway, conn, transport, fake


def feed(conn: ClientConnection, command: int, message: Message, seq: int = 1) -> None:
    conn.data_received(encode_frame(command, message.SerializeToString(), seq))


def login_req(password: str = "right") -> login_pb2.IMLoginReq:
    return login_pb2.IMLoginReq(user_name="alice", password=password, online_status=1, client_type=1)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def logged_in(**config: Any) -> tuple[Gateway, ClientConnection, MemoryTransport, FakeDb]:
    gateway, conn, transport, fake = make(**config)
    feed(conn, Cmd.LOGIN_REQ, login_req(), seq=1)
    await settle()
    assert conn.logged_in
    transport.written.clear()
    return gateway, conn, transport, fake


async def test_heartbeat_before_login_is_echoed_with_its_seq() -> None:
    _, conn, transport, _ = make()
    conn.data_received(encode_frame(Cmd.HEARTBEAT, b"", 42))
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
        from_user_id=999, to_session_id=8, msg_id=55, create_time=0, msg_type=1, msg_data=b"\x00\xffbody"
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
        from_user_id=7, to_session_id=8, msg_id=1, create_time=0, msg_type=1, msg_data=b"x"
    )
    feed(conn, Cmd.MSG_DATA, msg)
    await settle()
    assert transport.frames() == []
    assert not transport.closed


async def test_slow_reader_is_cut_off() -> None:
    gateway, _conn, transport, _ = await logged_in(max_write_buffer=1000)
    transport.buffer_size = 5000
    push = internal_pb2.RouteDeliver(user_ids=[7], command_id=Cmd.MSG_DATA, body=b"")
    gateway.push_local(push)
    assert transport.aborted


async def test_too_many_pending_requests_pause_reading() -> None:
    _, conn, transport, fake = await logged_in(max_pending_requests=4)
    fake.release.clear()
    msg = message_pb2.IMMsgData(
        from_user_id=7, to_session_id=8, msg_id=0, create_time=0, msg_type=1, msg_data=b""
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
    other.became_logged_in(7, 0x12, 1)
    body = message_pb2.IMMsgData(
        from_user_id=7, to_session_id=8, msg_id=1, create_time=1, msg_type=1, msg_data=b"hi"
    ).SerializeToString()
    deliver = internal_pb2.RouteDeliver(
        user_ids=[7],
        command_id=Cmd.MSG_DATA,
        body=body,
        origin=internal_pb2.Origin(gateway_id="msg-1", conn_id=conn.conn_id),
    )
    gateway.push_local(deliver)
    assert transport.frames() == []
    assert [f.command_id for f, _ in other_transport.frames()] == [Cmd.MSG_DATA]


async def test_disconnect_detaches_the_session() -> None:
    gateway, _conn, transport, _ = await logged_in()
    transport.close()
    await settle()
    assert gateway.sessions == {} and gateway.logged_in == 0


async def test_unsupported_teamtalk_command_is_ignored_not_fatal() -> None:
    _, conn, transport, _ = await logged_in()
    conn.data_received(encode_frame(0x0506, b"\x08\x01", 5))  # a file-transfer request
    assert not transport.closed and transport.frames() == []
    conn.data_received(encode_frame(0x0701, b"", 6))
    assert [f.seq_num for f, _ in transport.frames()] == [6]  # still served


async def test_command_outside_teamtalks_services_closes() -> None:
    _, conn, transport, _ = await logged_in()
    conn.data_received(encode_frame(0x0822, b"", 5))  # internal, never from a client
    assert transport.aborted
