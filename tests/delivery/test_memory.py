"""What only the in-process log does: its bounds, reclaiming acked entries, and time passed in."""

from __future__ import annotations

import pytest

from common.delivery import Entry, open_delivery_log
from common.delivery.memory import MemoryDeliveryLog
from common.errors import InvalidArgument, Overloaded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(msg_id: int, size: int = 1, partition: int = 0) -> Entry:
    return Entry(partition, (1, 1, 2), msg_id, b"x" * size)


async def test_the_byte_bound_refuses_the_whole_batch() -> None:
    log = MemoryDeliveryLog(1, max_entries=100, max_bytes=10)
    await log.append([entry(1, 6)])
    with pytest.raises(Overloaded):
        await log.append([entry(2, 2), entry(3, 3)])
    assert await log.length(0) == 1  # nothing of the refused batch was stored
    with pytest.raises(Overloaded):
        await log.append([entry(4, 11)])  # could never fit


async def test_entries_every_group_acked_make_room() -> None:
    log = MemoryDeliveryLog(1, max_entries=3)
    await log.append([entry(i) for i in (1, 2, 3)])
    push = await log.consume("push", "p", [0], 10, block_s=0)
    audit = await log.consume("audit", "a", [0], 10, block_s=0)
    await log.ack("push", push)
    await log.ack("audit", audit[:1])
    await log.append([entry(4)])  # entry 1 was acked by both groups: dropped for it
    with pytest.raises(Overloaded):
        await log.append([entry(5)])  # entry 2 is still pending in audit
    assert await log.length(0) == 3


async def test_without_groups_nothing_is_reclaimed() -> None:
    log = MemoryDeliveryLog(1, max_entries=2)
    await log.append([entry(1), entry(2)])
    with pytest.raises(Overloaded):
        await log.append([entry(3)])


async def test_claim_waits_for_the_idle_time() -> None:
    clock = Clock()
    log = MemoryDeliveryLog(2, clock=clock)
    await log.append([entry(1), entry(2, partition=1)])
    held = await log.consume("push", "dies", [0, 1], 10, block_s=0)
    assert len(held) == 2
    clock.now += 4.9
    assert await log.claim_stale("push", "survivor", 5.0, 10) == []
    clock.now += 0.1
    claimed = await log.claim_stale("push", "survivor", 5.0, 10, partitions=[1])
    assert [(d.entry.msg_id, d.deliveries) for d in claimed] == [(2, 2)]
    # Claimed again: its idle time starts over, for the new holder.
    assert await log.claim_stale("push", "third", 5.0, 10, partitions=[1]) == []
    clock.now += 5
    assert [d.deliveries for d in await log.claim_stale("push", "third", 5.0, 10)] == [2, 3]


async def test_a_pending_entry_trimmed_away_is_forgotten() -> None:
    log = MemoryDeliveryLog(1)
    await log.append([entry(1), entry(2)])
    await log.consume("push", "dies", [0], 10, block_s=0)
    await log.trim(1)
    assert await log.pending("push", 0) == 1
    claimed = await log.claim_stale("push", "survivor", 0.0, 10)
    assert [d.entry.msg_id for d in claimed] == [2]


async def test_a_group_created_later_starts_at_the_oldest_retained() -> None:
    log = MemoryDeliveryLog(1)
    await log.append([entry(i) for i in (1, 2, 3)])
    await log.trim(2)
    got = await log.consume("late", "c", [0], 10, block_s=0)
    assert [d.entry.msg_id for d in got] == [2, 3]


async def test_factory_options() -> None:
    log = await open_delivery_log("memory://?partitions=3&max_entries=7&max_bytes=99")
    assert isinstance(log, MemoryDeliveryLog)
    assert (log.partitions, log.max_entries, log.max_bytes) == (3, 7, 99)


@pytest.mark.parametrize(
    "url",
    [
        "kafka://127.0.0.1:9092",
        "memory://?partitions=x",
        "memory://?partition=3",
        "memory://?partitions=0",
        "nats://127.0.0.1:4222?ack_wait=soon",
        "redis://127.0.0.1:6379/0?max_bytes=5",
    ],
)
async def test_factory_refuses_bad_urls(url: str) -> None:
    with pytest.raises(InvalidArgument):
        await open_delivery_log(url)
