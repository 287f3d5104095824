"""A worker's queue, fair across conversations: sans-IO, time passed in.

One FIFO per conversation, served round-robin: a batch takes one entry from
each waiting conversation in turn, so a conversation that floods fills its
own FIFO, not the batches of the others. Admission is bounded three ways:

* per conversation: at most ``share`` entries and ``share_bytes`` bytes of
  message bodies (a flood is refused ``conversation_full``);
* per worker: at most ``capacity`` entries and ``max_bytes`` bytes
  (``worker_full``), so memory stays bounded however many conversations;
* in time, at admission (``expected_wait``): with a :class:`CommitPace`, an
  entry is refused at once when the entries served before it would take
  longer than ``max_wait`` to commit at the pace commits recently went
  (batches ahead x seconds per batch, a transaction running longer than that
  counting as the pace): work that cannot be done in time is refused now, not
  queued. Round-robin puts a new conversation's entry ahead of a flood's, so
  what is ahead is counted per conversation;
* in time, after admission: an entry that has waited ``max_wait`` seconds is
  handed back by :meth:`FairQueue.expire` (the pace was misjudged, or the
  storage stalled: its sender is better refused now than answered late).

A conversation below its share is refused only when the whole worker is
full. Order within a conversation is kept: entries leave (served or
expired) in the order they came. An entry marked ``barrier`` (an ordered
job that is not a message) leaves alone, in a batch of its own, once
everything before it in its conversation has left.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

CONVERSATION_FULL = "conversation_full"
WORKER_FULL = "worker_full"
EXPECTED_WAIT = "expected_wait"
#: Admission aims at this fraction of max_wait: the pace is an estimate, and
#: what it admits should not then wait out max_wait and be refused after all.
ADMISSION_HEADROOM = 0.75


class CommitPace:
    """How long a group-commit worker takes to drain its queue (sans-IO, time passed in).

    The worker reports each transaction's start and end; the pace is a
    moving average of the seconds one batch takes (every batch: at overload
    they are full, which is when the estimate matters). A transaction still
    running for longer than that is expected to overrun as much again (the
    storage slowed down or stalled), so a stalled worker refuses instead of
    queueing.
    """

    def __init__(self, batch_size: int, weight: float = 0.2) -> None:
        if batch_size < 1 or not 0 < weight <= 1:
            raise ValueError("CommitPace: batch_size >= 1, 0 < weight <= 1")
        self.batch_size = batch_size
        self.weight = weight
        self.batch_seconds: float | None = None  # None until a first batch committed
        self._started: float | None = None

    @property
    def busy(self) -> bool:
        return self._started is not None

    def started(self, now: float) -> None:
        self._started = now

    def finished(self, now: float) -> None:
        if self._started is None:
            return
        took = max(0.0, now - self._started)
        self._started = None
        if self.batch_seconds is None:
            self.batch_seconds = took
        else:
            self.batch_seconds += self.weight * (took - self.batch_seconds)

    def expected_wait(self, depth: int, now: float) -> float:
        """Seconds an entry queued now behind ``depth`` others waits for its batch to start.

        The transaction running ends when batches usually do, or, running
        longer than that, is expected to overrun as much again as it has (so
        a stalled worker soon refuses everything); then go the full batches
        of the entries ahead; the entry's own batch is not queueing.
        """
        per_batch = self.batch_seconds or 0.0
        running = 0.0
        if self._started is not None:
            elapsed = now - self._started
            # Overran: as much again as it overran so far (a stall of seconds
            # is refused once it has overrun by max_wait; a slow box's longer
            # batches are not taken for one).
            running = abs(per_batch - elapsed)
        return running + depth // self.batch_size * per_batch


@dataclass(slots=True)
class _Entry(Generic[T]):
    item: T
    size: int
    at: float
    barrier: bool


@dataclass(slots=True)
class _Conversation(Generic[T]):
    entries: deque[_Entry[T]] = field(default_factory=deque)
    size: int = 0


class FairQueue(Generic[T]):
    def __init__(
        self,
        capacity: int,
        max_bytes: int,
        share: int,
        share_bytes: int,
        max_wait: float,
        pace: CommitPace | None = None,
    ) -> None:
        if min(capacity, max_bytes, share, share_bytes) < 1 or max_wait <= 0:
            raise ValueError("FairQueue bounds must be positive")
        self.pace = pace
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.share = min(share, capacity)
        self.share_bytes = min(share_bytes, max_bytes)
        self.max_wait = max_wait
        # Service order: the first waits longest for its turn.
        self._conversations: OrderedDict[Hashable, _Conversation[T]] = OrderedDict()
        self._entries = 0
        self._bytes = 0

    def __len__(self) -> int:
        return self._entries

    def qsize(self) -> int:
        """Entries waiting (as asyncio.Queue names it, for the depth gauge)."""
        return self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def conversations(self) -> int:
        return len(self._conversations)

    def expected_wait(self, now: float) -> float:
        """Seconds an entry queued now would wait (0 when idle or without a pace)."""
        pace = self.pace
        if pace is None or not (self._entries or pace.busy):
            return 0.0
        return pace.expected_wait(self._entries, now)

    def waiting(self, key: Hashable) -> int:
        conv = self._conversations.get(key)
        return len(conv.entries) if conv is not None else 0

    def push(self, key: Hashable, item: T, now: float, size: int = 0, *, barrier: bool = False) -> str | None:
        """Queue ``item`` for conversation ``key``; None, or why it is refused.

        An empty conversation (or worker) takes one entry whatever its size,
        so a body bigger than a share still gets through alone.
        """
        conv = self._conversations.get(key)
        if conv is not None and (len(conv.entries) >= self.share or conv.size + size > self.share_bytes):
            return CONVERSATION_FULL
        if self._entries >= self.capacity or (self._entries and self._bytes + size > self.max_bytes):
            return WORKER_FULL
        pace = self.pace
        if pace is not None and (self._entries or pace.busy):
            # Served round-robin: before this entry go its conversation's own
            # and, from each other conversation (entries it has or will have
            # by then), one per round: at most one more than those.
            own = len(conv.entries) if conv is not None else 0
            others = len(self._conversations) - (conv is not None)
            ahead = own + (own + 1) * others
            if pace.expected_wait(ahead, now) > self.max_wait * ADMISSION_HEADROOM:
                return EXPECTED_WAIT
        if conv is None:
            conv = self._conversations[key] = _Conversation()
        conv.entries.append(_Entry(item, size, now, barrier))
        conv.size += size
        self._entries += 1
        self._bytes += size
        return None

    def next_batch(self, limit: int) -> list[T]:
        """Up to ``limit`` entries, one per conversation per round; or one barrier alone.

        The conversation first in line whose next entry is a barrier gets it
        alone; a barrier further back waits (its conversation skips this
        batch) and moves up as the conversations served go to the back.
        """
        first = next(iter(self._conversations), None)
        if first is None:
            return []
        if self._conversations[first].entries[0].barrier:
            return [self._pop(first)]
        batch: list[T] = []
        while len(batch) < limit:
            took = False
            for key in list(self._conversations):
                if len(batch) >= limit:
                    break
                conv = self._conversations.get(key)
                if conv is None or conv.entries[0].barrier:
                    continue
                batch.append(self._pop(key))
                took = True
            if not took:
                break
        return batch

    def expire(self, now: float) -> list[T]:
        """The entries that have waited ``max_wait`` or longer, taken out (oldest of each first)."""
        expired: list[T] = []
        if not self._entries:
            return expired
        deadline = now - self.max_wait
        for key, conv in list(self._conversations.items()):
            entries = conv.entries
            while entries and entries[0].at <= deadline:
                entry = entries.popleft()
                self._forget(conv, entry)
                expired.append(entry.item)
            if not entries:
                del self._conversations[key]
        return expired

    def drain(self) -> list[T]:
        """Everything still queued, taken out (order kept per conversation)."""
        items = [e.item for conv in self._conversations.values() for e in conv.entries]
        self._conversations.clear()
        self._entries = 0
        self._bytes = 0
        return items

    def _pop(self, key: Hashable) -> T:
        conv = self._conversations[key]
        entry = conv.entries.popleft()
        self._forget(conv, entry)
        if conv.entries:
            self._conversations.move_to_end(key)  # its next entry waits for the next round
        else:
            del self._conversations[key]
        return entry.item

    def _forget(self, conv: _Conversation[T], entry: _Entry[T]) -> None:
        conv.size -= entry.size
        self._entries -= 1
        self._bytes -= entry.size
