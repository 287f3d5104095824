"""One client's TCP connection: a thin adapter from frames to handlers.

Before login the only commands accepted are login and heartbeat; anything
else closes the connection (TeamTalk processes commands before login). Each
request runs as its own task; at ``max_pending_requests`` in flight the
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

A request gets the reply its handler returns, or, if the handler raises,
the reply its table entry gives a refused request (``handlers.base.refuse``
decides how that is logged); either way with the request's seq_num, so a
client never waits for an answer that will not come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from common.codec import Frame
from common.commands import Cmd, decode_body
from common.connection import Deadline, FrameConnection
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


class ClientConnection(FrameConnection):
    logger = log
    # What it was pushed, per conversation: made on its first push or send
    # (a class default, so an idle connection carries nothing).
    push_order: PushOrder | None = None
    logged_in_at = 0  # unix seconds: what the client synced from storage is older

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
        self.deadline: Deadline | None = None
        self.watching: set[int] = set()  # users whose presence this client follows

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
        self.source = address_of(self.peer)
        if not self.gateway.admitter.accept(self):
            return  # closed on accept (msg_server/admission.py)
        self.gateway.connections.add(self)
        self.deadline = Deadline(
            asyncio.get_running_loop(), self.gateway.config.login_timeout, self._timed_out
        )

    def on_bytes_received(self) -> None:
        # Any traffic proves the client alive, not only heartbeats; before
        # login the deadline is the login timeout and must not be extended.
        if self.deadline is not None and self.logged_in:
            self.deadline.touch()

    def _timed_out(self) -> None:
        phase = "heartbeat" if self.logged_in else "login"
        ERRORS.labels(f"{phase}_timeout").inc()
        self.log.info("%s timeout; closing", phase)
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
            if command >> 8 in TEAMTALK_SERVICES:
                # A TeamTalk command we do not serve (file transfer, say): say
                # so in the log, but do not break a real client by closing on it.
                self.log.info("unsupported command 0x%04x ignored", command)
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
        self._request_started()
        task = asyncio.ensure_future(self._handle(job, frame.seq_num))
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
        if self.deadline is not None:
            self.deadline.cancel()
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
        self.log = type(self.log)(self.logger, f"{self.peer} user {user_id}")
        config = self.gateway.config
        timeout = config.heartbeat_timeout_mobile if is_mobile(client_type) else config.heartbeat_timeout_pc
        if self.deadline is not None:
            self.deadline.reset(timeout)
        self.watch_partial_frames(config.partial_frame_timeout)
        self.gateway.attach(self)
        self.gateway.admitter.logged_in(self)
        self.gateway.limiter.logged_in(self)
