"""Exactly once, in msg_id order: what one client connection has been pushed.

Sans-IO. A conversation's ids are consecutive (db_proxy numbers them per
conversation), so for each conversation a connection keeps the highest id it
has, and a push is one of:

* :data:`WRITE`: the next id;
* :data:`DUPLICATE`: it has it already (a redelivery after a failover, a
  retry whose first try did get through);
* :class:`Gap`: ids are missing in between (pushed through a route server
  that died, or overtaken by a retry): the caller fetches them from storage
  and writes them, in order, before this one. The first push of a
  conversation on a connection has no baseline: the client synced from
  storage when it logged in, but the ids just before this one may have been
  stored since and still be on their way (or be retried later, after it):
  they come as a ``first`` gap, of which the caller writes those stored
  after the login.

The connection's own messages are not pushed to it (it sent them): the
gateway calls :meth:`PushOrder.raise_to` when it relays their ack, and when a
push names the connection as its origin. Such an id may be ahead of the
highest (a peer's message committed just before it is still on its way): it
is kept as "ahead" rather than raising the highest over the peer's message,
which would then be dropped as a duplicate. Ahead ids are kept as ranges (a
client that sends a burst while the peer is silent is one range).

Bounded: at most ``max_conversations`` per connection (least recently used
forgotten: its next push is a first again), a first looks back at most
``max_gap`` ids, a gap of at most ``max_fill`` ids fetched (older ones
skipped, counted), at most ``max_ahead`` ahead ranges. Past those, the oldest
hole is no longer waited for but "owed": the hole's late push is still
written, and the next push above it fetches it first (the ids below an acked
one are stored: db_proxy commits a conversation in order). At most
``max_owed`` owed ranges (older ones skipped, counted).
A connection allocates nothing until its first push (:class:`PushOrder` is
made lazily by its owner): an idle connection does not grow.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

MAX_CONVERSATIONS = 256
MAX_GAP = 100  # a first push's look back: ids stored since the login, on their way still
# A gap on a connection that stayed up (its gateway frozen, a route server dead) is
# fetched whole up to this: the client does not sync again while it is connected, so
# what is skipped here it only sees at its next login (counted). 2,000 ids is 200 s of
# a conversation at 10 msg/s, 20 MSG_BY_ID requests of 100.
MAX_FILL = 2000
MAX_AHEAD = 16
MAX_OWED = 64


@dataclass(frozen=True, slots=True)
class Write:
    """Write it: the next one, or a first."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The connection has it already: drop it."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Write ``missing`` (fetched from storage, ascending) first, then this one.

    ``skipped``: ids older than those, too many to fetch (or owed by a
    conversation forgotten to stay bounded); they are not written, the caller
    counts them. ``missing`` may be empty then.
    ``first``: the connection had no baseline: ``missing`` are the ids just
    before, which it lacks only if they were stored after it logged in (the
    caller writes those, and takes the others as synced at login).
    """

    missing: tuple[int, ...]
    skipped: int = 0
    first: bool = False


WRITE = Write()
DUPLICATE = Duplicate()
Decision = Write | Duplicate | Gap


def _discard(ranges: list[list[int]], msg_id: int) -> bool:
    """Take ``msg_id`` out of sorted disjoint [lo, hi] ranges; False if it was not in them."""
    for i, (lo, hi) in enumerate(ranges):
        if lo <= msg_id <= hi:
            if lo == hi:
                ranges.pop(i)
            elif msg_id == lo:
                ranges[i][0] = lo + 1
            elif msg_id == hi:
                ranges[i][1] = hi - 1
            else:
                ranges[i : i + 1] = [[lo, msg_id - 1], [msg_id + 1, hi]]
            return True
    return False


MAX_UNACKED = 64  # unacked sends remembered per connection (16-byte digests)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class _Seen:
    """One conversation on one connection."""

    __slots__ = ("ahead", "highest", "owed")

    def __init__(self, highest: int) -> None:
        self.highest = highest  # 0: no baseline yet (only ahead ids known)
        self.ahead: list[list[int]] | None = None  # sorted, disjoint [lo, hi] ranges above highest+1
        # Sorted, disjoint [lo, hi] ranges at or below highest the connection lacks still
        # (holes given up to bound ``ahead``); nothing above them has been written yet.
        self.owed: list[list[int]] | None = None

    def is_owed(self, msg_id: int) -> bool:
        return self.owed is not None and any(lo <= msg_id <= hi for lo, hi in self.owed)

    def has(self, msg_id: int) -> bool:
        if msg_id <= self.highest:
            return not self.is_owed(msg_id)
        return self.ahead is not None and any(lo <= msg_id <= hi for lo, hi in self.ahead)

    def take_owed(self, below: int) -> list[int]:
        """The owed ids below ``below``, no longer owed (the caller writes them)."""
        owed = self.owed
        if owed is None:
            return []
        out: list[int] = []
        while owed and owed[0][0] < below:
            lo, hi = owed[0]
            if hi < below:
                owed.pop(0)
            else:
                owed[0][0] = below
                hi = below - 1
            out.extend(range(lo, hi + 1))
        if not owed:
            self.owed = None
        return out

    def forget_owed(self, msg_id: int) -> None:
        if self.owed is not None and _discard(self.owed, msg_id) and not self.owed:
            self.owed = None

    def advance(self, msg_id: int) -> None:
        """The connection now has everything up to ``msg_id`` (but what is owed)."""
        self.highest = max(self.highest, msg_id)
        ahead = self.ahead
        if ahead is None:
            return
        while ahead and ahead[0][0] <= self.highest + 1:
            self.highest = max(self.highest, ahead.pop(0)[1])
        if not ahead:
            self.ahead = None

    def missing(self, msg_id: int) -> list[int]:
        """Ids between the highest and ``msg_id`` that the connection lacks."""
        ahead = self.ahead or []
        out: list[int] = []
        cursor = self.highest + 1
        for lo, hi in ahead:
            if lo >= msg_id:
                break
            out.extend(range(cursor, lo))
            cursor = hi + 1
        out.extend(range(cursor, msg_id))
        return out

    def add_ahead(self, msg_id: int, max_ahead: int, max_owed: int) -> int:
        """Remember ``msg_id`` above a hole; answers how many ids were given up to stay bounded."""
        ahead = self.ahead if self.ahead is not None else []
        self.ahead = ahead
        i = 0
        while i < len(ahead) and ahead[i][1] < msg_id - 1:
            i += 1
        if i < len(ahead) and ahead[i][0] <= msg_id + 1:  # touches range i: extend it
            rng = ahead[i]
            rng[0], rng[1] = min(rng[0], msg_id), max(rng[1], msg_id)
            if i + 1 < len(ahead) and ahead[i + 1][0] <= rng[1] + 1:  # and now the next one
                rng[1] = ahead.pop(i + 1)[1]
        else:
            ahead.insert(i, [msg_id, msg_id])
        skipped = 0
        while len(ahead) > max_ahead:
            lo, hi = ahead.pop(0)
            if not self.highest:
                # No baseline: the first push looks back for what it lacks. Forgetting
                # an own range risks a copy of the connection's own message, no loss.
                continue
            # The oldest hole is no longer waited for: owed, fetched before the next
            # push above it (its own late push is still written).
            owed = self.owed if self.owed is not None else []
            self.owed = owed
            owed.append([self.highest + 1, lo - 1])
            while len(owed) > max_owed:
                old_lo, old_hi = owed.pop(0)  # the oldest: taken as lost (counted)
                skipped += old_hi - old_lo + 1
            self.highest = hi
            self.advance(hi)
        if not ahead:
            self.ahead = None
        return skipped


class PushOrder:
    """One connection's record of the highest msg_id per conversation."""

    __slots__ = ("_seen", "_unacked", "max_ahead", "max_conversations", "max_fill", "max_gap", "max_owed")

    def __init__(
        self,
        max_conversations: int = MAX_CONVERSATIONS,
        max_gap: int = MAX_GAP,
        max_ahead: int = MAX_AHEAD,
        max_fill: int = MAX_FILL,
        max_owed: int = MAX_OWED,
    ) -> None:
        self.max_conversations = max_conversations
        self.max_gap = max_gap
        self.max_ahead = max_ahead
        self.max_fill = max_fill
        self.max_owed = max_owed
        self._seen: OrderedDict[Hashable, _Seen] = OrderedDict()
        # Digests of this connection's messages whose save failed without an answer it could
        # trust (a timeout, storage down mid-commit): such a message may be stored all the
        # same, and a gap fill must not write the connection's own message back to it.
        self._unacked: OrderedDict[tuple[Hashable, bytes], None] | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def highest(self, conversation: Hashable) -> int | None:
        """The highest id this connection has of that conversation; None if it has no baseline."""
        seen = self._seen.get(conversation)
        return seen.highest if seen is not None and seen.highest else None

    def _get(self, conversation: Hashable) -> _Seen | None:
        seen = self._seen.get(conversation)
        if seen is not None:
            self._seen.move_to_end(conversation)
        return seen

    def _new(self, conversation: Hashable) -> tuple[_Seen, int]:
        """A conversation without a baseline; answers it, and how many owed ids the
        one forgotten to make room for it took along (normally 0)."""
        seen = self._seen[conversation] = _Seen(0)
        if len(self._seen) <= self.max_conversations:
            return seen, 0
        # The least recently used, but rather one owing nothing: its next push
        # is a first that looks back; owed ids older than that would be lost.
        victim = next((k for k, v in self._seen.items() if v.owed is None and k != conversation), None)
        if victim is None:
            victim = next(iter(self._seen))
        owed = self._seen.pop(victim).owed or []
        return seen, sum(hi - lo + 1 for lo, hi in owed)

    def decide(self, conversation: Hashable, msg_id: int) -> Decision:
        """What to do with a push of ``msg_id``; the record assumes the caller does it.

        After a :class:`Gap` the connection is taken to have ``msg_id`` and
        the missing ids whether or not the fill succeeds (an unfilled gap is
        written past, counted by the caller).
        """
        seen = self._seen.get(conversation)
        if seen is not None:
            self._seen.move_to_end(conversation)
            highest = seen.highest
            if msg_id == highest + 1 and highest and seen.ahead is None and seen.owed is None:
                seen.highest = msg_id  # the next one, nothing else known: the common case
                return WRITE
        lost = 0
        if seen is None:
            seen, lost = self._new(conversation)
        elif seen.has(msg_id):
            return DUPLICATE
        if msg_id <= seen.highest:
            # An owed id (a hole given up to bound the ahead ranges): its late push.
            before = seen.take_owed(msg_id)
            seen.forget_owed(msg_id)
            if not before:
                return WRITE
            skipped = max(0, len(before) - self.max_fill)
            return Gap(tuple(before[skipped:]), skipped)
        first = not seen.highest
        if first:
            # No baseline (only the connection's own ids, if any): the ids just
            # before may have been stored since it logged in and be on their way
            # still, or retried later (a dispatcher goes on past a failed push).
            seen.highest = max(0, msg_id - 1 - self.max_gap)
            if seen.ahead is not None:
                seen.ahead = [r for r in seen.ahead if r[1] > seen.highest] or None
        missing = seen.take_owed(msg_id) + seen.missing(msg_id)
        seen.advance(msg_id)
        if not missing and not lost:
            return WRITE
        skipped = 0 if first else max(0, len(missing) - self.max_fill)
        return Gap(tuple(missing[skipped:]), skipped + lost, first)

    def unacked(self, conversation: Hashable, data: bytes) -> None:
        """The connection sent ``data`` in ``conversation`` and got no ack: it may be stored."""
        if self._unacked is None:
            self._unacked = OrderedDict()
        self._unacked[(conversation, _digest(data))] = None
        while len(self._unacked) > MAX_UNACKED:
            self._unacked.popitem(last=False)

    def own_unacked(self, conversation: Hashable, data: bytes) -> bool:
        """Whether a stored message of this connection's user is one it sent unacked (then
        forgotten: one send, one stored copy, whatever the resends)."""
        if not self._unacked:
            return False
        try:
            del self._unacked[(conversation, _digest(data))]
        except KeyError:
            return False
        return True

    def raise_to(self, conversation: Hashable, msg_id: int) -> int:
        """The connection has ``msg_id`` without a push (it sent it).

        Answers how many ids were given up to stay bounded (normally 0).
        """
        seen = self._get(conversation)
        lost = 0
        if seen is None:
            seen, lost = self._new(conversation)
        if seen.has(msg_id):
            return lost
        if msg_id <= seen.highest:  # owed: its ack came after a later one's
            seen.forget_owed(msg_id)
            return lost
        if seen.highest and msg_id == seen.highest + 1:
            seen.advance(msg_id)
            return lost
        return lost + seen.add_ahead(msg_id, self.max_ahead, self.max_owed)
