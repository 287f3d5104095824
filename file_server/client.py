"""One client connection to the file server: a thin adapter.

Bytes go through the codec (frames up to max_chunk_size + 1 KiB, refused at
the header); frames are queued and handled in order by one task per
connection, which feeds the sans-IO :class:`~file_server.tasks.Tasks` and
carries out the actions it returns (store reads and writes are awaited, so
a connection with frames queued stops being read: memory stays bounded).
Before login only the login and heartbeat are accepted; a bad frame, a
frame before login or a frame that breaks the task's rules closes this
connection only, and is counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from common.codec import Frame, ProtocolError
from common.commands import BadBody, Cmd, decode_body
from common.connection import Deadline, FrameConnection
from common.filestore import StoreError
from common.pb import file_pb2
from file_server.metrics import REFUSALS
from file_server.tasks import DOWNLOAD, UPLOAD, Refusal

if TYPE_CHECKING:
    from file_server.server import FileServer

log = logging.getLogger("file.client")

QUEUE_HIGH = 8  # frames queued before the socket stops being read
QUEUE_LOW = 2


class FileClient(FrameConnection):
    logger = log

    def __init__(self, server: FileServer) -> None:
        config = server.config
        super().__init__(
            max_frame_size=config.max_chunk_size + 1024,
            max_write_buffer=max(1 << 20, 8 * config.max_chunk_size),
        )
        self.server = server
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue()  # None: the connection is gone
        self.worker: asyncio.Task[None] | None = None
        self.deadline: Deadline | None = None
        self.logged_in = False
        self.paused = False

    # -- protocol hooks ------------------------------------------------------------

    def on_connect(self) -> None:
        server = self.server
        if len(server.clients) >= server.config.max_connections:
            self.refused("too_many_connections", "at max_connections")
            self.abort()
            return
        server.clients.add(self)
        loop = asyncio.get_running_loop()
        # Before login: the idle timeout; after it the task's own timers (Tasks.tick).
        self.deadline = Deadline(loop, server.config.task_idle_timeout, self._login_timeout)
        self.worker = server.spawn(self._work())

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.decoder.feed(data)
        while not self.closing:
            try:
                frame = self.decoder.next_frame()
            except ProtocolError as exc:
                self.refused("bad_frame", str(exc))
                self.abort()
                return
            if frame is None:
                return
            self.frames.put_nowait(frame)
            if self.frames.qsize() >= QUEUE_HIGH and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()

    def on_disconnect(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.server.clients.discard(self)
        # Not cancelled: the worker finishes the frame in hand (a store write is
        # never cut in the middle), then ends the connection's part in its task.
        self.frames.put_nowait(None)

    def _login_timeout(self) -> None:
        if not self.logged_in:
            self.refused("login_timeout", "no login in time")
            self.abort()

    def refused(self, reason: str, detail: str) -> None:
        REFUSALS.labels(reason).inc()
        self.log.debug("refused (%s): %s", reason, detail)

    # -- frames ------------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            await self._work_frames()
        finally:
            try:
                await self.server.carry_out(self.server.tasks.gone(self, time.monotonic()))
            except StoreError as exc:  # aborting its upload failed: nothing is left to undo
                log.warning("store: %s", exc)

    async def _work_frames(self) -> None:
        while True:
            frame = await self.frames.get()
            if frame is None:
                return
            if self.closing:
                continue  # closed for an earlier frame: the rest is not handled
            if self.paused and self.frames.qsize() <= QUEUE_LOW and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            try:
                await self._handle(frame)
            except BadBody as exc:
                self.refused("bad_frame", str(exc))
                self.abort()
            except Refusal as exc:
                self.refused(exc.reason, str(exc))
                self.close()
            except StoreError as exc:
                self.refused("store_error", str(exc))
                self.abort()
            except Exception:
                log.exception("handling 0x%04x failed", frame.command_id)
                self.abort()

    async def _handle(self, frame: Frame) -> None:
        command = frame.command_id
        tasks = self.server.tasks
        if command == Cmd.HEARTBEAT:
            decode_body(command, frame.body)
            self.send_raw(Cmd.HEARTBEAT, b"", frame.seq_num)
            return
        if command == Cmd.FILE_LOGIN_REQ:
            login = decode_body(command, frame.body)
            assert isinstance(login, file_pb2.IMFileLoginReq)
            await self._login(login, frame.seq_num)
            return
        if not self.logged_in:
            raise Refusal("before_login", f"command 0x{command:04x} before login")
        now = time.monotonic()
        message = decode_body(command, frame.body) if command in HANDLED else None
        if isinstance(message, file_pb2.IMFilePullDataReq):
            actions = tasks.pull_req(self, message, frame.seq_num, now)
        elif isinstance(message, file_pb2.IMFilePullDataRsp):
            actions = tasks.pull_rsp(self, message, now)
        elif isinstance(message, file_pb2.IMFileState):
            actions = tasks.state(self, message, now)
        else:
            raise Refusal("bad_frame", f"command 0x{command:04x} is not the file server's")
        await self.server.carry_out(actions)

    async def _login(self, login: file_pb2.IMFileLoginReq, seq: int) -> None:
        tasks = self.server.tasks
        if self.logged_in:
            raise Refusal("not_expected", "a second login on one connection")
        # The ticket first (no store read for a forged one), then the meta.
        key = tasks.verify(login.task_id, login.user_id, login.file_role)
        stored = None
        # An offline file's meta is in the store: a download always reads it (any
        # file server sharing the store may serve it), an upload when this server
        # has no task for it (it was made before a restart).
        role = login.file_role
        if key is not None and (role == DOWNLOAD or (role == UPLOAD and key not in tasks.tasks)):
            stored = await self.server.offline.meta(key)
        try:
            actions = tasks.login(self, login, seq, time.monotonic(), stored)
        except Refusal as exc:
            self.send(
                Cmd.FILE_LOGIN_RES,
                file_pb2.IMFileLoginRsp(result_code=exc.result_code, task_id=login.task_id),
                seq,
            )
            raise
        self.logged_in = True
        if self.deadline is not None:
            self.deadline.cancel()
        self.log = type(self.log)(self.logger, f"{self.peer} user {login.user_id}")
        await self.server.carry_out(actions)


HANDLED = frozenset({Cmd.FILE_PULL_DATA_REQ, Cmd.FILE_PULL_DATA_RES, Cmd.FILE_STATE})
