"""A TeamTalk-protocol file-server client for tests: login, serve pulls, pull a file.

It speaks what a TeamTalk client speaks to its file server (0x0501-0x0505),
with the task id the gateway handed it (its ticket), and keeps every frame
it receives with its seq_num, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from typing import Any

from google.protobuf.message import Message

from common.codec import FrameDecoder, encode_frame
from common.commands import Cmd, decode_body
from common.pb import base_pb2, file_pb2

CHUNK = 32 * 1024  # what TeamTalk clients ask for


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileClient:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.task_id = ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.frames: list[tuple[int, int, Any]] = []  # (command, seq, message), not yet taken
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seq = itertools.cycle(range(1, 0x10000))
        self.closed = asyncio.Event()

    async def connect(self, addresses: list[base_pb2.IpAddr]) -> None:
        address = addresses[0]
        self.reader, self.writer = await asyncio.open_connection(address.ip, address.port)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.reader is not None
        decoder = FrameDecoder(max_frame_size=1 << 20)
        try:
            while data := await self.reader.read(65536):
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    self.frames.append(
                        (frame.command_id, frame.seq_num, decode_body(frame.command_id, frame.body))
                    )
                    self._arrived.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self._arrived.set()

    def send(self, command: int, message: Message, seq: int | None = None) -> int:
        assert self.writer is not None
        seq = next(self._seq) if seq is None else seq
        self.writer.write(encode_frame(command, message.SerializeToString(), seq))
        return seq

    async def next(self, *commands: int, timeout: float = 10.0) -> tuple[int, int, Any]:
        """The oldest frame of one of ``commands``; ConnectionError if the server closes first."""
        async with asyncio.timeout(timeout):
            while True:
                for i, frame in enumerate(self.frames):
                    if frame[0] in commands:
                        del self.frames[i]
                        return frame
                if self.closed.is_set():
                    raise ConnectionError(f"closed before 0x{commands[0]:04x}; got {self.frames}")
                self._arrived.clear()
                await self._arrived.wait()

    async def login(self, task_id: str, role: base_pb2.ClientFileRole.ValueType) -> file_pb2.IMFileLoginRsp:
        self.task_id = task_id
        self.send(
            Cmd.FILE_LOGIN_REQ, file_pb2.IMFileLoginReq(user_id=self.user_id, task_id=task_id, file_role=role)
        )
        _, _, res = await self.next(Cmd.FILE_LOGIN_RES)
        assert isinstance(res, file_pb2.IMFileLoginRsp)
        return res

    async def serve(self, data: bytes) -> file_pb2.IMFileState:
        """Answer pulls from ``data`` until a state (DONE, CANCEL...) arrives; that state."""
        while True:
            command, seq, msg = await self.next(Cmd.FILE_PULL_DATA_REQ, Cmd.FILE_STATE)
            if command == Cmd.FILE_STATE:
                assert isinstance(msg, file_pb2.IMFileState)
                return msg
            chunk = data[msg.offset : msg.offset + msg.data_size]
            rsp = file_pb2.IMFilePullDataRsp(
                result_code=0, task_id=msg.task_id, user_id=self.user_id, offset=msg.offset, file_data=chunk
            )
            self.send(Cmd.FILE_PULL_DATA_RES, rsp, seq)

    async def pull(self, size: int, mode: base_pb2.TransferFileType.ValueType, chunk: int = CHUNK) -> bytes:
        """The whole file, one chunk after another, from offset 0."""
        out = bytearray()
        while len(out) < size:
            req = file_pb2.IMFilePullDataReq(
                task_id=self.task_id,
                user_id=self.user_id,
                trans_mode=mode,
                offset=len(out),
                data_size=min(chunk, size - len(out)),
            )
            seq = self.send(Cmd.FILE_PULL_DATA_REQ, req)
            _, got_seq, rsp = await self.next(Cmd.FILE_PULL_DATA_RES)
            assert got_seq == seq, (got_seq, seq)
            assert rsp.result_code == 0 and rsp.offset == req.offset, rsp
            assert rsp.file_data, "an empty chunk"
            out += rsp.file_data
        return bytes(out)

    def state(self, state: base_pb2.ClientFileState.ValueType) -> None:
        self.send(
            Cmd.FILE_STATE, file_pb2.IMFileState(state=state, task_id=self.task_id, user_id=self.user_id)
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
