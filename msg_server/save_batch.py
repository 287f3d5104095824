"""Saving messages in batches: many DbSaveMsgReq per DB_SAVE_MSGS frame, per db_proxy link.

``msg_data`` hands :meth:`SaveBatcher.save` its request synchronously, before
it awaits anything, and awaits the future it gets back. What was handed in
during one event-loop turn goes to that link's db_proxy at the end of the
turn as one DB_SAVE_MSGS request (several when more than
``save_batch_max_items`` or ``save_batch_max_bytes`` gathered), in the order
it was handed in: a connection's messages, and a conversation's, stay in
order, as each conversation always picks the same link (db_links.py). Each
item's outcome answers its own future: the DbSaveMsgRes, or the ImError a
single DB_SAVE_MSG would have raised. A link that drops, or a request that
times out, fails every item of the frame (Unavailable), as it would fail a
single call.

Admission: the saves outstanding on one link (queued here or sent and not
answered) are bounded in entries and bytes, and in age: while the oldest
frame still unanswered was sent more than ``max_save_wait`` ago, the
db_proxy is not keeping up and what comes now would be acked late. Past any
of these a message is refused at once with Overloaded (counted by reason:
entries, bytes, slow) rather than queued behind work that could not be done
in time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import Counter

from common.commands import Rpcs
from common.errors import Bug, ImError, Overloaded, Unavailable, from_code
from common.link import Upstream
from common.pb import internal_pb2
from msg_server.metrics import MESSAGES_ACKED

if TYPE_CHECKING:
    from msg_server.config import MsgServerConfig
    from msg_server.db_links import DbLinks

SAVES_REFUSED = Counter(
    "imcluster_gateway_saves_refused",
    "Messages a gateway refused at once, before db_proxy heard of them, because too many saves were "
    "outstanding on their db_proxy link, by reason (entries, bytes, slow: the oldest unanswered frame "
    "is older than max_save_wait).",
    ["reason"],
)
SAVE_BATCHES = Counter("imcluster_gateway_save_batches", "DB_SAVE_MSGS requests a gateway sent.")
SAVE_BATCH_ITEMS = Counter(
    "imcluster_gateway_save_batch_items", "Messages a gateway sent in DB_SAVE_MSGS requests."
)
_REFUSED_ENTRIES = SAVES_REFUSED.labels("entries")
_REFUSED_BYTES = SAVES_REFUSED.labels("bytes")
_REFUSED_SLOW = SAVES_REFUSED.labels("slow")

#: The tag of DbSaveMsgBatch.items (field 1, length-delimited).
_ITEMS_TAG = b"\x0a"


@dataclass(frozen=True, slots=True)
class SaveLimits:
    max_items: int = 256  # per frame
    max_bytes: int = 1 << 20  # per frame (one item always fits)
    max_outstanding: int = 4096  # per link
    max_outstanding_bytes: int = 16 << 20  # per link
    max_wait: float = 3.0  # seconds the oldest unanswered frame of a link may have waited

    @classmethod
    def of(cls, config: MsgServerConfig) -> SaveLimits:
        return cls(
            config.save_batch_max_items,
            config.save_batch_max_bytes,
            config.max_saves_outstanding,
            config.max_save_bytes_outstanding,
            config.max_save_wait,
        )


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_batch(bodies: list[bytes]) -> bytes:
    """A DbSaveMsgBatch from its items serialized already (what protobuf would write)."""
    parts: list[bytes] = []
    for body in bodies:
        parts += (_ITEMS_TAG, _varint(len(body)), body)
    return b"".join(parts)


class _Sent:
    """A frame sent and (until ``answered``) not answered yet."""

    __slots__ = ("answered", "at")

    def __init__(self, at: float) -> None:
        self.at = at
        self.answered = False


def _copy(exc: ImError) -> ImError:
    """One exception object per waiting handler: a shared one would pile up their tracebacks."""
    return from_code(exc.code, exc.message)


class SaveBatcher:
    """The saves of one db_proxy link, sent once per loop turn in DB_SAVE_MSGS frames."""

    def __init__(self, upstream: Upstream, timeout: float, limits: SaveLimits = SaveLimits()) -> None:
        self.upstream = upstream
        self.timeout = timeout
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.outstanding = 0  # items queued here or sent and not answered
        self.outstanding_bytes = 0
        self._bodies: list[bytes] = []
        self._futures: list[asyncio.Future[internal_pb2.DbSaveMsgRes]] = []
        self._scheduled = False
        self._sent: deque[_Sent] = deque()  # in send order; answered ones leave from the left

    def oldest_wait(self, now: float) -> float:
        """Seconds the oldest frame still unanswered has waited (0: none)."""
        sent = self._sent
        while sent and sent[0].answered:
            sent.popleft()
        return now - sent[0].at if sent else 0.0

    def save(self, req: internal_pb2.DbSaveMsgReq) -> asyncio.Future[internal_pb2.DbSaveMsgRes]:
        """Queue ``req`` for this turn's frame: the future of its outcome.

        Not a coroutine: it is queued before this returns. Raises Overloaded
        at once when the link's saves outstanding are at their bound.
        """
        body = req.SerializeToString()
        size = len(body)
        limits = self.limits
        if self.outstanding >= limits.max_outstanding:
            _REFUSED_ENTRIES.inc()
            raise Overloaded(f"{self.outstanding} messages outstanding on {self.upstream.name}")
        if self.outstanding and self.outstanding_bytes + size > limits.max_outstanding_bytes:
            _REFUSED_BYTES.inc()
            raise Overloaded(f"{self.outstanding_bytes} message bytes outstanding on {self.upstream.name}")
        if self._sent and self.oldest_wait(self.loop.time()) > limits.max_wait:
            _REFUSED_SLOW.inc()
            raise Overloaded(f"{self.upstream.name} has not answered for {limits.max_wait:g} s")
        future: asyncio.Future[internal_pb2.DbSaveMsgRes] = self.loop.create_future()
        self._bodies.append(body)
        self._futures.append(future)
        self.outstanding += 1
        self.outstanding_bytes += size
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._send)
        return future

    def _send(self) -> None:
        """Send what this turn gathered, in order, in frames within the bounds."""
        self._scheduled = False
        bodies, futures = self._bodies, self._futures
        self._bodies, self._futures = [], []
        max_items, max_bytes = self.limits.max_items, self.limits.max_bytes
        n = len(bodies)
        start = 0
        while start < n:
            end, size = start + 1, len(bodies[start])
            while end < n and end - start < max_items and size + len(bodies[end]) <= max_bytes:
                size += len(bodies[end])
                end += 1
            self._send_frame(bodies[start:end], futures[start:end], size)
            start = end

    def _send_frame(
        self, bodies: list[bytes], futures: list[asyncio.Future[internal_pb2.DbSaveMsgRes]], size: int
    ) -> None:
        SAVE_BATCHES.inc()
        SAVE_BATCH_ITEMS.inc(len(bodies))
        try:
            reply = self.upstream.request(Rpcs.DB_SAVE_MSGS, encode_batch(bodies), self.timeout)
        except ImError as exc:  # the link is down, or has too many requests in flight
            self._release(len(futures), size)
            _fail(futures, exc)
            return
        sent = _Sent(self.loop.time())
        self._sent.append(sent)
        reply.add_done_callback(partial(self._answered, sent, futures, size))

    def _release(self, items: int, size: int) -> None:
        self.outstanding -= items
        self.outstanding_bytes -= size

    def _answered(
        self,
        sent: _Sent,
        futures: list[asyncio.Future[internal_pb2.DbSaveMsgRes]],
        size: int,
        reply: asyncio.Future[internal_pb2.DbSaveMsgBatchRes],
    ) -> None:
        self._release(len(futures), size)
        sent.answered = True
        if reply.cancelled():
            _fail(futures, Unavailable("the save was cancelled"))
            return
        error = reply.exception()
        if error is not None:
            _fail(futures, error if isinstance(error, ImError) else Bug(f"saving failed: {error!r}"))
            return
        results = reply.result().results
        acked = 0
        for i, future in enumerate(futures):
            if future.done():
                continue  # its handler was cancelled (the client left)
            if i >= len(results):
                future.set_exception(Bug(f"DB_SAVE_MSGS answered {len(results)} of {len(futures)} items"))
                continue
            outcome = results[i]
            if outcome.HasField("saved"):
                future.set_result(outcome.saved)
                acked += 1
            elif outcome.HasField("error"):
                future.set_exception(from_code(outcome.error.code, outcome.error.message))
            else:
                future.set_exception(Bug("DB_SAVE_MSGS answered an item with neither outcome"))
        # Counted here, once a frame, not once a message: each of these is acked by its
        # handler in the turn that follows (msg_data has nothing left to await).
        if acked:
            MESSAGES_ACKED.inc(acked)


def _fail(futures: list[asyncio.Future[internal_pb2.DbSaveMsgRes]], exc: ImError) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(_copy(exc))


class SaveBatches:
    """A gateway's batchers, one per db_proxy link (made on first use)."""

    def __init__(self, timeout: float, limits: SaveLimits) -> None:
        self.timeout = timeout
        self.limits = limits
        self._by_link: dict[str, SaveBatcher] = {}

    def for_link(self, upstream: Upstream) -> SaveBatcher:
        batcher = self._by_link.get(upstream.name)
        if batcher is None or batcher.upstream is not upstream:
            batcher = self._by_link[upstream.name] = SaveBatcher(upstream, self.timeout, self.limits)
        return batcher


def save_batches(db: DbLinks, config: MsgServerConfig) -> SaveBatches:
    """The gateway's batchers (kept on its DbLinks, made on first use)."""
    batches = db.save_batches
    if batches is None:
        batches = db.save_batches = SaveBatches(config.request_timeout, SaveLimits.of(config))
    return batches
