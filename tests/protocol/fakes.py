"""A gateway whose links are fakes, and a ClientConnection on a memory transport.

The fakes stand in for the internal links (``Gateway.db_call`` and
``Gateway.route_call``), not for storage: these tests are about the
protocol object and the handlers' behaviour.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common.codec import encode_frame
from common.commands import Cmd, Rpcs
from common.errors import ImError
from common.link import LinkDown
from common.pb import base_pb2, internal_pb2, login_pb2
from common.rpc import ReqT, ResT, Rpc
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


def filled(cls: type[ResT]) -> ResT:
    """A message of ``cls`` with every required field at its default: well-formed, empty."""
    msg = cls()
    _fill(msg)
    return msg


def _fill(msg: Message) -> None:
    for field in msg.DESCRIPTOR.fields:
        if not field.is_required:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            child = getattr(msg, field.name)
            child.SetInParent()
            _fill(child)
        else:
            setattr(msg, field.name, field.default_value)


class FakeDb:
    """Answers the gateway's db_proxy calls in-process.

    Logins check the password; stored messages get increasing ids; any other
    call gets ``answers[command]`` (a reply, or an exception to raise) or an
    empty well-formed reply.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[int, Message]] = []
        self.answers: dict[int, Message | Exception] = {}
        self.next_msg_id = 1
        self.password = "right"
        self.release = asyncio.Event()
        self.release.set()
        self.down = False

    async def __call__(self, key: object, rpc: Rpc[ReqT, ResT], req: ReqT) -> ResT:
        self.requests.append((rpc.command, req))
        await self.release.wait()
        if self.down:
            raise LinkDown("db down")
        answer = self.answers.get(rpc.command)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            answer = self._answer(req)
        if answer is None:
            return filled(rpc.reply)
        assert type(answer) is rpc.reply, f"{type(answer).__name__} cannot answer 0x{rpc.command:04x}"
        res = rpc.reply()
        res.ParseFromString(answer.SerializeToString())
        return res

    def _answer(self, req: Message) -> Message | None:
        if isinstance(req, internal_pb2.DbLoginReq):
            if req.password_md5 != self.password:
                return internal_pb2.DbLoginRes(
                    result_code=base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED, result_string="wrong"
                )
            return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, user_info=USER)
        if isinstance(req, internal_pb2.DbSaveMsgReq):
            msg_id, self.next_msg_id = self.next_msg_id, self.next_msg_id + 1
            return internal_pb2.DbSaveMsgRes(msg_id=msg_id, create_time=1, duplicate=False)
        return None


class FakeRoute:
    """The route servers: down (the gateway answers presence itself) unless told otherwise."""

    def __init__(self) -> None:
        self.error: ImError | None = LinkDown("no route_server is reachable")

    async def __call__(self, rpc: Rpc[ReqT, ResT], req: ReqT) -> ResT:
        if self.error is not None:
            raise self.error
        return filled(rpc.reply)


def make(**config: Any) -> tuple[Gateway, ClientConnection, MemoryTransport, FakeDb]:
    gateway = Gateway(MsgServerConfig(**config))
    fake = FakeDb()
    gateway.db_call = fake  # type: ignore[method-assign,assignment]
    # Messages are saved through the batcher (msg_server/save_batch.py): as one DB_SAVE_MSG each here.
    gateway.db.save = lambda key, req, config: asyncio.ensure_future(fake(key, Rpcs.DB_SAVE_MSG, req))  # type: ignore[method-assign]
    gateway.route_call = FakeRoute()  # type: ignore[method-assign,assignment]
    conn = ClientConnection(gateway)
    transport = MemoryTransport(conn)
    conn.connection_made(transport)
    return gateway, conn, transport, fake


def feed(conn: ClientConnection, command: int, message: Message | bytes, seq: int = 1) -> None:
    body = message if isinstance(message, bytes) else message.SerializeToString()
    conn.data_received(encode_frame(command, body, seq))


def login_req(password: str = "right") -> login_pb2.IMLoginReq:
    return login_pb2.IMLoginReq(
        user_name="alice",
        password=password,
        online_status=base_pb2.USER_STATUS_ONLINE,
        client_type=base_pb2.CLIENT_TYPE_WINDOWS,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def logged_in(**config: Any) -> tuple[Gateway, ClientConnection, MemoryTransport, FakeDb]:
    gateway, conn, transport, fake = make(**config)
    feed(conn, Cmd.LOGIN_REQ, login_req(), seq=1)
    await settle()
    assert conn.logged_in
    transport.written.clear()
    fake.requests.clear()
    return gateway, conn, transport, fake
