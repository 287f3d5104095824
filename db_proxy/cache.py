"""Caches that make logins cheap; losing any of them costs time, never correctness.

* Verified passwords: scrypt is slow on purpose (~70 ms), so a reconnect
  storm would queue behind it. After one successful check we remember
  HMAC(secret, user_id:md5) for a while; a login that matches it skips
  scrypt. The secret lives only in this process, so the cached values are
  useless to anyone who reads Redis.
* Failed logins per user name, so a password-guessing client is refused
  before it costs a hash.

Both live in Redis when one is configured (shared by the db_proxies, kept
across their restarts) and in a bounded in-process map otherwise or when
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


class LoginCache:
    def __init__(self, redis: Any | None, ttl: int, failure_limit: int, failure_window: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self.failure_limit = failure_limit
        self.failure_window = failure_window
        self._secret = os.urandom(32)
        self._memory = _BoundedMap(MEMORY_ENTRIES)

    def _token(self, user_id: int, password_hash: str, md5: str) -> str:
        # Bound to the stored hash too, so a password change invalidates it.
        message = f"{user_id}:{password_hash}:{md5.lower()}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    async def is_verified(self, user_id: int, password_hash: str, md5: str) -> bool:
        if self.ttl <= 0:
            return False
        key = f"imc:pw:{self._token(user_id, password_hash, md5)}"
        if self.redis is not None:
            try:
                return bool(await self.redis.exists(key))
            except Exception as exc:
                log.warning("redis unavailable for the login cache: %s", exc)
        return self._memory.get(key, time.monotonic()) is not None

    async def remember(self, user_id: int, password_hash: str, md5: str) -> None:
        if self.ttl <= 0:
            return
        key = f"imc:pw:{self._token(user_id, password_hash, md5)}"
        self._memory.set(key, 1, time.monotonic() + self.ttl)
        if self.redis is not None:
            try:
                await self.redis.set(key, 1, ex=self.ttl)
            except Exception as exc:
                log.warning("redis unavailable for the login cache: %s", exc)

    async def recent_failures(self, user_name: str) -> int:
        """Failed logins for this name in the current window."""
        key = f"imc:fail:{user_name}"
        count: int | None = None
        if self.redis is not None:
            try:
                raw = await self.redis.get(key)
                count = int(raw) if raw is not None else 0
            except Exception as exc:
                log.warning("redis unavailable for the failure counter: %s", exc)
        if count is None:
            count = self._memory.get(key, time.monotonic()) or 0
        return count

    async def record_failure(self, user_name: str) -> None:
        key = f"imc:fail:{user_name}"
        now = time.monotonic()
        self._memory.set(key, (self._memory.get(key, now) or 0) + 1, now + self.failure_window)
        if self.redis is not None:
            try:
                pipe = self.redis.pipeline()
                pipe.incr(key)
                pipe.expire(key, self.failure_window, nx=True)
                await pipe.execute()
            except Exception as exc:
                log.warning("redis unavailable for the failure counter: %s", exc)

    async def clear_failures(self, user_name: str) -> None:
        key = f"imc:fail:{user_name}"
        self._memory.delete(key)
        if self.redis is not None:
            try:
                await self.redis.delete(key)
            except Exception as exc:
                log.warning("redis unavailable for the failure counter: %s", exc)
