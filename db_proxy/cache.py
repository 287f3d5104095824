"""Caches that make logins cheap; losing any of them costs time, never correctness.

* Verified passwords: scrypt is slow on purpose (~70 ms), so a reconnect
  storm would queue behind it. After one successful check we remember
  HMAC(key, user_id:stored hash:md5) for a while; a login that matches it
  skips scrypt. The stored hash is in it so a password change invalidates
  the entry. The key is derived from the cluster secret (:func:`cache_key`),
  so every login db_proxy finds the entries the others wrote and a restarted
  one finds its own. Without the cluster secret (loopback-only development)
  it is random per process: a restart then costs each returning user one
  scrypt. Redis holds only the HMACs: useless without the cluster secret
  (whoever has the secret, the stored hashes and Redis can test guesses at
  HMAC speed against cached users: keep the secret as secret as the database).
* Failed logins (:class:`ThrottleCounters`): the counters of
  db_proxy/login_throttle.py, whose policy this only stores.

Both live in Redis when one is configured (shared by the db_proxies, kept
across their restarts) and in bounded in-process maps otherwise or when
Redis fails.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from typing import Any

from common.errors import Unavailable
from common.throttle import Throttle
from db_proxy import metrics
from db_proxy.login_throttle import (
    KNOWN_SOURCES,
    KNOWN_TTL,
    Attempt,
    Count,
    InFlight,
    Keys,
    LoginThrottle,
    MemoryCounters,
    Refusal,
)

log = logging.getLogger("db.cache")

MEMORY_ENTRIES = 100_000


class _BoundedMap:
    """An LRU with expiry, for when Redis is absent."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def get(self, key: str, now: float) -> int | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: int, expires: float) -> None:
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)


CACHE_KEY_LABEL = b"imcluster login-cache v1"


def cache_key(secrets: tuple[bytes, ...]) -> bytes:
    """The verified-password cache's HMAC key: from the current cluster secret, else random.

    Only the current secret (the first) is used: after a rotation every
    db_proxy derives the new key, the old entries are never matched again
    and expire, and each returning user pays one scrypt to be cached anew.
    """
    if secrets:
        return hmac.new(secrets[0], CACHE_KEY_LABEL, hashlib.sha256).digest()
    log.info("no cluster secret: the verified-password cache is this process's own (not shared, not kept)")
    return os.urandom(32)


class LoginCache:
    def __init__(self, redis: Any | None, ttl: int, key: bytes | None = None) -> None:
        """``key``: from :func:`cache_key`; None is a random one (tests, a single process)."""
        self.redis = redis
        self.ttl = ttl
        self._key = key if key is not None else os.urandom(32)
        self._memory = _BoundedMap(MEMORY_ENTRIES)

    @classmethod
    def for_cluster(cls, redis: Any | None, ttl: int, secrets: tuple[bytes, ...]) -> LoginCache:
        """A db_proxy's cache: keyed from the cluster's secrets (:func:`cache_key`)."""
        return cls(redis, ttl, cache_key(secrets))

    def _redis_key(self, user_id: int, password_hash: str, md5: str) -> str:
        # Bound to the stored hash too, so a password change invalidates it.
        # Unambiguous: the id is an integer and the stored hash has no ':', so
        # only the last field (the client's md5) might hold one.
        message = f"{user_id}:{password_hash}:{md5.lower()}".encode()
        return "imc:pw:" + hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    async def is_verified(self, user_id: int, password_hash: str, md5: str) -> bool:
        found = self.ttl > 0 and await self._lookup(self._redis_key(user_id, password_hash, md5))
        metrics.LOGIN_CACHE.labels("hit" if found else "miss").inc()
        return found

    async def _lookup(self, key: str) -> bool:
        if self.redis is not None:
            try:
                return bool(await self.redis.exists(key))
            except Exception as exc:
                log.warning("redis unavailable for the login cache: %s", exc)
        return self._memory.get(key, time.monotonic()) is not None

    async def remember(self, user_id: int, password_hash: str, md5: str) -> None:
        if self.ttl <= 0:
            return
        key = self._redis_key(user_id, password_hash, md5)
        self._memory.set(key, 1, time.monotonic() + self.ttl)
        if self.redis is not None:
            try:
                await self.redis.set(key, 1, ex=self.ttl)
            except Exception as exc:
                log.warning("redis unavailable for the login cache: %s", exc)


# Redis layout of the failure counters (every key and field fixed-size):
#   imc:lt:u:<user>   hash: f (the user's failures), n (its wait), c<source>, n<source> (per pair)
#   imc:lt:s:<source> hash: f (the address's failures), l (locked until)
#   imc:lt:k:<user>   set of known-good addresses (at most KNOWN_SOURCES)
# Counter keys expire login_failure_window after the last failure.
PAIRS_PER_USER = 512  # addresses counted per user in Redis; past it only the per-user count grows
REDIS_LOG_INTERVAL = 10.0


