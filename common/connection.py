"""The thin asyncio adapter every server builds on.

:class:`FrameConnection` only moves bytes between a transport and the sans-IO
:class:`~common.codec.FrameDecoder`, and hands complete frames to
``on_frame``. Bad input (a frame the codec refuses, or a body that does not
parse) is logged with the peer and closes this connection only.

Reading: a subclass that has enough work in hand calls :meth:`pause_dispatch`.
From then on no frame reaches ``on_frame``, not even one already read: frames
in the decoder wait there (at most what one read returned, since reading is
paused too and the rest stays in the kernel) and are dispatched in order by
:meth:`resume_dispatch`. Once :meth:`watch_partial_frames` is called, a frame
the peer has started must be complete within that many seconds; other traffic
does not extend it, so a peer trickling one byte at a time is closed.

Writing: frames go through an :class:`~common.outbox.Outbox` to the transport, in order, in
chunks of at most :data:`CHUNK` bytes and only while the transport has not
paused writing, so the transport never holds more than its high-water mark
(:data:`WRITE_HIGH`) plus one chunk. Two kinds of frames:

- :meth:`send_raw` / :meth:`send`: frames the peer did not ask for in this
  exchange (pushes, notices, heartbeat echoes). Past ``max_write_buffer`` of
  them held unsent, the peer is cut off as a slow reader (``slow_reader``).
- :meth:`reply_raw` / :meth:`reply`: the answer to a request. A reply is never
  an offence for its size: the connection holds one reply at a time (a later one
  waits in its request's task until the one before is handed to the transport)
  and feeds it to the transport as the peer reads. A peer that leaves bytes
  queued without reading any of them for ``write_stall_timeout`` seconds is cut
  off (``write_stall``).

Frames written while nothing waits are coalesced: all a connection writes in
one event-loop turn (acks, replies, pushes) goes to the transport as one
``transport.write`` at the end of the turn (:class:`_Flusher`, one loop
callback for every connection that wrote), at most :data:`CHUNK` bytes of it
held (a full chunk is written at once). :meth:`close` writes what is held
first; :meth:`abort` drops it.

So the bytes one connection holds are at most one reply frame + ``max_write_buffer``
of unsolicited frames + one chunk being coalesced + the transport's ``WRITE_HIGH + CHUNK``;
the replies waiting behind are bounded by the subclass's requests in flight.

Memory: a gateway holds tens of thousands of idle connections, so a connection
carries no ``__dict__`` (``__slots__``), makes its logger adapter, its ``lost``
future, its decoder buffer and its outbox queue only when used, and its idle
or login deadline is an entry in the loop's :class:`DeadlineWheel` instead of
a timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from google.protobuf.message import Message

from common.codec import DEFAULT_MAX_FRAME, Frame, FrameDecoder, ProtocolError, encode_frame
from common.commands import BadBody
from common.log import PeerLogger, format_peer
from common.metrics import ERRORS
from common.outbox import Outbox
from common.throttle import Throttle

log = logging.getLogger(__name__)

CHUNK = 128 * 1024  # bytes handed to the transport in one write
WRITE_HIGH = 256 * 1024  # the transport pauses us past this ...
WRITE_LOW = 64 * 1024  # ... and resumes us below this
CUT_LOG_INTERVAL = 5.0  # seconds between two lines about cut-off peers, per reason

_CUT_LOGS: dict[str, Throttle] = {}


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


class Expiring(Protocol):
    """What a :class:`DeadlineWheel` holds: due at ``deadline_since + deadline_timeout``."""

    deadline_slot: float | None  # the wheel's bucket it is in (the wheel's to set)
    deadline_since: float  # last touched (loop time)
    deadline_timeout: float

    def deadline_expired(self) -> None: ...


MIN_GRANULE = 1 / 64  # seconds
MAX_GRANULE = 8.0


def _granule(timeout: float) -> float:
    """A power of two near timeout/16: a deadline fires at most that late."""
    granule = MIN_GRANULE
    while granule * 32 <= timeout and granule < MAX_GRANULE:
        granule *= 2
    return granule


class DeadlineWheel:
    """Deadlines of many connections on a few loop timers.

    A deadline goes into the bucket of its due time rounded up to its granule
    (about a sixteenth of its timeout, a power of two), and each bucket in use
    has one timer. Touching moves nothing: when a bucket fires, an entry that
    was touched meanwhile goes into the bucket of its new due time, one that
    was not expires. So 19,000 idle connections with a 3-minute timeout cost
    about 32 timers and a set entry each, instead of a timer each.
    """

    __slots__ = ("_buckets", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # due time -> (its entries, its timer, the key itself: shared by the entries, not a float each)
        self._buckets: dict[float, tuple[set[Expiring], asyncio.TimerHandle, float]] = {}

    def add(self, item: Expiring) -> None:
        granule = _granule(item.deadline_timeout)
        key = math.ceil((item.deadline_since + item.deadline_timeout) / granule) * granule
        entry = self._buckets.get(key)
        if entry is None:
            entry = self._buckets[key] = (set(), self._loop.call_at(key, self._fire, key), key)
        entry[0].add(item)
        item.deadline_slot = entry[2]

    def discard(self, item: Expiring) -> None:
        key = item.deadline_slot
        if key is None:
            return
        item.deadline_slot = None
        entry = self._buckets.get(key)
        if entry is None:
            return  # its bucket is firing
        bucket, timer, _ = entry
        bucket.discard(item)
        if not bucket:
            timer.cancel()
            del self._buckets[key]

    def _fire(self, key: float) -> None:
        entry = self._buckets.pop(key, None)
        if entry is None:
            return
        now = self._loop.time()
        for item in entry[0]:
            if item.deadline_slot != key:
                continue  # discarded while this bucket fired
            item.deadline_slot = None
            if now - item.deadline_since >= item.deadline_timeout:
                item.deadline_expired()
            else:
                self.add(item)

    def __len__(self) -> int:
        return sum(len(entry[0]) for entry in self._buckets.values())

    @property
    def timers(self) -> int:
        return len(self._buckets)


class _Flusher:
    """Writes, once per event-loop turn, what each connection coalesced in it."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[FrameConnection] = []
        self._scheduled = False

    def add(self, conn: FrameConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            try:
                conn._write_batch()
            except Exception:  # one transport's failure must not leave the others unwritten
                log.exception("writing to %s failed; closing it", conn.peer)
                conn.abort()


class LoopServices:
    """What the connections of one event loop share: the write flusher and the deadline wheel."""

    __slots__ = ("__weakref__", "deadlines", "flusher")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.flusher = _Flusher(loop)
        self.deadlines = DeadlineWheel(loop)


_SERVICES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopServices] = weakref.WeakKeyDictionary()


