"""The verified-password cache's key comes from the cluster secret: shared through Redis, kept on restart."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from db_proxy.cache import LoginCache, cache_key
from db_proxy.server import connect_redis

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
SECRET = b"s" * 43
OTHER = b"o" * 43


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = await connect_redis(REDIS_URL)
    assert client is not None, "these tests need the Redis at IMCLUSTER_TEST_REDIS"
    yield client
    await client.aclose()


def test_key_is_derived_from_the_current_secret_only() -> None:
    assert cache_key((SECRET,)) == cache_key((SECRET,))
    # During a rotation (current, previous) only the current secret counts.
    assert cache_key((SECRET, OTHER)) == cache_key((SECRET,)) != cache_key((OTHER, SECRET))


def test_key_is_not_the_login_throttles() -> None:
    from db_proxy.login_throttle import derive_key

    assert cache_key((SECRET,)) != derive_key((SECRET,))  # a distinct label for each use


def test_without_a_secret_the_key_is_random_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="db.cache"):
        first, second = cache_key(()), cache_key(())
    assert first != second
    assert "this process's own" in caplog.text


async def test_two_instances_with_the_same_secret_share_an_entry(redis: Any) -> None:
    # Two db_proxies, or one before and after a restart: each has its own in-process map.
    writer = LoginCache.for_cluster(redis, 60, (SECRET,))  # as db_proxy/server.py makes it
    reader = LoginCache(redis, ttl=60, key=cache_key((SECRET,)))
    user_id = secrets.randbelow(1 << 30)
    await writer.remember(user_id, "scrypt$hash-1", "ABCDEF")
    assert await reader.is_verified(user_id, "scrypt$hash-1", "abcdef")
    assert not await reader.is_verified(user_id, "scrypt$hash-2", "abcdef")  # the password changed
    assert not await reader.is_verified(user_id, "scrypt$hash-1", "abcdee")  # another password
    assert not await reader.is_verified(user_id + 1, "scrypt$hash-1", "abcdef")  # another user


async def test_a_different_secret_does_not_match(redis: Any) -> None:
    writer = LoginCache(redis, ttl=60, key=cache_key((SECRET,)))
    user_id = secrets.randbelow(1 << 30)
    await writer.remember(user_id, "scrypt$hash", "abcdef")
    assert not await LoginCache(redis, ttl=60, key=cache_key((OTHER,))).is_verified(
        user_id, "scrypt$hash", "abcdef"
    )
    assert not await LoginCache(redis, ttl=60).is_verified(user_id, "scrypt$hash", "abcdef")  # no secret


async def test_redis_holds_only_a_keyed_hash(redis: Any) -> None:
    user_id = secrets.randbelow(1 << 30)
    md5 = secrets.token_hex(16)
    await LoginCache(redis, ttl=60, key=cache_key((SECRET,))).remember(user_id, "scrypt$hash", md5)
    names = [k.decode() async for k in redis.scan_iter(match="imc:pw:*", count=1000)]
    assert names and not any(md5 in name for name in names)
