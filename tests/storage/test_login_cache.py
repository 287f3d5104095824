"""db_proxy's login caches, in process memory and in a real Redis."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from db_proxy.cache import LoginCache, ThrottleCounters
from db_proxy.login_throttle import Limits, LoginThrottle
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


async def test_failures_are_counted_delayed_and_cleared(redis: Any | None) -> None:
    counters = ThrottleCounters(redis, LoginThrottle(Limits(failure_limit=3), secrets.token_bytes(32)))
    name, now = f"u-{secrets.token_hex(4)}", 1000.0
    keys, attempt, refusal = await counters.check("10.0.0.1", name, now)
    assert attempt.pair.failures == 0 and refusal is None
    for _ in range(3):
        keys, attempt, refusal = await counters.check("10.0.0.1", name, now)
        await counters.failed(keys, attempt, now)
    keys, attempt, refusal = await counters.check("10.0.0.1", name, now)
    assert attempt.pair.failures == 3 and refusal is not None and refusal.reason == "delayed"
    assert (await counters.check("10.0.0.2", name, now))[2] is None  # another address is free
    await counters.unlock(name)
    assert (await counters.check("10.0.0.1", name, now))[2] is None


async def test_verified_password_is_remembered_only_for_that_password_and_hash(redis: Any | None) -> None:
    cache = LoginCache(redis, ttl=60)
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
        first = LoginCache(client, ttl=60)
        second = LoginCache(client, ttl=60)
        key = secrets.token_bytes(32)  # as every db_proxy derives it from the cluster secret
        counters = [ThrottleCounters(client, LoginThrottle(Limits(), key)) for _ in range(2)]
        name = f"u-{secrets.token_hex(4)}"
        keys, attempt, _ = await counters[0].check("10.0.0.1", name, 1000.0)
        await counters[0].failed(keys, attempt, 1000.0)
        _, seen, _ = await counters[1].check("10.0.0.1", name, 1000.0)
        assert seen.pair.failures == 1  # another db_proxy sees the count
        # Verified-password entries are keyed by a per-process secret: useless to anyone else.
        await first.remember(7, "h", "m")
        assert not await second.is_verified(7, "h", "m")
        await counters[0].unlock(name)
    finally:
        await client.aclose()
