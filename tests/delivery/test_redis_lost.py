"""Redis is not authoritative: a lost stream is detected, its group recreated, and the caller told."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from common.delivery import Entry, StreamLost, open_delivery_log
from common.delivery.redis_streams import RedisStreamsDeliveryLog
from tests.delivery.conftest import REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
async def log() -> AsyncIterator[RedisStreamsDeliveryLog]:
    prefix = f"imtest:dlog:{secrets.token_hex(4)}"
    opened = await open_delivery_log(f"{REDIS_URL}?partitions=2&prefix={prefix}&max_entries=100")
    assert isinstance(opened, RedisStreamsDeliveryLog)
    yield opened
    await opened.delete()
    await opened.close()


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_a_deleted_stream_is_reported_lost_then_consumed_again(
    log: RedisStreamsDeliveryLog, raw: aioredis.Redis
) -> None:
    await log.append([Entry(1, (1, 1, 2), 1, b"before")])
    first = await log.consume("push", "c1", [0, 1], 10, block_s=0)
    assert [d.entry.payload for d in first] == [b"before"]
    await raw.delete(log.key(1))  # as a FLUSHALL or an empty failover would
    after = Entry(1, (1, 1, 2), 2, b"after")
    await log.append([after])  # XADD recreates the stream, without the group
    with pytest.raises(StreamLost) as lost:
        await log.consume("push", "c1", [0, 1], 10, block_s=0)
    assert lost.value.partitions == (1,)  # partition 0 was not lost
    again = await log.consume("push", "c1", [0, 1], 10, block_s=0)
    # The recreated group starts at the beginning: nothing appended since the loss is skipped.
    assert [d.entry for d in again] == [after]


async def test_a_deleted_stream_without_appends_is_lost_too(
    log: RedisStreamsDeliveryLog, raw: aioredis.Redis
) -> None:
    assert await log.consume("push", "c1", [0], 10, block_s=0) == []
    await raw.delete(log.key(0))
    with pytest.raises(StreamLost) as lost:
        await log.consume("push", "c1", [0], 10, block_s=0.1)
    assert lost.value.partitions == (0,)
    assert await log.consume("push", "c1", [0], 10, block_s=0) == []


async def test_claim_and_ack_after_a_loss(log: RedisStreamsDeliveryLog, raw: aioredis.Redis) -> None:
    await log.append([Entry(0, (1, 1, 2), 1, b"m")])
    held = await log.consume("push", "dies", [0], 10, block_s=0)
    await raw.delete(log.key(0))
    await log.ack("push", held)  # nothing left to acknowledge: not an error
    with pytest.raises(StreamLost):
        await log.claim_stale("push", "survivor", 0.0, 10, [0])
    assert await log.claim_stale("push", "survivor", 0.0, 10, [0]) == []
    assert await log.pending("push", 0) == 0


async def test_an_unreachable_redis_is_unavailable() -> None:
    from common.errors import Unavailable

    log = await open_delivery_log("redis://127.0.0.1:1/0?partitions=1")
    try:
        with pytest.raises(Unavailable):
            await log.append([Entry(0, (1, 1, 2), 1, b"m")])
        with pytest.raises(Unavailable):
            await log.consume("push", "c1", [0], 1, block_s=0)
    finally:
        await log.close()
