"""Which new connections a gateway keeps: per-source and pre-login caps.

A connection is counted under its source address from accept to close.
Closed on accept, counted by reason (``imcluster_gateway_connections_refused_total``):

* ``full``: the gateway holds ``max_connections`` (the setting, or less if
  the open-file limit is lower: see :func:`effective_max_connections`);
* ``per_source``: its address holds ``max_connections_per_source``, logged in or not;
* ``unauthenticated_per_source``: its address holds
  ``max_unauthenticated_per_source`` connections not yet logged in.

When ``max_unauthenticated`` connections are not logged in, a new one is
kept and the oldest pre-login connection of the address holding the most
pre-login connections is closed instead (``evicted``): a flood from a few
addresses evicts itself, never a real client's login from elsewhere, and
logged-in clients always have room below the file limit.

:class:`Admission` is sans-IO over any hashable key; :class:`Admitter` is
the gateway's adapter (metrics, logging once per burst, closing).
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import Counter

from common.throttle import Throttle

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.config import MsgServerConfig

log = logging.getLogger("admission")

REFUSED_CONNECTIONS = Counter(
    "imcluster_gateway_connections_refused",
    "Client connections closed by admission, by reason: full (max_connections, capped by the open-file "
    "limit), per_source (max_connections_per_source), unauthenticated_per_source "
    "(max_unauthenticated_per_source), evicted (the oldest pre-login connection of the address holding "
    "the most, closed to make room under max_unauthenticated).",
    ["reason"],
)

FILE_RESERVE = 256  # open files kept for links, logs, the database and metrics
LOG_INTERVAL = 1.0

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Caps:
    max_connections: int
    per_source: int
    unauthenticated: int
    unauthenticated_per_source: int


@dataclass(frozen=True, slots=True)
class Verdict(Generic[K]):
    """What to do with a new connection: keep it (``refused`` empty) and close ``evict``, if any."""

    refused: str = ""  # the reason, or "" if kept
    evict: K | None = None


@dataclass
class Admission(Generic[K]):
    """Connection counts per source address, and the pre-login ones in age order."""

    caps: Caps
    _source_of: dict[K, str] = field(default_factory=dict)
    _per_source: dict[str, int] = field(default_factory=dict)
    # Pre-login connections per source, oldest first (dicts keep insertion order).
    _pending: dict[str, dict[K, None]] = field(default_factory=dict)
    # Sources by their number of pre-login connections, to find the largest in O(1).
    _by_count: dict[int, dict[str, None]] = field(default_factory=dict)
    _top = 0
    _pending_total = 0

    @property
    def connections(self) -> int:
        return len(self._source_of)

    @property
    def unauthenticated(self) -> int:
        return self._pending_total

    def connect(self, key: K, source: str) -> Verdict[K]:
        caps = self.caps
        if len(self._source_of) >= caps.max_connections:
            return Verdict("full")
        if self._per_source.get(source, 0) >= caps.per_source:
            return Verdict("per_source")
        pending = self._pending.get(source)
        if pending is not None and len(pending) >= caps.unauthenticated_per_source:
            return Verdict("unauthenticated_per_source")
        evict: K | None = None
        if self._pending_total >= caps.unauthenticated:
            evict = self._oldest_of_largest()
            if evict is not None:
                self.gone(evict)
        self._source_of[key] = source
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._add_pending(key, source)
        return Verdict("", evict)

    def logged_in(self, key: K) -> None:
        source = self._source_of.get(key)
        if source is not None:
            self._remove_pending(key, source)

    def gone(self, key: K) -> None:
        source = self._source_of.pop(key, None)
        if source is None:
            return
        self._remove_pending(key, source)
        left = self._per_source[source] - 1
        if left:
            self._per_source[source] = left
        else:
            del self._per_source[source]

    def _oldest_of_largest(self) -> K | None:
        sources = self._by_count.get(self._top)
        if not sources:
            return None
        source = next(iter(sources))
        return next(iter(self._pending[source]))

    def _add_pending(self, key: K, source: str) -> None:
        pending = self._pending.setdefault(source, {})
        count = len(pending)
        pending[key] = None
        self._move(source, count, count + 1)
        self._pending_total += 1

    def _remove_pending(self, key: K, source: str) -> None:
        pending = self._pending.get(source)
        if pending is None or key not in pending:
            return
        count = len(pending)
        del pending[key]
        if not pending:
            del self._pending[source]
        self._move(source, count, count - 1)
        self._pending_total -= 1

    def _move(self, source: str, old: int, new: int) -> None:
        if old:
            bucket = self._by_count[old]
            del bucket[source]
            if not bucket:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, {})[source] = None
        if new > self._top:
            self._top = new
        elif old == self._top and old not in self._by_count:
            self._top = new  # counts move by one: the source just moved is now the largest

    def sizes(self) -> tuple[int, int, int]:
        """(connections, sources, sources with pre-login connections): bounded by the live ones."""
        return len(self._source_of), len(self._per_source), len(self._pending)


def open_file_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def effective_max_connections(setting: int, soft_limit: int) -> int:
    """Connections the open-file limit leaves room for, at most the setting."""
    if soft_limit == resource.RLIM_INFINITY:
        return setting
    return max(1, min(setting, soft_limit - FILE_RESERVE))


def caps_of(config: MsgServerConfig, max_connections: int) -> Caps:
    # Pre-login connections never take more than half the room: logged-in users keep the rest.
    return Caps(
        max_connections,
        config.max_connections_per_source,
        max(1, min(config.max_unauthenticated, max_connections // 2)),
        config.max_unauthenticated_per_source,
    )


class Admitter:
    """The gateway's admission: an :class:`Admission` plus metrics, the log and closing."""

    def __init__(self, caps: Caps, clock: Callable[[], float] = time.monotonic) -> None:
        self.admission: Admission[ClientConnection] = Admission(caps)
        self._logs: dict[str, Throttle] = {}  # per reason: a flood is many sources
        self.clock = clock

    def accept(self, conn: ClientConnection) -> bool:
        """Keep ``conn`` (True), or close it on accept (False); may close an older pre-login one."""
        source = conn.source
        verdict = self.admission.connect(conn, source)
        if verdict.refused:
            self._note(verdict.refused, source)
            conn.abort()
            return False
        if verdict.evict is not None:
            self._note("evicted", verdict.evict.peer)
            verdict.evict.abort()
        return True

    def _note(self, reason: str, source: str) -> None:
        REFUSED_CONNECTIONS.labels(reason).inc()
        throttle = self._logs.get(reason)
        if throttle is None:
            throttle = self._logs[reason] = Throttle(LOG_INTERVAL, self.clock)
        if throttle.ready():
            a = self.admission
            log.warning(
                "connection from %s closed (%s; %d connections, %d not logged in)%s",
                source,
                reason,
                a.connections,
                a.unauthenticated,
                throttle.more(),
            )

    def logged_in(self, conn: ClientConnection) -> None:
        self.admission.logged_in(conn)

    def gone(self, conn: ClientConnection) -> None:
        self.admission.gone(conn)
