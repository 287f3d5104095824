"""Caches that make logins cheap; losing any of them costs time, never correctness.

* Verified passwords: scrypt is slow on purpose (~70 ms), so a reconnect
  storm would queue behind it. After one successful check we remember, under
  HMAC(key, name:md5), the value HMAC(key, user_id:stored hash) for a while;
  a login whose entry matches the user it finds skips scrypt. The key needs
  only what the client sent, so the lookup rides on the throttle check's
  round trip (:class:`ThrottleCounters.check_login`: one Redis command per
  returning login); the stored hash is in the value, so a password change
  (or a deleted user's name taken by another) invalidates the entry. The
  key is derived from the cluster secret (:func:`cache_key`), so every
  login db_proxy finds the entries the others wrote and a restarted one
  finds its own. Without the cluster secret (loopback-only development)
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
from dataclasses import dataclass
from typing import Any

from common.errors import Unavailable
from common.throttle import Throttle
from db_proxy import metrics
from db_proxy.login_redis import ScriptPipe
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
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str, now: float) -> Any | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: Any, expires: float) -> None:
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

    def key(self, name: str, md5: str) -> str:
        """The Redis key of a verified-password entry: only what the client sent (name, md5)."""
        # Unambiguous: the name's length comes first, the md5 is the rest.
        message = f"{len(name)}:{name}:{md5.lower()}".encode("utf-8", "surrogatepass")
        return "imc:pw:" + hmac.digest(self._key, message, "sha256").hex()[:32]

    def token(self, user_id: int, password_hash: str) -> str:
        """An entry's value: the user it was verified for and its stored hash (a change invalidates it)."""
        message = f"v\0{user_id}:{password_hash}".encode()
        return hmac.digest(self._key, message, "sha256").hex()[:32]

    def matches(self, found: Any, user_id: int, password_hash: str) -> bool:
        """Whether ``found`` (an entry's value, as Redis returned it, or None) verifies this user."""
        if self.ttl <= 0 or found is None:
            return False
        if isinstance(found, bytes):
            found = found.decode("ascii", "replace")
        return hmac.compare_digest(str(found), self.token(user_id, password_hash))

    def recall(self, key: str) -> Any | None:
        """The in-process entry (Redis absent or failing)."""
        return self._memory.get(key, time.monotonic())

    def keep(self, key: str, token: str) -> None:
        self._memory.set(key, token, time.monotonic() + self.ttl)

    async def is_verified(self, user_id: int, password_hash: str, md5: str, name: str = "") -> bool:
        """One lookup on its own (the login path reads it with the throttle's, see check_login)."""
        found = None
        if self.ttl > 0:
            key = self.key(name, md5)
            found = await self._lookup(key)
        hit = self.matches(found, user_id, password_hash)
        metrics.LOGIN_CACHE.labels("hit" if hit else "miss").inc()
        return hit

    async def _lookup(self, key: str) -> Any | None:
        if self.redis is not None:
            try:
                return await self.redis.get(key)
            except Exception as exc:
                log.warning("redis unavailable for the login cache: %s", exc)
        return self.recall(key)

    async def remember(self, user_id: int, password_hash: str, md5: str, name: str = "") -> None:
        if self.ttl <= 0:
            return
        key, token = self.key(name, md5), self.token(user_id, password_hash)
        self.keep(key, token)
        if self.redis is not None:
            try:
                await self.redis.set(key, token, ex=self.ttl)
            except Exception as exc:
                log.warning("redis unavailable for the login cache: %s", exc)


# Redis layout of the failure counters (every key and field fixed-size):
#   imc:lt:u:<user>   hash: f (the user's failures), n (its wait), c<source>, n<source> (per pair)
#   imc:lt:s:<source> hash: f (the address's failures), l (locked until)
#   imc:lt:k:<user>   set of known-good addresses (at most KNOWN_SOURCES)
# Counter keys expire login_failure_window after the last failure.
PAIRS_PER_USER = 512  # addresses counted per user in Redis; past it only the per-user count grows
REDIS_LOG_INTERVAL = 10.0
# A known-good address's set is refreshed (its expiry pushed back to KNOWN_TTL) by a login at
# most this often: a returning login that finds nothing to clear writes nothing.
KNOWN_REFRESH = 86400

