"""A lean TeamTalk client for load: one asyncio.Protocol per connection.

Unlike tests/support/ttclient.py there is no reader task, no StreamReader and
no decoding of frames nobody asked for: replies are matched by seq_num to a
callback, everything else goes to ``on_push`` as raw (command, body). The
same class drives the cluster and the echo baseline, so any per-message cost
it has appears on both sides of the ratio.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

from common.codec import FrameDecoder, encode_frame
from common.commands import Cmd
from common.pb import base_pb2, login_pb2

Reply = Callable[[int, bytes], None]  # (command id, body); command 0 = the connection went away

CLOSED = 0


class ConnectionGone(Exception):
    pass


class BenchConn(asyncio.Protocol):
    __slots__ = ("_seq", "closed", "decoder", "on_push", "transport", "user_id", "waiting")

    def __init__(self, on_push: Reply | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_frame_size=1 << 20)
        self.waiting: dict[int, Reply] = {}
        self.on_push = on_push
        self.closed = False
        self.user_id = 0
        self._seq = 0

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.feed(data)
        waiting = self.waiting
        while (frame := decoder.next_frame()) is not None:
            reply = waiting.pop(frame.seq_num, None) if frame.seq_num else None
            if reply is not None:
                reply(frame.command_id, frame.body)
            elif self.on_push is not None:
                self.on_push(frame.command_id, frame.body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiting, self.waiting = self.waiting, {}
        for reply in waiting.values():
            reply(CLOSED, b"")

    # -- sending ------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1
        return self._seq

    def request(self, command_id: int, body: bytes, reply: Reply) -> int:
        """Send a request; ``reply`` is called with the answer (or CLOSED). Returns its seq."""
        if self.closed or self.transport is None:
            reply(CLOSED, b"")
            return 0
        seq = self.next_seq()
        self.waiting[seq] = reply
        self.transport.write(encode_frame(command_id, body, seq))
        return seq

    def send(self, command_id: int, body: bytes, seq: int = 0) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(encode_frame(command_id, body, seq))

    async def call(self, command_id: int, body: bytes, timeout: float) -> tuple[int, bytes]:
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

        def done(command: int, reply: bytes) -> None:
            if not future.done():
                future.set_result((command, reply))

        seq = self.request(command_id, body, done)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiting.pop(seq, None)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


def login_body(
    name: str, password_md5: str, client_type: base_pb2.ClientType.ValueType = base_pb2.CLIENT_TYPE_WINDOWS
) -> bytes:
    return login_pb2.IMLoginReq(
        user_name=name,
        password=password_md5,
        online_status=base_pb2.USER_STATUS_ONLINE,
        client_type=client_type,
        client_version="imcluster-bench",
    ).SerializeToString()


async def connect_and_login(
    host: str, port: int, name: str, password_md5: str, timeout: float, on_push: Reply | None = None
) -> BenchConn:
    """A logged-in connection, or an exception (ConnectionGone, OSError, TimeoutError)."""
    loop = asyncio.get_running_loop()
    conn = BenchConn(on_push)
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: conn, host, port)
            command, body = await conn.call(Cmd.LOGIN_REQ, login_body(name, password_md5), timeout)
    except BaseException:
        conn.close()
        raise
    if command != Cmd.LOGIN_RES:
        conn.close()
        raise ConnectionGone(f"login of {name}: connection closed (command 0x{command:04x})")
    res = login_pb2.IMLoginRes()
    res.ParseFromString(body)
    if res.result_code != 0:
        conn.close()
        raise ConnectionGone(f"login of {name} refused: {res.result_code} {res.result_string}")
    conn.user_id = res.user_info.user_id
    return conn


async def http_get_json(host: str, port: int, path: str, timeout: float) -> Any:
    """One HTTP/1.1 GET on a fresh connection (as a desktop client does), JSON body."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            raw = await reader.read(-1)
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"?"
    if status != b"200":
        raise ConnectionGone(f"GET {path}: HTTP {status.decode(errors='replace')}")
    return json.loads(body)