def loop_services(loop: asyncio.AbstractEventLoop | None = None) -> LoopServices:
    if loop is None:
        loop = asyncio.get_running_loop()
    services = _SERVICES.get(loop)
    if services is None:
        services = _SERVICES[loop] = LoopServices(loop)
    return services


class FrameConnection(asyncio.Protocol):
    """Bytes in, frames out; frames in, bytes out."""

    __slots__ = (
        "__weakref__",
        "_batch",
        "_batch_size",
        "_log",
        "_lost",
        "_services",
        "closing",
        "decoder",
        "flow",
        "max_write_buffer",
        "peer",
        "transport",
        "write_stall_timeout",
    )

    logger = log

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME,
        max_write_buffer: int = 1 << 20,
        write_stall_timeout: float | None = None,
    ):
        self.decoder = FrameDecoder(max_frame_size)
        self.max_write_buffer = max_write_buffer
        self.write_stall_timeout = write_stall_timeout
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._log: PeerLogger | None = None
        self.closing = False
        # None until someone asks (lost), or True: lost before anyone asked.
        self._lost: asyncio.Future[None] | bool | None = None
        self.flow = _Flow()
        self._services = loop_services()
        # Frames written this loop turn, not yet handed to the transport (see _put).
        self._batch: list[bytes] | None = None
        self._batch_size = 0

    @property
    def log(self) -> PeerLogger:
        """Lines about this connection, prefixed with :attr:`log_prefix` (made per use, not
        kept, unless a subclass sets one)."""
        logger = self._log
        return PeerLogger(self.logger, self.log_prefix) if logger is None else logger

    @log.setter
    def log(self, logger: PeerLogger) -> None:
        self._log = logger

    @property
    def log_prefix(self) -> str:
        return self.peer

    @property
    def lost(self) -> asyncio.Future[None]:
        """Done once the connection is lost."""
        lost = self._lost
        if isinstance(lost, asyncio.Future):
            return lost
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if lost:
            future.set_result(None)
        self._lost = future
        return future

    @property
    def dispatch_paused(self) -> bool:
        return self.flow.dispatch_paused

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        self.peer = format_peer(transport.get_extra_info("peername"))
        # The transport holds at most WRITE_HIGH (+ one chunk); the rest waits
        # in the outbox (see the module docstring).
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.on_connect()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.decoder.feed(data)
        self.on_bytes_received()
        self._dispatch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self._stop_flow()
        lost = self._lost
        if isinstance(lost, asyncio.Future):
            if not lost.done():
                lost.set_result(None)
        else:
            self._lost = True
        self.on_disconnect(exc)

    def pause_writing(self) -> None:
        self.flow.write_paused = True
        self._watch_stall()

    def resume_writing(self) -> None:
        self.flow.write_paused = False
        self._flush()

    # -- hooks ----------------------------------------------------------------

    def on_connect(self) -> None:
        pass

    def on_bytes_received(self) -> None:
        pass

    def on_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    def on_disconnect(self, exc: Exception | None) -> None:
        pass

    # -- reading: dispatch and its limits ---------------------------------------

    def _dispatch(self) -> None:
        """Hand the decoder's complete frames to on_frame, in order, until paused."""
        completed = False
        while not self.closing and not self.flow.dispatch_paused:
            try:
                frame = self.decoder.next_frame()
            except ProtocolError as exc:
                ERRORS.labels("protocol").inc()
                self.log.warning("protocol error: %s; closing the connection", exc)
                self.abort()
                return
            if frame is None:
                break
            completed = True
            try:
                self.on_frame(frame)
            except BadBody as exc:
                ERRORS.labels("bad_body").inc()
                self.log.warning("bad frame: %s; closing the connection", exc)
                self.abort()
                return
        self._note_partial_frame(completed)

    def pause_dispatch(self) -> None:
        """Dispatch nothing more, and stop reading, until :meth:`resume_dispatch`."""
        if self.flow.dispatch_paused:
            return
        self.flow.dispatch_paused = True
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def resume_dispatch(self) -> None:
        """Dispatch the frames read meanwhile, in order, then read again (unless paused anew)."""
        if not self.flow.dispatch_paused or self.closing:
            return
        self.flow.dispatch_paused = False
        self._dispatch()
        if not self.flow.dispatch_paused and not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def watch_partial_frames(self, timeout: float) -> None:
        """From now on a started frame must be complete within ``timeout`` seconds."""
        self.flow.partial_timeout = timeout
        self._note_partial_frame(False)

    def _note_partial_frame(self, completed: bool) -> None:
        flow = self.flow
        if flow.partial_timeout is None:
            return
        if flow.dispatch_paused or self.closing or self.decoder.buffered == 0:
            flow.partial_since = None  # the timer, if armed, finds nothing to do
            return
        loop = asyncio.get_running_loop()
        if completed or flow.partial_since is None:
            flow.partial_since = loop.time()  # a new frame started
        if flow.partial_timer is None:
            flow.partial_timer = loop.call_at(flow.partial_since + flow.partial_timeout, self._check_partial)

    def _check_partial(self) -> None:
        flow = self.flow
        flow.partial_timer = None
        if flow.partial_since is None or flow.partial_timeout is None or self.closing:
            return
        loop = asyncio.get_running_loop()
        due = flow.partial_since + flow.partial_timeout
        if loop.time() < due:
            flow.partial_timer = loop.call_at(due, self._check_partial)
            return
        self.cut_off(
            "partial_frame_timeout",
            "frame not finished in %.0f s (%d bytes of it received)",
            flow.partial_timeout,
            self.decoder.buffered,
        )

    # -- writing ----------------------------------------------------------------

    def send(self, command_id: int, message: Message, seq_num: int = 0) -> bool:
        return self.send_raw(command_id, message.SerializeToString(), seq_num)

    def send_raw(self, command_id: int, body: bytes, seq_num: int = 0) -> bool:
        """Queue one unsolicited frame; False if the connection is gone or was just cut off."""
        if self.transport is None or self.closing:
            return False
        return self._put(_encode_shared(command_id, body, seq_num), True)

    def send_frame(self, frame: bytes) -> bool:
        """:meth:`send_raw` of a frame already encoded (one encoding for a fan-out to many)."""
        if self.transport is None or self.closing:
            return False
        return self._put(frame, True)

    async def reply(self, command_id: int, message: Message, seq_num: int = 0) -> bool:
        return await self.reply_raw(command_id, message.SerializeToString(), seq_num)

    async def reply_raw(self, command_id: int, body: bytes, seq_num: int = 0) -> bool:
        """Queue the answer to a request, whatever its size, once no earlier reply is held.

        False if the connection is gone (or closing) by then.
        """
        if self.transport is None or self.closing:
            return False
        flow = self.flow
        if flow.outbox.replies or flow.turn_taken or flow.reply_waiters:
            await self._reply_turn()
            flow.turn_taken = False
            if self.transport is None or self.closing:
                self._next_turn()
                return False
        return self._put(encode_frame(command_id, body, seq_num), False)

    def _put(self, frame: bytes, unsolicited: bool) -> bool:
        """Hand ``frame`` on: coalesced into this turn's write while nothing waits, else the outbox.

        Invariant: frames are coalesced only while the outbox is empty and writing is not
        paused, and nothing else writes while some are (the outbox path writes them first).
        """
        flow = self.flow
        size = len(frame)
        if not flow.outbox and not flow.write_paused and size <= CHUNK:
            batch = self._batch
            if batch is None:
                self._batch = [frame]
                self._batch_size = size
                self._services.flusher.add(self)
                return True
            if self._batch_size + size <= CHUNK:
                batch.append(frame)
                self._batch_size += size
                return True
            self._write_batch()  # a full chunk: handed over now, not at the end of the turn
            if self.transport is None:
                return False
            if not flow.write_paused:
                self._batch = [frame]
                self._batch_size = size
                self._services.flusher.add(self)
                return True
        elif self._batch:
            self._write_batch()  # what was coalesced goes first
            if self.transport is None:
                return False
        outbox = flow.outbox
        if outbox is _NO_OUTBOX:
            outbox = flow.outbox = Outbox()
        outbox.put(frame, unsolicited=unsolicited)
        if unsolicited and outbox.unsolicited > self.max_write_buffer:
            self.cut_off("slow_reader", "peer is not reading (%d bytes unsent)", outbox.queued)
            return False
        self._flush()
        return True

    def _write_batch(self) -> None:
        """Hand what this turn coalesced to the transport, as one write."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        transport = self.transport
        if transport is None or not batch:
            return
        transport.write(batch[0] if len(batch) == 1 else b"".join(batch))

    async def _reply_turn(self) -> None:
        flow = self.flow
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if flow.reply_waiters is None:
            flow.reply_waiters = deque()
        flow.reply_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed the turn, then cancelled
                flow.turn_taken = False
                self._next_turn()
            elif flow.reply_waiters is not None and waiter in flow.reply_waiters:
                flow.reply_waiters.remove(waiter)
            raise

    def _next_turn(self) -> None:
        """Hand the reply slot to the oldest waiting reply, if it is free."""
        flow = self.flow
        if flow.outbox.replies or flow.turn_taken:
            return
        while flow.reply_waiters:
            waiter = flow.reply_waiters.popleft()
            if not waiter.done():
                flow.turn_taken = True
                waiter.set_result(None)
                return

    def _flush(self) -> None:
        """Feed the outbox to the transport until it pauses us or nothing is left."""
        flow = self.flow
        transport = self.transport
        if transport is None:
            return
        outbox = flow.outbox
        while outbox and not flow.write_paused:
            piece = outbox.take(CHUNK)
            if piece is None:
                break
            flow.last_progress = asyncio.get_running_loop().time()
            transport.write(piece)
            if self.transport is None:  # the write failed and the connection is gone
                return
        if not outbox and outbox is flow.outbox:
            flow.outbox = _NO_OUTBOX  # drained: its queue goes (an idle connection holds none)
        if not outbox.replies:
            self._next_turn()
        if not outbox and flow.close_when_flushed and self.transport is not None:
            flow.close_when_flushed = False
            self.transport.close()

    def _watch_stall(self) -> None:
        flow = self.flow
        if self.write_stall_timeout is None or flow.stall_timer is not None or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        flow.last_progress = loop.time()
        flow.stall_size = self.transport.get_write_buffer_size()
        flow.stall_timer = loop.call_later(self.write_stall_timeout / 4, self._check_stall)

    def _check_stall(self) -> None:
        """While bytes wait for the peer: cut it off after write_stall_timeout without progress."""
        flow = self.flow
        flow.stall_timer = None
        transport = self.transport
        if transport is None or self.write_stall_timeout is None:
            return
        if self.closing and not flow.close_when_flushed:
            return  # aborted: connection_lost follows
        size = transport.get_write_buffer_size()
        if not flow.write_paused and not flow.outbox:
            return  # all handed over; the transport is below its low-water mark
        loop = asyncio.get_running_loop()
        now = loop.time()
        if size < flow.stall_size:  # while paused we write nothing: less is progress
            flow.last_progress = now
        flow.stall_size = size
        if now - flow.last_progress >= self.write_stall_timeout:
            self.cut_off(
                "write_stall",
                "peer read nothing for %.0f s (%d bytes unsent)",
                self.write_stall_timeout,
                flow.outbox.queued + size,
            )
            return
        flow.stall_timer = loop.call_later(self.write_stall_timeout / 4, self._check_stall)

    def _stop_flow(self) -> None:
        """The connection is gone or being dropped: timers off, waiting replies told."""
        flow = self.flow
        for timer in (flow.partial_timer, flow.stall_timer):
            if timer is not None:
                timer.cancel()
        flow.partial_timer = flow.stall_timer = None
        self._batch = None
        flow.outbox.clear()
        flow.outbox = _NO_OUTBOX
        flow.turn_taken = False
        while flow.reply_waiters:
            waiter = flow.reply_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- closing ----------------------------------------------------------------

    def cut_off(self, reason: str, message: str, *args: object) -> None:
        """Drop a peer that broke a flow rule: counted by ``reason``, logged once per burst."""
        ERRORS.labels(reason).inc()
        throttle = _CUT_LOGS.setdefault(reason, Throttle(CUT_LOG_INTERVAL))
        if throttle.ready():
            self.log.warning(f"{reason}: {message}; cutting it off%s", *args, throttle.more())
        self.abort()

    def close(self) -> None:
        """Close after the queued bytes are flushed."""
        if self.transport is not None and not self.closing:
            self.closing = True
            if self._batch:
                self._write_batch()  # the outbox is empty while frames are coalesced
                if self.transport is None:
                    return
            if self.flow.outbox:
                self.flow.close_when_flushed = True
            else:
                self.transport.close()

    def abort(self) -> None:
        """Close now, dropping whatever is unsent."""
        self.closing = True
        self.flow.close_when_flushed = False
        self._stop_flow()
        if self.transport is not None:
            self.transport.abort()


# Always empty: what a connection's outbox is while nothing waits (never put into).
_NO_OUTBOX = Outbox()

_last_encoded: tuple[int, bytes, int, bytes] | None = None


def _encode_shared(command_id: int, body: bytes, seq_num: int) -> bytes:
    """encode_frame, reusing the last frame when the same body goes out again (a push to every
    connection of a group: one encoding, not one per connection). The same body, not only the
    same object: a protobuf bytes field is a new object on every access."""
    global _last_encoded
    last = _last_encoded
    if (
        last is not None
        and last[0] == command_id
        and last[2] == seq_num
        and (last[1] is body or (len(last[1]) == len(body) and last[1] == body))
    ):
        return last[3]
    frame = encode_frame(command_id, body, seq_num)
    if len(body) >= SHARE_MIN and type(body) is bytes:  # immutable: the same object, the same bytes
        _last_encoded = (command_id, body, seq_num, frame)
    return frame


SHARE_MIN = 64  # a smaller body costs less to encode again than to remember


class _Flow:
    """A connection's flow state: what it may read, what it holds to write, its timers."""

    __slots__ = (
        "close_when_flushed",
        "dispatch_paused",
        "last_progress",
        "outbox",
        "partial_since",
        "partial_timeout",
        "partial_timer",
        "reply_waiters",
        "stall_size",
        "stall_timer",
        "turn_taken",
        "write_paused",
    )

    def __init__(self) -> None:
        self.dispatch_paused = False
        self.partial_timeout: float | None = None
        self.partial_since: float | None = None
        self.partial_timer: asyncio.TimerHandle | None = None
        self.outbox = _NO_OUTBOX  # a real one on the first frame that must wait
        self.write_paused = False
        self.reply_waiters: deque[asyncio.Future[None]] | None = None  # made when one must wait
        self.turn_taken = False  # a woken reply owns the slot until it queues itself
        self.close_when_flushed = False
        self.last_progress = 0.0
        self.stall_size = 0
        self.stall_timer: asyncio.TimerHandle | None = None
