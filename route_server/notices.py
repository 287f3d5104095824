"""Profile notices (avatar, sign info), coalesced like presence; sans-IO.

A user's avatar or sign-info change goes to the users who see that user, not
to everyone online. Who sees whom is the gateways' to know: a client asks for
the status (IMUsersStatReq) of the contacts it shows, and its gateway keeps
that watch set for presence already. So the route server only collects the
changes and hands each gateway one batch per ``status_batch_interval``, and
each gateway passes a change to the connections that watch its user (and to
the user's own other connections).

Within an interval the last change of a (user, notice) pair replaces the
earlier ones: a user changing its sign info 1,000 times in a second costs
each watcher one notice per interval, with the last value. What waits is
bounded in entries and in bytes; past a bound a new pair is dropped (an
already pending pair still takes its newer value if the bytes allow), and
every notice that does not go out is counted by its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from common.pb import internal_pb2

# Reasons a change does not go out (route_server.metrics NOTICES_DROPPED).
SUPERSEDED = "superseded"  # a newer value of the same pair replaced it: coalesced
PENDING_ENTRIES = "pending_entries"  # max_pending_notices pairs wait already
PENDING_BYTES = "pending_bytes"  # max_pending_notice_bytes would be passed

Key = tuple[int, int]  # (user, command id)


def _size(change: internal_pb2.RouteProfileChange) -> int:
    return len(change.body) + 64  # the body and a generous allowance for the rest


@dataclass
class ProfileNotices:
    max_entries: int
    max_bytes: int
    # Called with (reason, count) for every change that does not go out.
    on_drop: Callable[[str, int], None] = lambda reason, n: None
    _pending: dict[Key, internal_pb2.RouteProfileChange] = field(default_factory=dict)
    _bytes: int = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def offer(self, change: internal_pb2.RouteProfileChange) -> bool:
        """Queue a change for the next batch; False if it was dropped (counted)."""
        key = (change.user_id, change.command_id)
        old = self._pending.get(key)
        size = _size(change)
        freed = _size(old) if old is not None else 0
        if old is None and len(self._pending) >= self.max_entries:
            self.on_drop(PENDING_ENTRIES, 1)
            return False
        if self._bytes - freed + size > self.max_bytes:
            self.on_drop(PENDING_BYTES, 1)
            return False
        if old is not None:
            self.on_drop(SUPERSEDED, 1)
            # A re-insert puts the pair last: batches keep the order of last changes.
            del self._pending[key]
        self._pending[key] = change
        self._bytes += size - freed
        return True

    def take(self) -> internal_pb2.RouteProfileBatch | None:
        """The batch to send now (one per interval), or None if nothing waits."""
        if not self._pending:
            return None
        batch = internal_pb2.RouteProfileBatch(changes=list(self._pending.values()))
        self._pending = {}
        self._bytes = 0
        return batch
