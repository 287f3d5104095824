"""Internal links between servers: requests with ids and timeouts, and
one-way frames, over the same framing as client traffic.

* :class:`LinkClient` is one outgoing connection. ``request`` uses the
  header's seq_num as the request id, so many requests are in flight at once,
  each with its own timeout; their number is bounded.
* :class:`Upstream` keeps a LinkClient to the first reachable address of a
  list, says hello, heartbeats, and reconnects (failing over) when it drops.
* :class:`LinkServer` is the accepting side: the first frame must be a
  ``LinkHello``; after it, each role may send only the commands in its table.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from common.codec import MAX_SEQ, Frame
from common.commands import Cmd, decode_body
from common.connection import Deadline, FrameConnection
from common.errors import Bug, ImError, Unavailable, describe, error_code, from_code
from common.pb import internal_pb2, other_pb2
from common.rpc import Commands, OneWay, ReqT, ResT, Route, Rpc

log = logging.getLogger(__name__)

INTERNAL_MAX_FRAME = 32 << 20
INTERNAL_WRITE_BUFFER = 64 << 20
HEARTBEAT = other_pb2.IMHeartBeat()


class LinkDown(Unavailable):
    """No link to that service is up, or it dropped while we waited."""


class RequestTimeout(Unavailable):
    """No reply within the request's timeout."""


