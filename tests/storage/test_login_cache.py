"""db_proxy's login caches, in process memory and in a real Redis."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from db_proxy.cache import LoginCache
from db_proxy.server import connect_redis

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["memory", "redis"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Any | None]:
    if request.param == "memory":
        yield None
        return
    client = await connect_redis(REDIS_URL)
    assert client is not None
    yield client
    await client.aclose()


async def test_failures_are_counted_limited_and_cleared(redis: Any | None) -> None:
    cache = LoginCache(redis, ttl=60, failure_limit=3, failure_window=60)
    name = f"u-{secrets.token_hex(4)}"
    assert await cache.recent_failures(name) == 0
    for _ in range(3):
        await cache.record_failure(name)
    assert await cache.recent_failures(name) == 3
    await cache.clear_failures(name)
    assert await cache.recent_failures(name) == 0


async def test_verified_password_is_remembered_only_for_that_password_and_hash(redis: Any | None) -> None:
    cache = LoginCache(redis, ttl=60, failure_limit=3, failure_window=60)
    user_id = secrets.randbelow(1 << 30)
    assert not await cache.is_verified(user_id, "hash-1", "md5-a")
    await cache.remember(user_id, "hash-1", "md5-a")
    assert await cache.is_verified(user_id, "hash-1", "md5-a")
    assert not await cache.is_verified(user_id, "hash-1", "md5-b")  # another password
    assert not await cache.is_verified(user_id, "hash-2", "md5-a")  # the password was changed


async def test_redis_cache_is_shared_between_instances_but_not_readable() -> None:
    client = await connect_redis(REDIS_URL)
    assert client is not None
    try:
        first = LoginCache(client, ttl=60, failure_limit=3, failure_window=60)
        second = LoginCache(client, ttl=60, failure_limit=3, failure_window=60)
        name = f"u-{secrets.token_hex(4)}"
        await first.record_failure(name)
        assert await second.recent_failures(name) == 1  # another db_proxy sees the count
        # Verified-password entries are keyed by a per-process secret: useless to anyone else.
        await first.remember(7, "h", "m")
        assert not await second.is_verified(7, "h", "m")
        await first.clear_failures(name)
    finally:
        await client.aclose()
