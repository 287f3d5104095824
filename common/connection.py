"""The thin asyncio adapter every server builds on.

:class:`FrameConnection` only moves bytes between a transport and the sans-IO
:class:`~common.codec.FrameDecoder`, and hands complete frames to
``on_frame``. Bad input (a frame the codec refuses, or a body that does not
parse) is logged with the peer and closes this connection only. A peer that
stops reading is cut off once its unsent bytes pass ``max_write_buffer``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from google.protobuf.message import Message

from common.codec import DEFAULT_MAX_FRAME, Frame, FrameDecoder, ProtocolError, encode_frame
from common.commands import BadBody
from common.log import PeerLogger, format_peer
from common.metrics import ERRORS

log = logging.getLogger(__name__)


class Deadline:
    """Calls ``on_expire`` once ``timeout`` seconds pass without a ``touch``.

    Touching only records the time; the single timer re-arms itself lazily
    when it fires early, so a busy connection costs no timer churn.
    """

    __slots__ = ("_handle", "_loop", "_on_expire", "last_touch", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, on_expire: Callable[[], Any]) -> None:
        self._loop = loop
        self.timeout = timeout
        self._on_expire = on_expire
        self.last_touch = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_at(self.last_touch + timeout, self._fire)

    def touch(self) -> None:
        self.last_touch = self._loop.time()

    def expired(self, now: float) -> bool:
        return now - self.last_touch >= self.timeout

    def reset(self, timeout: float) -> None:
        """Change the timeout, counting from now."""
        self.timeout = timeout
        self.touch()
        self._rearm()

    def _rearm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(self.last_touch + self.timeout, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self.expired(self._loop.time()):
            self._on_expire()
        else:
            self._rearm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class FrameConnection(asyncio.Protocol):
    """Bytes in, frames out; frames in, bytes out."""

    logger = log

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME, max_write_buffer: int = 1 << 20):
        self.decoder = FrameDecoder(max_frame_size)
        self.max_write_buffer = max_write_buffer
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.log = PeerLogger(self.logger, "?")
        self.closing = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        self.peer = format_peer(transport.get_extra_info("peername"))
        self.log = PeerLogger(self.logger, self.peer)
        # Let the kernel and the transport buffer a little before we are told
        # to pause; past max_write_buffer the peer is cut off (see send_raw).
        transport.set_write_buffer_limits(high=min(self.max_write_buffer, 256 * 1024))
        self.on_connect()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.decoder.feed(data)
        self.on_bytes_received()
        while not self.closing:
            try:
                frame = self.decoder.next_frame()
            except ProtocolError as exc:
                ERRORS.labels("protocol").inc()
                self.log.warning("protocol error: %s; closing the connection", exc)
                self.abort()
                return
            if frame is None:
                return
            try:
                self.on_frame(frame)
            except BadBody as exc:
                ERRORS.labels("bad_body").inc()
                self.log.warning("bad frame: %s; closing the connection", exc)
                self.abort()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)
        self.on_disconnect(exc)

    # -- hooks ----------------------------------------------------------------

    def on_connect(self) -> None:
        pass

    def on_bytes_received(self) -> None:
        pass

    def on_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    def on_disconnect(self, exc: Exception | None) -> None:
        pass

    # -- sending and closing --------------------------------------------------

    def send(self, command_id: int, message: Message, seq_num: int = 0) -> bool:
        return self.send_raw(command_id, message.SerializeToString(), seq_num)

    def send_raw(self, command_id: int, body: bytes, seq_num: int = 0) -> bool:
        """Queue one frame; False if the connection is gone or was just cut off."""
        transport = self.transport
        if transport is None or self.closing:
            return False
        transport.write(encode_frame(command_id, body, seq_num))
        if transport.get_write_buffer_size() > self.max_write_buffer:
            ERRORS.labels("slow_reader").inc()
            self.log.warning(
                "peer is not reading (%d bytes unsent); cutting it off",
                transport.get_write_buffer_size(),
            )
            self.abort()
            return False
        return True

    def close(self) -> None:
        """Close after the queued bytes are flushed."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping whatever is unsent."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
