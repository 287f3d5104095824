"""Login throttling that slows guessers down without locking anyone out (sans-IO).

Failed logins are counted three ways, each in the failure window
(``login_failure_window``, refreshed by every failure):

* per (source address, user): past ``login_failure_limit`` failures each
  further attempt from that address for that user must wait, 1 s doubling up
  to ``login_delay_max``. Another address is not affected, so a guesser
  cannot lock a colleague out.
* per source, for any users: past ``login_source_limit`` the address is
  refused every login for ``login_source_lock`` seconds (password spraying).
* per user, from all addresses: past ``login_user_limit`` the addresses that
  never logged in successfully as that user wait too, on the same doubling
  delay (a distributed guesser); the user's known-good addresses (a bounded
  set remembered at each successful login) stay free.

An attempt inside a delay or a lock is refused at once, before any storage
lookup or hash, and is not counted (it costs the guesser nothing either, and
tells it nothing). Only a wrong password is counted. So that parallel guesses
cannot slip through together before the first of them is counted, attempts
still being checked (:class:`InFlight`) count against the pair's and the
user's limits as if they had failed; they never count toward the address's
lock, so a whole office behind one NAT address logging in at 9:00 is never
taken for a sprayer (a sprayer's overrun is bounded by the gateways' cap on
one address's connections before login, each with one login at a time).
Nothing here locks an account for everyone.

Every key is a fixed-size keyed hash (HMAC-SHA256, 16 bytes) of the name and
of the address, so a 60 KB name costs what a short one does; the key is
derived from the cluster secret when there is one (every db_proxy then
agrees on the Redis keys), else random per process. This module does no I/O
and reads no clock: callers pass ``now`` (wall-clock seconds, shared through
Redis by every db_proxy). :class:`MemoryCounters` is the in-process store,
bounded in bytes; db_proxy/cache.py has the Redis one and the fallback.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace

KEY_BYTES = 16
KNOWN_SOURCES = 8  # known-good addresses remembered per user
KNOWN_TTL = 30 * 86400.0  # seconds a known-good address is remembered after its last login
# What one entry of MemoryCounters costs in this process, counted generously
# (key bytes object, the entry, its floats, the OrderedDict node); a test
# measures the real cost with tracemalloc and keeps it under these.
ENTRY_BYTES = 320
KNOWN_BASE_BYTES = 240  # plus KEY_BYTES per address remembered
KNOWN_SHARE = 4  # known-good addresses may take 1/KNOWN_SHARE of the memory budget

REASONS = ("source_locked", "delayed", "user_delayed")


@dataclass(frozen=True, slots=True)
class Limits:
    failure_limit: int = 5
    window: float = 900.0
    delay_max: float = 60.0
    source_limit: int = 100
    source_lock: float = 300.0
    user_limit: int = 50
    memory: int = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Count:
    """Failures counted in the window, and the time before which attempts are refused."""

    failures: int = 0
    until: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """What is known, for one login attempt, of its address, its user and the pair."""

    pair: Count = Count()
    source: Count = Count()
    user: Count = Count()
    known: bool = False  # the address logged in successfully as this user before


@dataclass(frozen=True, slots=True)
class Running:
    """Attempts of this pair and of this user still being checked (see :class:`InFlight`)."""

    pair: int = 0
    user: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # one of REASONS: the metric label
    retry_after: float  # seconds

    @property
    def message(self) -> str:
        """The result_string a refused client gets."""
        return f"too many failed logins; try again in {max(1, math.ceil(self.retry_after))} s"


@dataclass(frozen=True, slots=True)
class Keys:
    source: bytes  # KEY_BYTES each
    user: bytes


def derive_key(secrets: tuple[bytes, ...]) -> bytes:
    """The keyed-hash key: from the cluster secret (all db_proxies agree), else random per process."""
    if not secrets:
        return os.urandom(32)
    return hmac.new(secrets[0], b"imcluster login throttle v1", hashlib.sha256).digest()


def delay(failures: int, limit: int, delay_max: float) -> float:
    """Seconds to wait after the ``failures``-th failure: 0 below ``limit``, then 1, 2, 4... capped."""
    if failures < limit:
        return 0.0
    exponent = failures - limit
    return delay_max if exponent >= 63 else min(float(1 << exponent), delay_max)


class LoginThrottle:
    """The policy: keys, the check before an attempt, the counts after a failure."""

    def __init__(self, limits: Limits, key: bytes) -> None:
        self.limits = limits
        self._key = key

    def _hash(self, kind: bytes, value: str) -> bytes:
        data = kind + value.encode("utf-8", "surrogatepass")
        return hmac.digest(self._key, data, "sha256")[:KEY_BYTES]

    def user_key(self, name: str) -> bytes:
        # casefold: a case-insensitive collation (MariaDB's) must not give a
        # guesser a fresh counter for every spelling of the same account.
        return self._hash(b"u\0", name.strip().casefold())

    def keys(self, source: str, name: str) -> Keys:
        return Keys(self._hash(b"s\0", source), self.user_key(name))

    def check(self, attempt: Attempt, now: float, running: Running = Running()) -> Refusal | None:
        """None if the attempt may go on to the password check, else why not.

        ``running``: attempts still being checked count as failures here, so that a burst of
        parallel guesses gets no more hashes than the limit (the next try is a second away).
        """
        lim = self.limits
        if attempt.source.until > now:
            return Refusal("source_locked", attempt.source.until - now)
        if attempt.pair.until > now:
            return Refusal("delayed", attempt.pair.until - now)
        if running.pair and attempt.pair.failures + running.pair >= lim.failure_limit:
            return Refusal("delayed", 1.0)
        if not attempt.known:
            if attempt.user.until > now:
                return Refusal("user_delayed", attempt.user.until - now)
            if running.user and attempt.user.failures + running.user >= lim.user_limit:
                return Refusal("user_delayed", 1.0)
        return None

    def counted(self, attempt: Attempt, pair: int, source: int, user: int, now: float) -> Attempt:
        """The state after a failure, given the counts that include it (Redis counts atomically)."""
        lim = self.limits
        source_until = attempt.source.until
        if source >= lim.source_limit:
            source_until = max(source_until, now + lim.source_lock)
        return replace(
            attempt,
            pair=Count(pair, now + delay(pair, lim.failure_limit, lim.delay_max)),
            source=Count(source, source_until),
            user=Count(user, now + delay(user, lim.user_limit, lim.delay_max)),
        )

    def after_failure(self, attempt: Attempt, now: float) -> Attempt:
        return self.counted(
            attempt, attempt.pair.failures + 1, attempt.source.failures + 1, attempt.user.failures + 1, now
        )

    def expiry(self, count: Count, now: float) -> float:
        """When a counter may be forgotten: a window after its last failure, never inside its wait."""
        return max(now + self.limits.window, count.until)


class _Entry:
    __slots__ = ("expires", "failures", "until")

    def __init__(self, failures: int, until: float, expires: float) -> None:
        self.failures = failures
        self.until = until
        self.expires = expires


class MemoryCounters:
    """The in-process counters: bounded in bytes (oldest written first out), expiring.

    Keys: ``b"s" + source`` (per address), ``b"u" + user`` (per user) and
    ``b"p" + user[:8] + source[:8]`` (per pair: the user's half first, so
    that unlocking a user finds its pairs). Known-good addresses live in a
    map of their own (a quarter of the budget), so a flood of failures
    cannot push them out.
    """

    def __init__(self, throttle: LoginThrottle) -> None:
        self.throttle = throttle
        budget = throttle.limits.memory
        self.known_budget = budget // KNOWN_SHARE
        self.counter_budget = budget - self.known_budget
        self._counts: OrderedDict[bytes, _Entry] = OrderedDict()
        self._known: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._known_bytes = 0

    @property
    def bytes_used(self) -> int:
        return len(self._counts) * ENTRY_BYTES + self._known_bytes

    @staticmethod
    def _pair_key(keys: Keys) -> bytes:
        return b"p" + keys.user[:8] + keys.source[:8]

    def _get(self, key: bytes, now: float) -> Count:
        entry = self._counts.get(key)
        if entry is None:
            return Count()
        if entry.expires <= now:
            del self._counts[key]
            return Count()
        return Count(entry.failures, entry.until)

    def _put(self, key: bytes, count: Count, now: float) -> None:
        self._counts[key] = _Entry(count.failures, count.until, self.throttle.expiry(count, now))
        self._counts.move_to_end(key)
        while len(self._counts) * ENTRY_BYTES > self.counter_budget:
            self._counts.popitem(last=False)

    def load(self, keys: Keys, now: float) -> Attempt:
        return Attempt(
            pair=self._get(self._pair_key(keys), now),
            source=self._get(b"s" + keys.source, now),
            user=self._get(b"u" + keys.user, now),
            known=keys.source in self._known_sources(keys.user, now),
        )

    def store(self, keys: Keys, attempt: Attempt, now: float) -> None:
        """Write the state after a failure (from :meth:`LoginThrottle.after_failure`)."""
        self._put(self._pair_key(keys), attempt.pair, now)
        self._put(b"s" + keys.source, attempt.source, now)
        self._put(b"u" + keys.user, attempt.user, now)

    def failed(self, keys: Keys, now: float) -> Attempt:
        attempt = self.throttle.after_failure(self.load(keys, now), now)
        self.store(keys, attempt, now)
        return attempt

    def succeeded(self, keys: Keys, now: float) -> None:
        """A good password: this pair's count goes, and the address becomes known-good for the
        user (the user's and the address's counts stay: a guesser elsewhere goes on counting)."""
        self._counts.pop(self._pair_key(keys), None)
        self.remember_known(keys, now)

    def remember_known(self, keys: Keys, now: float) -> None:
        sources = self._known_sources(keys.user, now)
        if keys.source in sources:
            sources.remove(keys.source)
        sources = [keys.source, *sources][:KNOWN_SOURCES]
        self._set_known(keys.user, b"".join(sources), now + KNOWN_TTL)

    def _known_sources(self, user: bytes, now: float) -> list[bytes]:
        item = self._known.get(user)
        if item is None:
            return []
        expires, blob = item
        if expires <= now:
            self._drop_known(user)
            return []
        return [blob[i : i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]

    def _set_known(self, user: bytes, blob: bytes, expires: float) -> None:
        self._drop_known(user)
        self._known[user] = (expires, blob)
        self._known_bytes += KNOWN_BASE_BYTES + len(blob)
        while self._known_bytes > self.known_budget and self._known:
            self._drop_known(next(iter(self._known)))

    def _drop_known(self, user: bytes) -> None:
        item = self._known.pop(user, None)
        if item is not None:
            self._known_bytes -= KNOWN_BASE_BYTES + len(item[1])

    def unlock(self, user: bytes) -> int:
        """Forget every failure of this user (from every address); how many counters went."""
        prefix = b"p" + user[:8]
        doomed = [k for k in self._pair_keys() if k.startswith(prefix)]
        if self._counts.pop(b"u" + user, None) is not None:
            doomed.append(b"u" + user)
        for key in doomed:
            self._counts.pop(key, None)
        return len(doomed)

    def _pair_keys(self) -> Iterator[bytes]:
        return (k for k in self._counts if k[:1] == b"p")

    def __len__(self) -> int:
        return len(self._counts)


class InFlight:
    """Login attempts of this process between their check and their answer, per pair and per user.

    Bounded by the attempts a db_proxy runs at once (its hash threads' queue); an entry goes
    when its last attempt ends.
    """

    def __init__(self) -> None:
        self._counts: dict[bytes, int] = {}

    @staticmethod
    def _keys(keys: Keys) -> tuple[bytes, bytes]:
        return b"p" + keys.user + keys.source, b"u" + keys.user

    def running(self, keys: Keys) -> Running:
        pair, user = self._keys(keys)
        return Running(self._counts.get(pair, 0), self._counts.get(user, 0))

    def begin(self, keys: Keys) -> None:
        for key in self._keys(keys):
            self._counts[key] = self._counts.get(key, 0) + 1

    def end(self, keys: Keys) -> None:
        for key in self._keys(keys):
            left = self._counts.get(key, 0) - 1
            if left > 0:
                self._counts[key] = left
            else:
                self._counts.pop(key, None)

    def __len__(self) -> int:
        return len(self._counts)
