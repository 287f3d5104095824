"""The offline push's queue: what waits, what is retried when, and what is given up (sans-IO).

No asyncio and no clock here: every call takes ``now`` (any monotonic
seconds), so the bounds and the retry schedule are tested, and fuzzed, on a
fake clock (tests/offline_push/test_queue.py). :mod:`.pusher` only pumps it.

A notification admitted here becomes one *job* per provider that serves it
(the webhook, FCM, APNs each try on their own schedule). The notification
holds its place (one entry, its estimated bytes) until its last job ends, so
``max_entries`` and ``max_bytes`` bound the memory of everything waiting,
retrying or in flight. Every job ends exactly once, recorded as ``delivered``
or as the reason it was dropped:

- ``queue_full``: no room (entries or bytes) when it was offered;
- ``too_big``: larger than ``max_bytes`` on its own (it never fits);
- ``no_device``: no provider serves it (counted once, as it has no job);
- ``rejected``: the provider said it is not worth retrying;
- ``expired``: still not delivered ``retry_for`` seconds after it was admitted;
- ``shutdown``: still queued when the queue was closed (db_proxy stopping).

A RETRY waits ``retry_after`` if the provider was told one, else an
exponential backoff (``retry_initial`` doubled per attempt, at most
``retry_max``) with jitter, so receivers coming back are not hit by every
sender at the same instant.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from db_proxy.offline_push.provider import Notification, Outcome, Result

DELIVERED = "delivered"
QUEUE_FULL = "queue_full"
TOO_BIG = "too_big"
NO_DEVICE = "no_device"
REJECTED = "rejected"
EXPIRED = "expired"
SHUTDOWN = "shutdown"
DROP_REASONS = (QUEUE_FULL, TOO_BIG, NO_DEVICE, REJECTED, EXPIRED, SHUTDOWN)

#: What one notification costs beyond its strings (the objects, the heap slots).
_OVERHEAD = 256

#: ``record(provider, outcome, notification)``: ``outcome`` is DELIVERED or a
#: drop reason; ``provider`` is "" for a notification that never got a job.
Record = Callable[[str, str, Notification], None]


def size_of(notification: Notification) -> int:
    """Estimated bytes a notification holds while it waits."""
    strings = (notification.key, notification.sender_name, notification.text or "")
    tokens = sum(len(d.token) + 32 for d in notification.devices)
    return _OVERHEAD + sum(len(s.encode()) for s in strings) + tokens


@dataclass(slots=True)
class _Entry:
    notification: Notification
    size: int
    admitted_at: float
    jobs_left: int


@dataclass(slots=True, eq=False)
class Job:
    """One provider's delivery of one notification."""

    entry: _Entry
    provider: str
    attempts: int = 0
    ended: bool = False

    @property
    def notification(self) -> Notification:
        return self.entry.notification


@dataclass(slots=True)
class _Lane:
    """One provider's waiting jobs, by the time each is due."""

    waiting: list[tuple[float, int, Job]] = field(default_factory=list)
    in_flight: set[Job] = field(default_factory=set)


class PushQueue:
    def __init__(
        self,
        providers: Sequence[str],
        *,
        max_entries: int,
        max_bytes: int,
        retry_initial: float,
        retry_max: float,
        retry_for: float,
        record: Record = lambda provider, outcome, notification: None,
        rng: random.Random | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.retry_for = retry_for
        self.record = record
        self.rng = rng or random.Random()
        self._lanes = {name: _Lane() for name in providers}
        self._order = itertools.count()  # ties in due time go first in, first out
        self.entries = 0
        self.bytes = 0
        self.retries = 0
        self.closed = False

    @property
    def providers(self) -> list[str]:
        return list(self._lanes)

    def offer(self, notification: Notification, providers: Sequence[str], now: float) -> str | None:
        """Admit ``notification`` for ``providers`` (those that serve it): None, or why it was dropped."""
        names = [p for p in dict.fromkeys(providers) if p in self._lanes]
        size = size_of(notification)
        why: str | None = None
        if not names:
            why = NO_DEVICE
        elif self.closed:
            why = SHUTDOWN
        elif size > self.max_bytes:
            why = TOO_BIG
        elif self.entries >= self.max_entries or self.bytes + size > self.max_bytes:
            why = QUEUE_FULL
        if why is not None:
            for name in names or [""]:
                self.record(name, why, notification)
            return why
        entry = _Entry(notification, size, now, len(names))
        self.entries += 1
        self.bytes += size
        for name in names:
            self._wait(Job(entry, name), now)
        return None

    def take(self, provider: str, now: float) -> Job | None:
        """The next job of ``provider`` due by ``now`` (now in flight), or None.
        Jobs that waited past their deadline end ``expired`` on the way."""
        lane = self._lanes[provider]
        while lane.waiting and lane.waiting[0][0] <= now:
            _, _, job = heapq.heappop(lane.waiting)
            if now >= job.entry.admitted_at + self.retry_for:
                self._end(job, EXPIRED)
                continue
            job.attempts += 1
            lane.in_flight.add(job)
            return job
        return None

    def next_due(self, provider: str) -> float | None:
        """When ``provider``'s next waiting job is due (None: nothing waits)."""
        waiting = self._lanes[provider].waiting
        return waiting[0][0] if waiting else None

    def in_flight(self, provider: str) -> int:
        return len(self._lanes[provider].in_flight)

    def waiting(self, provider: str) -> int:
        return len(self._lanes[provider].waiting)

    def finish(self, job: Job, result: Result, now: float) -> None:
        """What the provider answered for ``job`` (taken earlier)."""
        lane = self._lanes[job.provider]
        if job not in lane.in_flight:
            return  # ended meanwhile (closed): counted already
        lane.in_flight.discard(job)
        if result.outcome is Outcome.DELIVERED:
            self._end(job, DELIVERED)
        elif result.outcome is Outcome.REJECTED:
            self._end(job, REJECTED)
        else:
            due = now + self._delay(job.attempts, result.retry_after)
            if due >= job.entry.admitted_at + self.retry_for:
                self._end(job, EXPIRED)
            else:
                self.retries += 1
                self._wait(job, due)

    def close(self) -> int:
        """Stop: every job not ended (waiting or in flight) ends ``shutdown``; how many did."""
        self.closed = True
        left = 0
        for lane in self._lanes.values():
            jobs = [job for _, _, job in lane.waiting] + list(lane.in_flight)
            lane.waiting.clear()
            lane.in_flight.clear()
            for job in jobs:
                self._end(job, SHUTDOWN)
                left += 1
        return left

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)  # the service said when; retry_for still bounds it
        backoff = min(self.retry_max, self.retry_initial * 2.0 ** min(attempts - 1, 60))
        # "Equal jitter": at least half the backoff, so retries still slow down.
        return backoff / 2 + self.rng.random() * backoff / 2

    def _wait(self, job: Job, due: float) -> None:
        heapq.heappush(self._lanes[job.provider].waiting, (due, next(self._order), job))

    def _end(self, job: Job, outcome: str) -> None:
        assert not job.ended, "a job ends once"
        job.ended = True
        self.record(job.provider, outcome, job.entry.notification)
        entry = job.entry
        entry.jobs_left -= 1
        if entry.jobs_left == 0:
            self.entries -= 1
            self.bytes -= entry.size
