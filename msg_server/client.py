"""One client's TCP connection: a thin adapter from frames to handlers.

Before login the only commands accepted are login and heartbeat; anything
else closes the connection (TeamTalk processes commands before login). Each
request's handler starts at once, in the frame's turn (``_start``): one that
answers without waiting never becomes a task; one that waits goes on as a
task from where it waited (so handlers must not need ``asyncio.current_task``
before their first wait). At ``max_pending_requests`` in flight the
connection dispatches nothing more, not even frames already read (they wait in
the decoder, in order, and reading stops) until half have drained, so one
client cannot queue unbounded work. A heartbeat waits in that order too: answering
it ahead would mean decoding past the frames that wait, which is the work the
pause refuses; the wait is bounded by the requests in flight (request_timeout),
and any bytes the client sends already count as life for its heartbeat timeout.
After login a frame the client started must be complete within
``partial_frame_timeout`` (a trickle of bytes does not extend it).

Replies of any size are queued one at a time and streamed as the client reads
(``common.connection``): a client is cut off for a reply it asked for only if it
reads nothing of it for ``write_stall_timeout``; pushes and notices alone are
bounded by ``max_write_buffer``.

Memory: an idle logged-in connection is the object (``__slots__``, no ``__dict__``), its
transport, a set entry in the loop's deadline wheel (``common.connection.DeadlineWheel``,
not a timer of its own) and its entries in the gateway's tables; what it follows, its
push order, its logger and its rate-limit buckets beyond the request one are made on use.

A request gets the reply its handler returns, or, if the handler raises,
the reply its table entry gives a refused request (``handlers.base.refuse``
decides how that is logged); either way with the request's seq_num, so a
client never waits for an answer that will not come.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from common.codec import Frame
from common.commands import Cmd, decode_body
from common.connection import FrameConnection
from common.conversation import is_mobile
from common.log import address_of
from common.metrics import ERRORS
from common.pb import base_pb2, internal_pb2
from common.throttle import Throttle
from msg_server import handlers
from msg_server.handlers.base import refuse
from msg_server.push_order import PushOrder

if TYPE_CHECKING:
    from msg_server.gateway import Gateway

log = logging.getLogger("client")

BEFORE_LOGIN = frozenset({Cmd.LOGIN_REQ, Cmd.HEARTBEAT})
TEAMTALK_SERVICES = range(0x01, 0x08)  # login ... other; 0x08 is this cluster's internal service
# Before login a connection has no client type; 0 is none of TeamTalk's.
NO_CLIENT_TYPE = base_pb2.ClientType.ValueType(0)
_UNSUPPORTED_LOG = Throttle(5.0)
# A TeamTalk client sends a receipt (MSG_DATA_ACK) for every message it gets.
# Delivery here is confirmed on the push path, so a receipt needs nothing: it is
# no "unsupported command" worth an INFO line (one per message, on every gateway).
SILENT_COMMANDS = frozenset({Cmd.MSG_DATA_ACK})


class ClientConnection(FrameConnection):
    __slots__ = (
        "_watching",
        "client_type",
        "close_after_reply",
        "conn_id",
        "deadline_since",
        "deadline_slot",
        "deadline_timeout",
        "draining",
        "gateway",
        "logged_in_at",
        "logging_in",
        "pending",
        "push_order",
        "refusal_log",
        "source",
        "status",
        "user_id",
    )

    logger = log

    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config
        super().__init__(
            max_frame_size=config.max_frame_size,
            max_write_buffer=config.max_write_buffer,
            write_stall_timeout=config.write_stall_timeout,
        )
        self.gateway = gateway
        self.conn_id = gateway.next_conn_id()
        self.user_id = 0
        self.source = "?"  # its address, once connected (on_connect)
        self.client_type = NO_CLIENT_TYPE
        self.status: base_pb2.UserStatType.ValueType = base_pb2.USER_STATUS_ONLINE
        self.logging_in = False
        # Set by a handler whose reply ends the connection (a refused login, logout).
        self.close_after_reply = False
        self.refusal_log: Throttle | None = None  # lines about its refused requests, made on the first
        self.pending = 0  # requests in flight; at max_pending_requests nothing more is dispatched
        self.draining = False
        # What it was pushed, per conversation: made on its first push or send.
        self.push_order: PushOrder | None = None
        self.logged_in_at = 0  # unix seconds: what the client synced from storage is older
        self._watching: set[int] | None = None  # users whose presence it follows, made on the first
        # Its login, then heartbeat, deadline: an entry of the loop's DeadlineWheel.
        self.deadline_slot: float | None = None
        self.deadline_since = 0.0
        self.deadline_timeout = config.login_timeout

    @property
    def watching(self) -> set[int]:
        """Users whose presence this client follows (made on first use)."""
        watching = self._watching
        if watching is None:
            watching = self._watching = set()
        return watching

    @property
    def log_prefix(self) -> str:
        return f"{self.peer} user {self.user_id}" if self.user_id else self.peer

    @property
    def logged_in(self) -> bool:
        return self.user_id != 0

    @property
    def is_mobile(self) -> bool:
        return is_mobile(self.client_type)

    def online_session(self) -> internal_pb2.OnlineSession:
        return internal_pb2.OnlineSession(
            user_id=self.user_id, conn_id=self.conn_id, client_type=self.client_type, status=self.status
        )

    def order(self) -> PushOrder:
        if self.push_order is None:
            self.push_order = PushOrder()
        return self.push_order

    def origin(self) -> internal_pb2.Origin:
        return internal_pb2.Origin(gateway_id=self.gateway.node_id, conn_id=self.conn_id)

    # -- protocol hooks -----------------------------------------------------------

    def on_connect(self) -> None:
        # The client's address without its port: what per-address limits and counters key on
        # (worked out once: the rate limits ask on every frame).
        # Interned: the connections of one address share one string.
        self.source = sys.intern(address_of(self.peer))
        if not self.gateway.admitter.accept(self):
            return  # closed on accept (msg_server/admission.py)
        self.gateway.connections.add(self)
        self.deadline_since = asyncio.get_running_loop().time()
        self._services.deadlines.add(self)

    def on_bytes_received(self) -> None:
        # Any traffic proves the client alive, not only heartbeats; before
        # login the deadline is the login timeout and must not be extended.
        if self.user_id and self.deadline_slot is not None:
            self.deadline_since = asyncio.get_running_loop().time()

    def deadline_expired(self) -> None:
        if not self.closing:
            self._timed_out()

    def _timed_out(self) -> None:
        phase = "heartbeat" if self.logged_in else "login"
        ERRORS.labels(f"{phase}_timeout").inc()
        self.log.debug("%s timeout; closing", phase)  # counted in imcluster_errors
        self.abort()

    def on_frame(self, frame: Frame) -> None:
        if not self.gateway.limiter.allow(self, frame):
            return  # over a rate limit: refused there (msg_server/limits.py)
        command = frame.command_id
        if not self.logged_in and (command not in BEFORE_LOGIN or self.logging_in):
            ERRORS.labels("before_login").inc()
            self.log.warning("command 0x%04x before login; closing", command)
            self.abort()
            return
        if command == Cmd.HEARTBEAT:
            decode_body(command, frame.body)
            self.send_raw(Cmd.HEARTBEAT, b"", frame.seq_num)
            return
        entry = handlers.CLIENT_COMMANDS.get(command)
        if entry is None:
            if command in SILENT_COMMANDS:
                self.log.debug("0x%04x ignored", command)
                return
            if command >> 8 in TEAMTALK_SERVICES:
                # A TeamTalk command we do not serve (file transfer, say): say
                # so in the log, but do not break a real client by closing on it.
                if _UNSUPPORTED_LOG.ready():  # a client's every frame: once per interval
                    self.log.info("unsupported command 0x%04x ignored%s", command, _UNSUPPORTED_LOG.more())
                return
            ERRORS.labels("unknown_command").inc()
            self.log.warning("unknown command 0x%04x; closing", command)
            self.abort()
            return
        if self.draining:
            return  # shutting down: unanswered, so the client resends it elsewhere
        job = entry.parse(frame.body)
        if command == Cmd.LOGIN_REQ:
            self.logging_in = True
        self._start(self._handle(job, frame.seq_num))

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a request's handler now, up to its first wait; a task only from there on.

        A handler that answers without waiting (or fails at once) costs no task and is
        never in flight; one that waits counts in flight (``pending``) from then until done.
        Requests still start in the order their frames came.
        """
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except asyncio.CancelledError:  # as a task cancelled before its first wait would be
            return
        self._request_started()
        task = asyncio.ensure_future(_go_on(coro, waiting))
        # The loop keeps only a weak reference to a task. One set for the
        # gateway, not one per connection: an idle connection costs no set.
        self.gateway.requests.add(task)
        task.add_done_callback(self._request_done)

    async def _handle(self, job: handlers.Job, seq_num: int) -> None:
        try:
            try:
                reply = await job.run(self.gateway, self)
            except Exception as exc:
                reply = job.refused(self, refuse(self, job.command, exc))
            if reply is not None and job.reply_command:
                # Any size: held here and streamed as the client reads (common.connection).
                await self.reply(job.reply_command, reply, seq_num)
        except Exception:  # a refusal or a reply that cannot be built: a bug here
            ERRORS.labels("handler").inc()
            self.log.exception("answering 0x%04x failed", job.command)
        finally:
            if self.close_after_reply:
                self.close()

    def _request_started(self) -> None:
        """One more request in flight; at the limit the connection dispatches nothing more
        (not even frames already read, which wait in the decoder) until half have drained."""
        self.pending += 1
        if self.pending >= self.gateway.config.max_pending_requests:
            self.pause_dispatch()

    def _request_done(self, task: asyncio.Future[None]) -> None:
        self.gateway.requests.discard(task)
        self.pending -= 1
        if (
            self.dispatch_paused
            and not self.draining
            and self.pending <= self.gateway.config.max_pending_requests // 2
            and not self.gateway.limiter.holds(self)  # paused by a rate limit: it resumes it
        ):
            self.resume_dispatch()

    def stop_reading(self) -> None:
        """Shutting down: take no new request; those in flight still get their answers."""
        self.draining = True
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def on_disconnect(self, exc: Exception | None) -> None:
        self._services.deadlines.discard(self)
        self.gateway.connections.discard(self)
        self.gateway.admitter.gone(self)
        self.gateway.limiter.gone(self)
        if self.logged_in:
            self.gateway.detach(self)

    # -- called by the login handler -------------------------------------------------

    def became_logged_in(
        self,
        user_id: int,
        client_type: base_pb2.ClientType.ValueType,
        status: base_pb2.UserStatType.ValueType,
    ) -> None:
        self.user_id = user_id
        self.logged_in_at = int(time.time())
        self.client_type = client_type
        self.status = status
        self.logging_in = False
        config = self.gateway.config
        timeout = config.heartbeat_timeout_mobile if is_mobile(client_type) else config.heartbeat_timeout_pc
        if self.deadline_slot is not None:
            deadlines = self._services.deadlines
            deadlines.discard(self)
            self.deadline_timeout = timeout
            self.deadline_since = asyncio.get_running_loop().time()
            deadlines.add(self)
        self.watch_partial_frames(config.partial_frame_timeout)
        self.gateway.attach(self)
        self.gateway.admitter.logged_in(self)
        self.gateway.limiter.logged_in(self)


class _GoOn:
    """Awaiting this goes on with ``coro`` (started outside any task, now waiting on
    ``waiting``) as if it had run in the awaiting task from the start: what the task
    sends or throws in goes to ``coro``, what ``coro`` yields goes to the task."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro = self._coro
        waiting = self._waiting
        self._waiting = None
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: a failed wait, a cancellation
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration:
                    return


async def _go_on(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    await _GoOn(coro, waiting)
