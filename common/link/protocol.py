"""The asyncio adapter of a link: it only pumps bytes, events and timers.

:class:`Link` is one internal connection, either side. It moves bytes
between the transport and its :class:`~common.link.session.LinkSession`,
turns the session's events into handler calls and resolved futures, and
keeps one timer armed at the session's next deadline. Its owner (a
:class:`~common.link.server.LinkServer` or an
:class:`~common.link.client.Upstream`) decides who may link and with which
command table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message

from common.commands import Cmd
from common.errors import Bug, ImError, Unavailable, describe, error_code, from_code
from common.link.handshake import Identity
from common.link.session import (
    Closed,
    Event,
    LateReply,
    LinkSession,
    OneWayReceived,
    Opened,
    PeerAuthenticated,
    ReplyReceived,
    RequestReceived,
    RequestTimedOut,
    Timing,
)
from common.log import PeerLogger, format_peer
from common.metrics import ERRORS, LINK_AUTH_FAILURES, LINK_LATE_REPLIES, LINK_SILENT, LINK_TIMEOUTS
from common.pb import internal_pb2
from common.rpc import Commands, OneWay, ReqT, ResT, Route, Rpc
from common.throttle import Throttle

log = logging.getLogger("link")

INTERNAL_WRITE_BUFFER = 64 << 20


#: Process-wide: the lines about requests this process failed, per (command, error code).
_FAILURE_LOGS: dict[tuple[int, int], Throttle] = {}


class LinkDown(Unavailable):
    """No link to that service is up, or it dropped while we waited."""


class RequestTimeout(Unavailable):
    """No reply within the request's timeout."""


class LinkOwner(Protocol):
    """What a Link asks the server or upstream it belongs to."""

    def link_authenticated(self, link: Link, peer: Identity) -> tuple[int, str] | None:
        """(Accepting side) None to let ``peer`` in, or (ErrorCode, why) to refuse it."""
        ...

    def link_made(self, link: Link) -> None:
        """The connection is up (after TLS, if any); no handshake yet."""
        ...

    def commands_for(self, peer: Identity) -> Commands | None: ...
    def link_opened(self, link: Link) -> None: ...
    def link_closed(self, link: Link) -> None: ...


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[Any]
    command_id: int
    reply_command: int
    reply: type[Message]
    timeout: float


