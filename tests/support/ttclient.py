"""A small TeamTalk-protocol client for tests and benchmarks.

It speaks only the public wire protocol (frames + IM.* messages), like a
desktop client would: discovery over HTTP, login, messages, heartbeats.
Replies are matched by seq_num; everything else the server sends (pushes,
kicks) lands in ``pushes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import urllib.request
from typing import Any

from google.protobuf.message import Message

from common.codec import FrameDecoder, encode_frame
from common.commands import Cmd, decode_body
from common.pb import base_pb2, login_pb2, message_pb2
from db_proxy.passwords import md5_hex


def discover(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET the login server's /msg_server JSON (blocking; call in a thread in async code)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def with_raw_field(message: Message, field_name: str, raw: bytes) -> bytes:
    """``message``'s body with a length-delimited field set to ``raw`` bytes.

    For sending what a well-behaved client cannot build, such as a string
    field holding invalid UTF-8 (protobuf refuses to set one).
    """
    number = message.DESCRIPTOR.fields_by_name[field_name].number
    message.ClearField(field_name)
    return message.SerializePartialToString() + length_delimited(number, raw)


def length_delimited(number: int, raw: bytes) -> bytes:
    """One encoded length-delimited field (string, bytes, message)."""
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class ServerClosed(Exception):
    pass


class TTClient:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pushes: list[tuple[int, Message]] = []
        self._arrived = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[tuple[int, Message]]] = {}
        self._seq = itertools.cycle(range(1, 0x10000))
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.user_id = 0

    async def connect(self, host: str, port: int, source: str | None = None) -> None:
        """``source``: the local address to connect from (127.0.0.2 plays another host)."""
        local = (source, 0) if source is not None else None
        self.reader, self.writer = await asyncio.open_connection(host, port, local_addr=local)
        self._reader_task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.reader is not None
        decoder = FrameDecoder(max_frame_size=16 << 20)
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    message = decode_body(frame.command_id, frame.body)
                    waiter = self._waiting.pop(frame.seq_num, None) if frame.seq_num else None
                    if waiter is not None and not waiter.done():
                        waiter.set_result((frame.command_id, message))
                    else:
                        self.pushes.append((frame.command_id, message))
                        self._arrived.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ServerClosed("server closed the connection"))

    def send(self, command_id: int, message: Message | bytes, seq: int = 0) -> None:
        """Send a message, or a body already encoded (see :func:`with_raw_field`)."""
        assert self.writer is not None
        body = message if isinstance(message, bytes) else message.SerializeToString()
        self.writer.write(encode_frame(command_id, body, seq))

    def send_raw(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def request(
        self, command_id: int, message: Message | bytes, timeout: float = 10.0
    ) -> tuple[int, Message]:
        seq = next(self._seq)
        future: asyncio.Future[tuple[int, Message]] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = future
        self.send(command_id, message, seq)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(seq, None)

    async def login(
        self,
        name: str,
        password: str,
        client_type: base_pb2.ClientType.ValueType = base_pb2.CLIENT_TYPE_WINDOWS,
    ) -> login_pb2.IMLoginRes:
        req = login_pb2.IMLoginReq(
            user_name=name,
            password=md5_hex(password),
            online_status=base_pb2.USER_STATUS_ONLINE,
            client_type=client_type,
            client_version="imcluster-tests",
        )
        command, res = await self.request(Cmd.LOGIN_REQ, req)
        assert command == Cmd.LOGIN_RES and isinstance(res, login_pb2.IMLoginRes)
        if res.result_code == 0:
            self.user_id = res.user_info.user_id
        return res

    async def send_text(
        self, to_user_id: int, data: bytes, client_msg_id: int = 0, timeout: float = 10.0
    ) -> message_pb2.IMMsgDataAck:
        return await self._send_data(to_user_id, data, base_pb2.MSG_TYPE_SINGLE_TEXT, client_msg_id, timeout)

    async def send_group_text(
        self, group_id: int, data: bytes, client_msg_id: int = 0, timeout: float = 10.0
    ) -> message_pb2.IMMsgDataAck:
        return await self._send_data(group_id, data, base_pb2.MSG_TYPE_GROUP_TEXT, client_msg_id, timeout)

    async def _send_data(
        self, to: int, data: bytes, msg_type: base_pb2.MsgType.ValueType, client_msg_id: int, timeout: float
    ) -> message_pb2.IMMsgDataAck:
        msg = message_pb2.IMMsgData(
            from_user_id=self.user_id,
            to_session_id=to,
            msg_id=client_msg_id,
            create_time=0,
            msg_type=msg_type,
            msg_data=data,
        )
        command, ack = await self.request(Cmd.MSG_DATA, msg, timeout)
        assert command == Cmd.MSG_DATA_ACK and isinstance(ack, message_pb2.IMMsgDataAck)
        return ack

    async def call(self, command_id: int, message: Message | bytes, timeout: float = 10.0) -> Any:
        """A request whose reply is the next command id (TeamTalk's pairs: 0x0201 -> 0x0202)."""
        command, reply = await self.request(command_id, message, timeout)
        assert command == command_id + 1, f"0x{command_id:04x} answered with 0x{command:04x}"
        return reply

    def pushed(self, command_id: int) -> list[Any]:
        """Pushes of that command received so far (not consumed)."""
        return [m for c, m in self.pushes if c == command_id]

    async def next_push(self, command_id: int, timeout: float = 10.0) -> Any:
        """The oldest unclaimed push of that command; other pushes stay queued."""
        async with asyncio.timeout(timeout):
            while True:
                for i, (command, message) in enumerate(self.pushes):
                    if command == command_id:
                        del self.pushes[i]
                        return message
                self._arrived.clear()
                await self._arrived.wait()

    async def unread(self) -> message_pb2.IMUnreadMsgCntRsp:
        _, res = await self.request(Cmd.UNREAD_CNT_REQ, message_pb2.IMUnreadMsgCntReq(user_id=0))
        assert isinstance(res, message_pb2.IMUnreadMsgCntRsp)
        return res

    async def msg_list(self, peer: int, begin: int = 0, count: int = 20) -> message_pb2.IMGetMsgListRsp:
        req = message_pb2.IMGetMsgListReq(
            user_id=0,
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            session_id=peer,
            msg_id_begin=begin,
            msg_cnt=count,
        )
        _, res = await self.request(Cmd.MSG_LIST_REQ, req)
        assert isinstance(res, message_pb2.IMGetMsgListRsp)
        return res

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