def _float(raw: Any) -> float:
    return float(raw) if raw is not None else 0.0


def _int(raw: Any) -> int:
    return int(raw) if raw is not None else 0


class ThrottleCounters:
    """The failure counters in Redis, or in process when it is absent or fails."""

    def __init__(self, redis: Any | None, throttle: LoginThrottle) -> None:
        self.redis = redis
        self.throttle = throttle
        self.memory = MemoryCounters(throttle)
        self.in_flight = InFlight()
        self._redis_down = Throttle(REDIS_LOG_INTERVAL)
        metrics.THROTTLE_MEMORY.set_function(lambda: self.memory.bytes_used)

    def _warn(self, exc: Exception) -> None:
        if self._redis_down.ready():
            log.warning("redis unavailable for the login throttle: %s%s", exc, self._redis_down.more())

    async def check(self, source: str, name: str, now: float) -> tuple[Keys, Attempt, Refusal | None]:
        keys = self.throttle.keys(source, name)
        attempt = await self._load(keys, now)
        refusal = self.throttle.check(attempt, now, self.in_flight.running(keys))
        if refusal is not None:
            metrics.LOGIN_REFUSED.labels(refusal.reason).inc()
        return keys, attempt, refusal

    async def _load(self, keys: Keys, now: float) -> Attempt:
        if self.redis is not None:
            user, source = keys.user.hex(), keys.source.hex()
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.hmget(f"imc:lt:u:{user}", "f", "n", f"c{source}", f"n{source}")
                pipe.hmget(f"imc:lt:s:{source}", "f", "l")
                pipe.sismember(f"imc:lt:k:{user}", source)
                (uf, un, pf, pn), (sf, sl), known = await pipe.execute()
                return Attempt(
                    pair=Count(_int(pf), _float(pn)),
                    source=Count(_int(sf), _float(sl)),
                    user=Count(_int(uf), _float(un)),
                    known=bool(known),
                )
            except Exception as exc:
                self._warn(exc)
        return self.memory.load(keys, now)

    async def failed(self, keys: Keys, attempt: Attempt, now: float) -> Attempt:
        """Count a wrong password (``attempt`` as :meth:`check` read it); the state after it."""
        if self.redis is not None:
            try:
                return await self._redis_failed(keys, attempt, now)
            except Exception as exc:
                self._warn(exc)
        return self.memory.failed(keys, now)

    async def _redis_failed(self, keys: Keys, attempt: Attempt, now: float) -> Attempt:
        assert self.redis is not None
        user, source = keys.user.hex(), keys.source.hex()
        user_key, source_key = f"imc:lt:u:{user}", f"imc:lt:s:{source}"
        window = int(self.throttle.limits.window)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hlen(user_key)
        pipe.hincrby(user_key, "f", 1)
        pipe.hincrby(source_key, "f", 1)
        hlen, user_failures, source_failures = await pipe.execute()
        # One attacked user's hash stays bounded however many addresses guess.
        count_pair = attempt.pair.failures > 0 or hlen < 2 * PAIRS_PER_USER
        after = self.throttle.counted(attempt, attempt.pair.failures + 1, source_failures, user_failures, now)
        pipe = self.redis.pipeline(transaction=False)
        fields: dict[str, str] = {"n": repr(after.user.until)}
        if count_pair:
            pipe.hincrby(user_key, f"c{source}", 1)
            fields[f"n{source}"] = repr(after.pair.until)
        pipe.hset(user_key, mapping=fields)
        pipe.hset(source_key, "l", repr(after.source.until))
        pipe.expire(user_key, window)
        pipe.expire(source_key, max(window, int(after.source.until - now) + 1))
        await pipe.execute()
        return after

    async def succeeded(self, keys: Keys, now: float) -> None:
        """A good password: the pair's count goes, the address is known-good for the user."""
        self.memory.succeeded(keys, now)
        if self.redis is None:
            return
        user, source = keys.user.hex(), keys.source.hex()
        user_key, known_key = f"imc:lt:u:{user}", f"imc:lt:k:{user}"
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hdel(user_key, f"c{source}", f"n{source}")
            pipe.sadd(known_key, source)
            pipe.expire(known_key, int(KNOWN_TTL))
            pipe.scard(known_key)
            known = (await pipe.execute())[-1]
            if known > KNOWN_SOURCES:
                await self.redis.spop(known_key, known - KNOWN_SOURCES)
        except Exception as exc:
            self._warn(exc)

    async def unlock(self, name: str) -> None:
        """Forget every failure of this user, from every address (admin unlock, password change)."""
        user = self.throttle.user_key(name)
        self.memory.unlock(user)
        if self.redis is not None:
            try:
                await self.redis.delete(f"imc:lt:u:{user.hex()}")
            except Exception as exc:
                raise Unavailable(f"redis: {exc}") from exc