def tune_socket(transport: asyncio.BaseTransport, timing: Timing) -> None:
    """TCP keepalive and TCP_USER_TIMEOUT: the kernel gives up on a dead host as fast as we do."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    idle = max(1, round(timing.heartbeat_interval))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0), idle),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0), idle),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0), max(1, timing.heartbeat_misses)),
        # Unacknowledged data older than this kills the connection.
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 0), max(1, int(timing.dead_after * 1000))),
    ]
    for level, option, value in options:
        if option:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)


class Link(asyncio.Protocol):
    """One internal connection; ``role``/``node_id`` are the peer's once open."""

    def __init__(
        self,
        owner: LinkOwner,
        new_session: Callable[[float], LinkSession],
        *,
        max_write_buffer: int = INTERNAL_WRITE_BUFFER,
    ) -> None:
        self.owner = owner
        self._new_session = new_session
        self.max_write_buffer = max_write_buffer
        self.loop = asyncio.get_running_loop()
        self.session: LinkSession | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.log = PeerLogger(log, "?")
        self.role = 0
        self.node_id = ""
        self.commands: Commands | None = None
        self.state: Any = None  # whatever the owner keeps for this peer
        self.closing = False
        self.opened: asyncio.Future[Identity] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.closed_reason = ""
        self._calls: dict[int, _Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Frames queued in this event-loop turn go out in one write, at its end.
        self._flush_handle: asyncio.Handle | None = None

    @property
    def is_open(self) -> bool:
        return self.session is not None and self.session.is_open and not self.closing

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass
        self.peer = format_peer(transport.get_extra_info("peername"))
        self.log = PeerLogger(log, self.peer)
        session = self.session = self._new_session(self.loop.time())
        tune_socket(transport, session.timing)
        self.owner.link_made(self)
        self._write_now()  # the challenge: handshake frames go out at once
        self._arm()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or self.closing:
            return
        was_open = session.is_open
        self._handle(session.receive_data(data, self.loop.time()))
        if was_open:
            self._flush()
        else:
            self._write_now()  # a handshake step (and whatever the opening queued)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(LinkDown(f"link to {self.peer} dropped"))
        for task in self._tasks:
            task.cancel()
        if not self.opened.done():
            self.opened.set_exception(LinkDown(self.closed_reason or f"link to {self.peer} closed"))
            self.opened.exception()  # retrieved: nobody may be waiting
        if not self.lost.done():
            self.lost.set_result(None)
        self.owner.link_closed(self)

    # -- requests and one-way frames ------------------------------------------------

    async def call(self, rpc: Rpc[ReqT, ResT], request: ReqT, timeout: float) -> ResT:
        """Ask ``rpc``: its typed reply, or the ImError the peer answered with.

        Raises LinkDown or RequestTimeout (both Unavailable) when no answer comes.
        """
        request_id, future = self._request(rpc, request.SerializeToString(), timeout)
        try:
            return await future
        finally:
            if self._calls.pop(request_id, None) is not None and self.session is not None:
                self.session.cancel(request_id)  # the caller gave up (cancelled)

    def request(self, rpc: Rpc[Any, ResT], body: bytes, timeout: float) -> asyncio.Future[ResT]:
        """Queue a request whose body is serialized already: the future of its reply.

        Not a coroutine: the frame is queued before this returns (a batcher
        keeps its order so). The future fails as :meth:`call` raises; it is
        never cancelled from here, and cancelling it only drops the reply.
        Raises LinkDown at once if the link is not open.
        """
        return self._request(rpc, body, timeout)[1]

    def _request(self, rpc: Rpc[Any, ResT], body: bytes, timeout: float) -> tuple[int, asyncio.Future[ResT]]:
        session = self.session
        if session is None or self.closing or not session.is_open:
            raise LinkDown(f"link to {self.peer} is not open")
        request_id = session.send_request(rpc.command, body, self.loop.time(), timeout)
        future: asyncio.Future[ResT] = self.loop.create_future()
        self._calls[request_id] = _Call(future, rpc.command, rpc.reply_command, rpc.reply, timeout)
        self._flush()
        self._arm()
        return request_id, future

    def send(self, command: OneWay[Any] | int, message: Message) -> bool:
        command_id = command if isinstance(command, int) else command.command
        return self.send_raw(command_id, message.SerializeToString())

    def send_raw(self, command_id: int, body: bytes) -> bool:
        """Queue one one-way frame; False if the link is not open (or was just cut off)."""
        session = self.session
        if session is None or self.closing or not session.send_oneway(command_id, body, self.loop.time()):
            return False
        return self._flush()

    def close(self) -> None:
        """Close after what is queued is written (this turn's frames too)."""
        if self.transport is not None and not self.closing:
            self._write_now()
            if self.closing:  # cut off as a slow reader meanwhile
                return
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- pumping ------------------------------------------------------------------------

    def _flush(self) -> bool:
        """Have what the session queued written at the end of this loop turn.

        Every call, reply and one-way frame of a turn goes out in one
        ``transport.write`` (one syscall, one TCP segment train) instead of
        one each. False if the link is gone, or already holds more unsent
        bytes than ``max_write_buffer`` (then it is cut off here).
        """
        transport = self.transport
        if transport is None or self.session is None or self.closing:
            return False
        if self._flush_handle is None:
            if transport.get_write_buffer_size() > self.max_write_buffer:
                self._cut_off(transport.get_write_buffer_size())
                return False
            self._flush_handle = self.loop.call_soon(self._write_now)
        return True

    def _write_now(self) -> bool:
        """Write what the session queued, now; cut the peer off past ``max_write_buffer``."""
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()  # no-op when it is the handle running this
        transport, session = self.transport, self.session
        if transport is None or session is None or self.closing:
            return False
        data = session.data_to_send()
        if data:
            transport.write(data)
            unsent = transport.get_write_buffer_size()
            if unsent > self.max_write_buffer:
                self._cut_off(unsent)
                return False
        return True

    def _cut_off(self, unsent: int) -> None:
        ERRORS.labels("slow_reader").inc()
        self.log.warning("link peer is not reading (%d bytes unsent); cutting it off", unsent)
        self.abort()

    def _arm(self) -> None:
        session = self.session
        when = session.get_timer() if session is not None and not self.closing else None
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None and self._timer_at <= when:
            return  # fires first; it re-arms for the later time then
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.session is None or self.closing:
            return
        self._handle(self.session.handle_timer(self.loop.time()))
        self._flush()
        self._arm()

    # -- events ---------------------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, OneWayReceived):
                self._one_way(event)
            elif isinstance(event, ReplyReceived):
                self._reply(event)
            elif isinstance(event, RequestReceived):
                self._request_received(event)
            elif isinstance(event, RequestTimedOut):
                self._timed_out(event)
            elif isinstance(event, LateReply):
                LINK_LATE_REPLIES.inc()
                self.log.debug("late reply 0x%04x to request %d dropped", event.command_id, event.request_id)
            elif isinstance(event, PeerAuthenticated):
                self._authenticated(event)
            elif isinstance(event, Opened):
                self._opened(event)
            elif isinstance(event, Closed):
                self._closed(event)
                return

    def _authenticated(self, event: PeerAuthenticated) -> None:
        assert self.session is not None
        refusal = self.owner.link_authenticated(self, event.peer)
        if refusal is not None:
            self._handle([self.session.refuse(*refusal)])
        else:
            self._handle(self.session.accept(self.loop.time()))

    def _opened(self, event: Opened) -> None:
        self.role, self.node_id = event.peer.role, event.peer.node_id
        self.log = PeerLogger(log, f"{self.peer} {self.node_id}")
        self.commands = self.owner.commands_for(event.peer)
        if not self.opened.done():
            self.opened.set_result(event.peer)
        self.owner.link_opened(self)

    def _closed(self, event: Closed) -> None:
        self.closed_reason = event.reason
        if event.auth_failure:
            LINK_AUTH_FAILURES.labels(event.auth_failure).inc()
            self.log.warning("link handshake failed (%s): %s; closing", event.auth_failure, event.reason)
        elif event.reason.startswith("peer silent"):
            LINK_SILENT.inc()
            self.log.warning("%s; dropping the link", event.reason)
        elif event.error is not None:
            self.log.warning("link closed by the peer: %s", event.error.message)
        else:
            ERRORS.labels("link_protocol").inc()
            self.log.warning("%s; closing the link", event.reason)
        # Whatever the session queued last (a refusal) still goes out: close() writes it first.
        self.close()

    def _violation(self, reason: str) -> None:
        if self.session is not None:
            self._handle([self.session.close(reason)])

    def _one_way(self, event: OneWayReceived) -> None:
        route = self.commands.get(event.command_id) if self.commands is not None else None
        if route is None:
            self._violation(f"command 0x{event.command_id:04x} is not allowed on this link")
            return
        if route.is_rpc:
            self._violation(f"request 0x{event.command_id:04x} sent as a one-way frame")
            return
        message = self._parse(route.request, event.body, event.command_id)
        if message is None:
            return
        try:
            route.handler(self, message)
        except ImError as exc:
            self.log.warning("0x%04x refused: %s", event.command_id, exc.message)
        except Exception:
            ERRORS.labels("bug").inc()
            self.log.exception("handling 0x%04x failed", event.command_id)

    def _request_received(self, event: RequestReceived) -> None:
        route = self.commands.get(event.command_id) if self.commands is not None else None
        if route is None or not route.is_rpc:
            self._violation(f"request 0x{event.command_id:04x} is not allowed on this link")
            return
        message = self._parse(route.request, event.body, event.command_id)
        if message is None:
            return
        task = self.loop.create_task(self._answer(route, event.request_id, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, route: Route, request_id: int, message: Message) -> None:
        session = self.session
        assert session is not None
        now = self.loop.time
        try:
            reply = await route.handler(self, message)
            if route.reply is None or not isinstance(reply, route.reply):
                raise Bug(f"the handler of 0x{route.command:04x} returned {type(reply).__name__}")
        except ImError as exc:
            if exc.server_fault:
                # A refusal under load comes by the thousand: one line per
                # command and kind a second (the refuser counts each).
                throttle = _FAILURE_LOGS.setdefault((route.command, exc.code), Throttle(1.0))
                if throttle.ready():
                    self.log.warning("0x%04x failed: %s%s", route.command, exc.message, throttle.more())
            session.send_error(request_id, exc.code, describe(exc), now())
        except Exception as exc:
            ERRORS.labels("bug").inc()
            self.log.exception("handling 0x%04x failed", route.command)
            session.send_error(request_id, error_code(exc), describe(exc), now())
        else:
            session.send_reply(request_id, route.reply_command, reply.SerializeToString(), now())
        self._flush()

    def _reply(self, event: ReplyReceived) -> None:
        call = self._calls.pop(event.request_id, None)
        if call is None or call.future.done():
            return  # the caller was cancelled meanwhile
        future = call.future
        if event.command_id == Cmd.LINK_ERROR:
            error = self._parse(internal_pb2.LinkError, event.body, event.command_id)
            if error is not None:
                future.set_exception(from_code(error.code, error.message))
            else:
                future.set_exception(Bug("malformed LinkError"))
            return
        if event.command_id != call.reply_command:
            future.set_exception(Bug(f"0x{call.command_id:04x} answered with 0x{event.command_id:04x}"))
            self._violation(f"0x{call.command_id:04x} answered with 0x{event.command_id:04x}")
            return
        reply = self._parse(call.reply, event.body, event.command_id)
        if reply is None:
            future.set_exception(Bug(f"malformed reply 0x{event.command_id:04x}"))
            return
        future.set_result(reply)

    def _timed_out(self, event: RequestTimedOut) -> None:
        call = self._calls.pop(event.request_id, None)
        LINK_TIMEOUTS.inc()
        if call is not None and not call.future.done():
            call.future.set_exception(
                RequestTimeout(f"0x{call.command_id:04x} to {self.peer} timed out after {call.timeout:g}s")
            )

    def _parse(self, cls: type[Message], body: bytes, command_id: int) -> Any:
        message = cls()
        try:
            message.ParseFromString(body)
            ok = message.IsInitialized()
        except Exception as exc:  # DecodeError, or whatever the parser raises on garbage
            ok, why = False, str(exc)
        else:
            why = "missing required fields"
        if not ok:
            ERRORS.labels("bad_body").inc()
            self._violation(f"malformed body for 0x{command_id:04x}: {why}")
            return None
        return message