# One round trip per login attempt: the throttle's counters, whether the address is known-good
# (and for how long still), and the verified-password entry. Redis runs a script atomically,
# as the pipeline it replaces was not: the counters are read as one snapshot.
# KEYS: user counters, source counters, known-good set, verified-password entry. ARGV: source.
# The answer is one string of 9 fields ('' for none), blank-separated (none holds a blank):
# a client parses one bulk string much faster than an array of nine.
CHECK_SCRIPT = """
local u = redis.call('HMGET', KEYS[1], 'f', 'n', 'c' .. ARGV[1], 'n' .. ARGV[1])
local s = redis.call('HMGET', KEYS[2], 'f', 'l')
local known = redis.call('SISMEMBER', KEYS[3], ARGV[1])
local ttl = -2
if known == 1 then ttl = redis.call('TTL', KEYS[3]) end
local out = {u[1], u[2], u[3], u[4], s[1], s[2], known, ttl, redis.call('GET', KEYS[4])}
for i = 1, 9 do out[i] = out[i] and tostring(out[i]) or '' end
return table.concat(out, ' ')
"""
# After a good password, one command: the pair's counts go, the address joins the known-good set
# (bounded), and the verified-password entry is written when a hash was just checked.
# KEYS: user counters, known-good set, verified-password entry.
# ARGV: source, known ttl, known max, entry value ('' for none), entry ttl.
SUCCESS_SCRIPT = """
redis.call('HDEL', KEYS[1], 'c' .. ARGV[1], 'n' .. ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local n = redis.call('SCARD', KEYS[2])
local most = tonumber(ARGV[3])
if n > most then redis.call('SPOP', KEYS[2], n - most) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5]) end
return n
"""


@dataclass(slots=True)
class LoginCheck:
    """What :meth:`ThrottleCounters.check_login` found for one attempt."""

    keys: Keys
    attempt: Attempt
    refusal: Refusal | None
    cache_key: str  # the verified-password entry's key
    verified: Any  # that entry's value (None: none), from Redis or the in-process map
    clean: bool  # nothing to write after a success: no pair counts, address known and fresh


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
        self._check_script: Any = None
        self._success_script: Any = None
        # The login's scripts go over a pipelined connection of their own (db_proxy/login_redis.py)
        # when Redis is plain TCP, else through redis-py.
        self.pipe = ScriptPipe.for_client(redis) if redis is not None else None
        if redis is not None:
            # EVALSHA, and on NOSCRIPT (a restarted or flushed Redis) loaded again and retried.
            self._check_script = self._script(redis, CHECK_SCRIPT)
            self._success_script = self._script(redis, SUCCESS_SCRIPT)

    def _script(self, redis: Any, script: str) -> Any:
        pipe = self.pipe
        if pipe is None:
            return redis.register_script(script)

        async def run(keys: list[str], args: list[Any]) -> Any:
            return await pipe.run_script(script, keys, args)

        return run

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()

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

    async def check_login(
        self, source: str, name: str, cache: LoginCache, md5: str, now: float
    ) -> LoginCheck:
        """:meth:`check` and the verified-password lookup of (name, md5), in one Redis command."""
        keys = self.throttle.keys(source, name)
        cache_key = cache.key(name, md5)
        checked = None
        if self._check_script is not None:
            user, src = keys.user.hex(), keys.source.hex()
            try:
                answer = await self._check_script(
                    keys=[f"imc:lt:u:{user}", f"imc:lt:s:{src}", f"imc:lt:k:{user}", cache_key], args=[src]
                )
                text = answer.decode("ascii") if isinstance(answer, bytes) else str(answer)
                fields = [f or None for f in text.split(" ")]
                uf, un, pf, pn, sf, sl, known, ttl, found = fields
                attempt = Attempt(
                    pair=Count(_int(pf), _float(pn)),
                    source=Count(_int(sf), _float(sl)),
                    user=Count(_int(uf), _float(un)),
                    known=known == "1",
                )
                clean = (
                    pf is None and pn is None and known == "1" and int(ttl or 0) > KNOWN_TTL - KNOWN_REFRESH
                )
                checked = LoginCheck(keys, attempt, None, cache_key, found, clean)
            except Exception as exc:
                self._warn(exc)
        if checked is None:
            checked = LoginCheck(
                keys, self.memory.load(keys, now), None, cache_key, cache.recall(cache_key), False
            )
        checked.refusal = self.throttle.check(checked.attempt, now, self.in_flight.running(keys))
        if checked.refusal is not None:
            metrics.LOGIN_REFUSED.labels(checked.refusal.reason).inc()
        return checked

    async def login_succeeded(
        self, checked: LoginCheck, token: str | None, cache: LoginCache, now: float
    ) -> None:
        """A good password (``token``: the verified-password entry to write, None after a cache hit):
        what :meth:`succeeded` does, in one Redis command, or none when there is nothing to write."""
        keys = checked.keys
        self.memory.succeeded(keys, now)
        if token is not None and cache.ttl > 0:
            cache.keep(checked.cache_key, token)
        if self._success_script is None or (token is None and checked.clean):
            return
        user, source = keys.user.hex(), keys.source.hex()
        try:
            await self._success_script(
                keys=[f"imc:lt:u:{user}", f"imc:lt:k:{user}", checked.cache_key],
                args=[
                    source,
                    int(KNOWN_TTL),
                    KNOWN_SOURCES,
                    token if cache.ttl > 0 and token else "",
                    cache.ttl,
                ],
            )
        except Exception as exc:
            self._warn(exc)

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
