"""The TeamTalk file-transfer client of benchmarks/files.py: one asyncio.Protocol per connection.

It speaks what a TeamTalk client speaks to its file server (0x0501-0x0505): login with
the ticket the gateway handed it, answer pulls from the file's bytes (a sender), pull a
whole file 32 KiB at a time with one pull outstanding (a receiver). The same class talks
to file_server and to the benchmark's relay, so its own cost is on both sides of the ratio.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import cast

from common.codec import FrameDecoder, encode_frame
from common.commands import Cmd
from common.pb import base_pb2, file_pb2

MiB = 1024 * 1024
KiB = 1024
CHUNK = 32 * KiB  # what TeamTalk clients pull
FRAME_TIMEOUT = 30.0  # one chunk, one login, one state: far beyond any healthy wait


class WrongBytes(Exception):
    """A transfer delivered other bytes than were sent: the benchmark's figures are void."""


class Peer(asyncio.Protocol):
    """One TeamTalk file connection (to file_server or to the relay): frames in, kept in order.

    A sender sets ``serve``: pulls are answered from it in ``data_received``, as a
    TeamTalk client's reactor does; every other frame is queued for ``next``.
    """

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.ticket = ""
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_frame_size=1 << 20)
        self.frames: deque[tuple[int, int, bytes]] = deque()
        self.arrived = asyncio.Event()
        self.closed = False
        self.serve: bytes | None = None
        self.served = 0
        self._seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        while (frame := self.decoder.next_frame()) is not None:
            if frame.command_id == Cmd.FILE_PULL_DATA_REQ and self.serve is not None:
                self._answer(frame.seq_num, frame.body)
            else:
                self.frames.append((frame.command_id, frame.seq_num, frame.body))
                self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.arrived.set()

    def _answer(self, seq: int, body: bytes) -> None:
        assert self.serve is not None
        req = file_pb2.IMFilePullDataReq()
        req.ParseFromString(body)
        chunk = self.serve[req.offset : req.offset + req.data_size]
        self.served += len(chunk)
        rsp = file_pb2.IMFilePullDataRsp(
            result_code=0, task_id=self.ticket, user_id=self.user_id, offset=req.offset, file_data=chunk
        )
        self.send(Cmd.FILE_PULL_DATA_RES, rsp.SerializeToString(), seq)

    def send(self, command: int, body: bytes, seq: int = 0) -> int:
        if not seq:
            self._seq = self._seq % 0xFFFF + 1
            seq = self._seq
        assert self.transport is not None
        self.transport.write(encode_frame(command, body, seq))
        return seq

    async def next(self, timeout: float = FRAME_TIMEOUT) -> tuple[int, int, bytes]:
        async with asyncio.timeout(timeout):
            while not self.frames:
                if self.closed:
                    raise ConnectionError("the file connection closed")
                self.arrived.clear()
                await self.arrived.wait()
        return self.frames.popleft()

    async def expect(self, command: int) -> bytes:
        got, _, body = await self.next()
        if got != command:
            raise RuntimeError(f"expected 0x{command:04x}, got 0x{got:04x}")
        return body

    async def login(self, ticket: str, role: base_pb2.ClientFileRole.ValueType) -> None:
        self.ticket = ticket
        req = file_pb2.IMFileLoginReq(user_id=self.user_id, task_id=ticket, file_role=role)
        self.send(Cmd.FILE_LOGIN_REQ, req.SerializeToString())
        rsp = file_pb2.IMFileLoginRsp()
        rsp.ParseFromString(await self.expect(Cmd.FILE_LOGIN_RES))
        if rsp.result_code != 0:
            raise RuntimeError(f"file login refused: {rsp.result_code}")

    async def state(self) -> int:
        msg = file_pb2.IMFileState()
        msg.ParseFromString(await self.expect(Cmd.FILE_STATE))
        return int(msg.state)

    def tell(self, state: base_pb2.ClientFileState.ValueType) -> None:
        msg = file_pb2.IMFileState(state=state, task_id=self.ticket, user_id=self.user_id)
        self.send(Cmd.FILE_STATE, msg.SerializeToString())

    async def pull(self, into: bytearray, mode: base_pb2.TransferFileType.ValueType) -> float:
        """The whole file into ``into`` (its size), one 32 KiB pull outstanding; seconds from the
        first pull to the last byte. The buffer is allocated once per benchmark and reused, so no
        transfer pays for fresh memory (page faults) that another does not."""
        size = len(into)
        offset = 0
        started = time.perf_counter()
        rsp = file_pb2.IMFilePullDataRsp()
        while offset < size:
            want = min(CHUNK, size - offset)
            req = file_pb2.IMFilePullDataReq(
                task_id=self.ticket, user_id=self.user_id, trans_mode=mode, offset=offset, data_size=want
            )
            seq = self.send(Cmd.FILE_PULL_DATA_REQ, req.SerializeToString())
            command, got_seq, body = await self.next()
            if command != Cmd.FILE_PULL_DATA_RES or got_seq != seq:
                raise RuntimeError(f"pull at {offset}: got 0x{command:04x} seq {got_seq}, wanted seq {seq}")
            rsp.ParseFromString(body)
            if rsp.result_code != 0 or rsp.offset != offset or len(rsp.file_data) != want:
                raise WrongBytes(
                    f"pull at {offset}: result {rsp.result_code}, offset {rsp.offset}, "
                    f"{len(rsp.file_data)} bytes for {want}"
                )
            into[offset : offset + want] = rsp.file_data
            offset += want
        return time.perf_counter() - started

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def verify(what: str, received: bytes | bytearray, expected: str) -> None:
    digest = hashlib.sha256(received)
    if digest.hexdigest() != expected:
        raise WrongBytes(
            f"{what}: SHA-256 {digest.hexdigest()[:16]}... is not the sent file's {expected[:16]}..."
        )


async def open_peer(user_id: int, host: str, port: int, hello: bytes = b"") -> Peer:
    peer = Peer(user_id)
    await asyncio.get_running_loop().create_connection(lambda: peer, host, port)
    if hello:
        assert peer.transport is not None
        peer.transport.write(hello)
    return peer
