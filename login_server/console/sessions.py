"""The web console's sessions and its failed-login throttle: pure logic, time passed in.

A session is what a correct admin token typed into the login form is
exchanged for: a random id (the cookie), the operator name typed with it
(the audit trail's ``who``), and a CSRF token that every form posts back.
Sessions live in this process only (a login_server restart logs everyone
out; behind several login_servers the balancer must keep a browser on one,
scripts/haproxy/haproxy.cfg), in a table of bounded size: a session ends
after ``idle`` seconds without a request and ``absolute`` seconds after
login, whichever comes first, and a full table drops the least recently
used one.

Failed logins are limited per source address, by a token bucket: ``burst``
failures at once, then one per ``refill`` seconds. The table of sources is
bounded too; when it is full the source idle longest is forgotten (its
bucket would mostly have refilled anyway).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

SESSIONS_MAX = 256
IDLE_TIMEOUT = 30 * 60.0
ABSOLUTE_TIMEOUT = 8 * 3600.0
FLASH_MAX = 5  # messages waiting for the next page of a session

LOGIN_BURST = 5
LOGIN_REFILL = 30.0  # seconds per further attempt once the burst is spent
SOURCES_MAX = 4096


@dataclass(slots=True)
class Session:
    id: str
    operator: str
    csrf: str
    created: float
    last_seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        """A message for the next page shown (kind: ok, warning, error)."""
        self.flashes = [*self.flashes, (kind, text)][-FLASH_MAX:]

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken


class Sessions:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_entries: int = SESSIONS_MAX,
        idle: float = IDLE_TIMEOUT,
        absolute: float = ABSOLUTE_TIMEOUT,
    ) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self.idle = idle
        self.absolute = absolute
        self._by_id: OrderedDict[str, Session] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, operator: str) -> Session:
        now = self.clock()
        self._expire(now)
        while len(self._by_id) >= self.max_entries:
            self._by_id.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), operator, secrets.token_urlsafe(32), now, now)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's id (and it counts as used now), or None."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._by_id[session_id]
            return None
        session.last_seen = now
        self._by_id.move_to_end(session_id)
        return session

    def close(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen >= self.idle or now - session.created >= self.absolute

    def _expire(self, now: float) -> None:
        # Least recently used first: the idle ones are at the front.
        for session_id, session in list(self._by_id.items()):
            if self._expired(session, now):
                del self._by_id[session_id]
            elif now - session.last_seen < self.idle:
                break  # the rest were used more recently (an absolute expiry waits for its get)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class LoginThrottle:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        burst: int = LOGIN_BURST,
        refill: float = LOGIN_REFILL,
        max_sources: int = SOURCES_MAX,
    ) -> None:
        self.clock = clock
        self.burst = burst
        self.refill = refill
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # longest idle first

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, source: str) -> float:
        """0 if ``source`` may try to log in now, else the seconds until it may."""
        bucket = self._refilled(source)
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) * self.refill

    def failed(self, source: str) -> None:
        bucket = self._refilled(source)
        if bucket is None:
            while len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = _Bucket(float(self.burst), self.clock())
        bucket.tokens = max(0.0, bucket.tokens - 1)
        self._buckets.move_to_end(source)

    def succeeded(self, source: str) -> None:
        self._buckets.pop(source, None)

    def _refilled(self, source: str) -> _Bucket | None:
        bucket = self._buckets.get(source)
        if bucket is None:
            return None
        now = self.clock()
        bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.at) / self.refill)
        bucket.at = now
        if bucket.tokens >= self.burst:
            del self._buckets[source]  # as good as never seen
            return None
        return bucket