class RemoteError(ImError):
    """The peer answered a request with LinkError."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


Reply = tuple[int, Message]
PushHandler = Callable[["LinkClient", Frame], None]


class LinkClient(FrameConnection):
    """One outgoing internal connection."""

    logger = logging.getLogger("link")

    def __init__(self, on_push: PushHandler, max_in_flight: int = 16384) -> None:
        super().__init__(max_frame_size=INTERNAL_MAX_FRAME, max_write_buffer=INTERNAL_WRITE_BUFFER)
        self._on_push = on_push
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._seq = itertools.cycle(range(1, MAX_SEQ + 1))
        self.max_in_flight = max_in_flight
        self.last_received = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def on_bytes_received(self) -> None:
        self.last_received = asyncio.get_running_loop().time()

    def on_frame(self, frame: Frame) -> None:
        if frame.command_id == Cmd.HEARTBEAT:
            return
        future = self._pending.pop(frame.seq_num, None) if frame.seq_num else None
        if future is None:
            self._on_push(self, frame)
            return
        if future.done():  # timed out already
            return
        try:
            message = decode_body(frame.command_id, frame.body)
        except Exception as exc:
            future.set_exception(exc)
            raise
        if isinstance(message, internal_pb2.LinkError):
            future.set_exception(from_code(message.code, message.message))
        else:
            future.set_result((frame.command_id, message))

    def on_disconnect(self, exc: Exception | None) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LinkDown(f"link to {self.peer} dropped"))

    def _next_seq(self) -> int:
        for _ in range(MAX_SEQ):
            seq = next(self._seq)
            if seq not in self._pending:
                return seq
        raise LinkDown("no free request id")  # unreachable while max_in_flight < MAX_SEQ

    async def request(self, command_id: int, message: Message, timeout: float) -> Reply:
        if self.closing:
            raise LinkDown(f"link to {self.peer} is closed")
        if len(self._pending) >= self.max_in_flight:
            raise RemoteError(internal_pb2.ERR_OVERLOADED, f"{self.max_in_flight} requests in flight")
        seq = self._next_seq()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        if not self.send(command_id, message, seq):
            self._pending.pop(seq, None)
            raise LinkDown(f"link to {self.peer} is closed")
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"request 0x{command_id:04x} to {self.peer} timed out after {timeout}s"
            ) from None
        finally:
            if self._pending.get(seq) is future:
                del self._pending[seq]


class Upstream:
    """A self-healing link to one of several interchangeable servers."""

    def __init__(
        self,
        name: str,
        addresses: list[tuple[str, int]],
        hello: internal_pb2.LinkHello,
        *,
        on_push: PushHandler | None = None,
        on_connected: Callable[[LinkClient], Awaitable[None] | None] | None = None,
        heartbeat_interval: float = 5.0,
        connect_timeout: float = 3.0,
        max_in_flight: int = 16384,
    ) -> None:
        if not addresses:
            raise ValueError(f"{name}: no addresses configured")
        self.name = name
        self.addresses = addresses
        self.hello = hello
        self.on_push = on_push or (lambda link, frame: None)
        self.on_connected = on_connected
        self.heartbeat_interval = heartbeat_interval
        self.connect_timeout = connect_timeout
        self.max_in_flight = max_in_flight
        self.link: LinkClient | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def connected(self) -> bool:
        return self.link is not None and not self.link.closing and self._ready.is_set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"upstream-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self.link is not None:
            self.link.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def request(self, command_id: int, message: Message, timeout: float) -> Reply:
        link = self.link
        if link is None or not self._ready.is_set():
            raise LinkDown(f"{self.name} is unavailable")
        return await link.request(command_id, message, timeout)

    async def call(self, rpc: Rpc[ReqT, ResT], request: ReqT, timeout: float) -> ResT:
        """Ask ``rpc``; its typed reply, or the ImError the peer answered with."""
        command, reply = await self.request(rpc.command, request, timeout)
        if command != rpc.reply_command or not isinstance(reply, rpc.reply):
            raise Bug(f"0x{rpc.command:04x} answered with 0x{command:04x}")
        return reply

    def send_oneway(self, oneway: OneWay[Any], message: Message) -> bool:
        return self.send_raw(oneway.command, message.SerializeToString())

    def send(self, command_id: int, message: Message) -> bool:
        return self.send_raw(command_id, message.SerializeToString())

    def send_raw(self, command_id: int, body: bytes) -> bool:
        link = self.link
        if link is None or not self._ready.is_set():
            return False
        return link.send_raw(command_id, body)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        start = random.randrange(len(self.addresses))
        for attempt in itertools.count():
            if self._stopping:
                return
            host, port = self.addresses[(start + attempt) % len(self.addresses)]
            try:
                _, link = await asyncio.wait_for(
                    loop.create_connection(lambda: LinkClient(self.on_push, self.max_in_flight), host, port),
                    self.connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                log.debug("%s: cannot reach %s:%d: %s", self.name, host, port, exc)
                await asyncio.sleep(backoff + random.random() * backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            self.link = link
            link.send(Cmd.LINK_HELLO, self.hello)
            try:
                if self.on_connected is not None:
                    result = self.on_connected(link)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                log.exception("%s: set-up on %s:%d failed", self.name, host, port)
                link.abort()
            if not link.closing:
                self._ready.set()
                log.info("%s: linked to %s:%d", self.name, host, port)
                await self._watch(link)
            self._ready.clear()
            self.link = None
            if not self._stopping:
                log.warning("%s: link to %s:%d lost; reconnecting", self.name, host, port)

    async def _watch(self, link: LinkClient) -> None:
        """Heartbeat the link and drop it after three silent intervals."""
        loop = asyncio.get_running_loop()
        link.last_received = loop.time()
        while not link.lost.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.lost), self.heartbeat_interval)
            if link.lost.done():
                return
            if loop.time() - link.last_received > 3 * self.heartbeat_interval:
                log.warning(
                    "%s: %s silent for %.0fs; dropping it", self.name, link.peer, 3 * self.heartbeat_interval
                )
                link.abort()
                return
            link.send(Cmd.HEARTBEAT, HEARTBEAT)


Handler = Callable[["LinkServerConnection", Frame, Message], Any]


class LinkServerConnection(FrameConnection):
    """The accepting end of an internal link."""

    logger = logging.getLogger("link")

    def __init__(self, server: LinkServer) -> None:
        super().__init__(max_frame_size=INTERNAL_MAX_FRAME, max_write_buffer=INTERNAL_WRITE_BUFFER)
        self.server = server
        self.role: int | None = None
        self.node_id = ""
        self.handlers: Mapping[int, Handler] = {}
        self.deadline: Deadline | None = None
        self.state: Any = None  # whatever the server keeps for this peer

    def on_connect(self) -> None:
        self.deadline = Deadline(asyncio.get_running_loop(), self.server.hello_timeout, self._silent)
        self.server.connections.add(self)

    def on_bytes_received(self) -> None:
        if self.deadline is not None:
            self.deadline.touch()

    def _silent(self) -> None:
        self.log.warning("link silent for %.0fs; closing it", self.deadline.timeout if self.deadline else 0)
        self.abort()

    def on_frame(self, frame: Frame) -> None:
        if frame.command_id == Cmd.HEARTBEAT:
            self.send(Cmd.HEARTBEAT, HEARTBEAT, frame.seq_num)
            return
        message = decode_body(frame.command_id, frame.body)
        if self.role is None:
            if not isinstance(message, internal_pb2.LinkHello):
                self.log.warning("first frame 0x%04x is not LinkHello; closing", frame.command_id)
                self.abort()
                return
            handlers = self.server.handlers_by_role.get(message.role)
            if isinstance(handlers, Commands):
                handlers = _legacy_table(handlers)
            if handlers is None:
                self.log.warning("role %d may not link here; closing", message.role)
                self.abort()
                return
            self.role, self.node_id, self.handlers = message.role, message.node_id, handlers
            self.log = type(self.log)(self.logger, f"{self.peer} {self.node_id}")
            if self.deadline is not None:
                self.deadline.reset(self.server.idle_timeout)
            self.server.on_hello(self)
            return
        handler = self.handlers.get(frame.command_id)
        if handler is None:
            self.log.warning("command 0x%04x is not allowed on this link; closing", frame.command_id)
            self.abort()
            return
        try:
            result = handler(self, frame, message)
        except Exception as exc:
            self._fail(frame, exc)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._finish(frame, result))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)
        elif result is not None:
            self.reply(frame, *result)

    async def _finish(self, frame: Frame, pending: Awaitable[Reply | None]) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._fail(frame, exc)
            return
        if result is not None:
            self.reply(frame, *result)

    def reply(self, frame: Frame, command_id: int, message: Message) -> None:
        self.send(command_id, message, frame.seq_num)

    def _fail(self, frame: Frame, exc: Exception) -> None:
        code = error_code(exc)
        if not isinstance(exc, ImError):
            self.log.error("command 0x%04x failed", frame.command_id, exc_info=exc)
        elif exc.server_fault:
            self.log.warning("command 0x%04x failed: %s", frame.command_id, exc)
        if frame.seq_num:
            self.send(Cmd.LINK_ERROR, internal_pb2.LinkError(code=code, message=describe(exc)), frame.seq_num)

    def on_disconnect(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.server.connections.discard(self)
        if self.role is not None:
            self.server.on_goodbye(self)


class ServiceError(ImError):
    """Raised by a handler to answer LinkError with a specific code (use common.errors instead)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _legacy_table(commands: Commands) -> Mapping[int, Handler]:
    """A typed Commands table in the (conn, frame, message) shape this module dispatches."""

    def adapt(route: Route) -> Handler:
        if not route.is_rpc:
            return lambda conn, frame, message: route.handler(conn, message)

        async def rpc(conn: LinkServerConnection, frame: Frame, message: Message) -> Reply:
            reply = await route.handler(conn, message)
            if route.reply is None or not isinstance(reply, route.reply):
                raise Bug(f"handler of 0x{route.command:04x} returned {type(reply).__name__}")
            return route.reply_command, reply

        return rpc

    return {route.command: adapt(route) for route in commands}


class LinkServer:
    """Accepts internal links; ``handlers_by_role`` is the command table."""

    def __init__(
        self,
        handlers_by_role: Mapping[int, Mapping[int, Handler] | Commands],
        *,
        hello_timeout: float = 5.0,
        idle_timeout: float = 20.0,
    ) -> None:
        self.handlers_by_role = handlers_by_role
        self.hello_timeout = hello_timeout
        self.idle_timeout = idle_timeout
        self.connections: set[LinkServerConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.AbstractServer | None = None

    async def listen(self, host: str, port: int, backlog: int = 1024) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: LinkServerConnection(self), host, port, backlog=backlog, reuse_address=True
        )
        return int(self.server.sockets[0].getsockname()[1])

    def on_hello(self, conn: LinkServerConnection) -> None:
        pass

    def on_goodbye(self, conn: LinkServerConnection) -> None:
        pass

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        for task in list(self.tasks):
            task.cancel()


Link = LinkServerConnection  # becomes the link package's Link
