"""The delivery log's contract, run on every backend (memory, Redis Streams, JetStream).

Nothing here sleeps: a test polls with a bounded deadline for what must come.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from common.delivery import Delivery, DeliveryLog, Entry
from common.delivery.jetstream import JetStreamDeliveryLog
from common.delivery.redis_streams import RedisStreamsDeliveryLog
from common.errors import InvalidArgument, Overloaded, Unavailable
from tests.delivery.conftest import MakeLog

DEADLINE_S = 10.0


def entries_for(log: DeliveryLog, conversations: int, per_conversation: int) -> list[Entry]:
    out = []
    for msg_id in range(1, per_conversation + 1):
        for c in range(conversations):
            key = (1, 100 + c, 200 + c)
            out.append(Entry.of(key, msg_id, f"{key}:{msg_id}".encode(), log.partitions))
    return out


async def poll(fetch: Callable[[], Awaitable[list[Delivery]]], want: int) -> list[Delivery]:
    """Deliveries from repeated ``fetch`` calls until ``want`` came (or the deadline)."""
    got: list[Delivery] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(got) < want:
            got.extend(await fetch())
    return got


async def consume_all(log: DeliveryLog, group: str, consumer: str, want: int) -> list[Delivery]:
    parts = list(range(log.partitions))
    return await poll(lambda: log.consume(group, consumer, parts, 50, block_s=0.2), want)


async def test_consume_returns_every_entry_in_order_per_partition(make_log: MakeLog) -> None:
    log = await make_log()
    entries = entries_for(log, conversations=6, per_conversation=5)
    await log.append(entries[:10])
    await log.append(entries[10:])
    got = await consume_all(log, "push", "c1", len(entries))
    assert sorted((d.entry.conversation, d.entry.msg_id) for d in got) == sorted(
        (e.conversation, e.msg_id) for e in entries
    )
    assert {d.deliveries for d in got} == {1}
    assert all(d.entry == next(e for e in entries if e.payload == d.entry.payload) for d in got)
    for p in range(log.partitions):
        in_log = [e for e in entries if e.partition == p]
        delivered = [d.entry for d in got if d.entry.partition == p]
        assert delivered == in_log  # the order of append, per partition (so per conversation)


async def test_consume_without_news_returns_nothing(make_log: MakeLog) -> None:
    log = await make_log()
    assert await log.consume("push", "c1", [0, 1], 10, block_s=0) == []


async def test_a_blocked_consume_wakes_on_append(make_log: MakeLog) -> None:
    log = await make_log(partitions=2)
    assert await log.consume("push", "c1", [0, 1], 10, block_s=0) == []  # the group exists
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.ensure_future(log.consume("push", "c1", [0, 1], 10, block_s=30.0))
    await asyncio.sleep(0)  # let it start waiting (a yield, not a timed sleep)
    entry = Entry.of((1, 2, 3), 1, b"x", log.partitions)
    await log.append([entry])
    got = await asyncio.wait_for(waiter, DEADLINE_S)
    assert [d.entry for d in got] == [entry]
    assert loop.time() - started < DEADLINE_S  # woken by the append, not by its 30 s block


async def test_ack_removes_from_pending(make_log: MakeLog) -> None:
    log = await make_log(partitions=1)
    entries = entries_for(log, 1, 4)
    await log.append(entries)
    got = await consume_all(log, "push", "c1", 4)
    assert await log.pending("push", 0) == 4
    await log.ack("push", got[:3])
    assert await log.pending("push", 0) == 1
    await log.ack("push", got[3:])
    assert await log.pending("push", 0) == 0
    assert await log.claim_stale("push", "c2", 0.0, 10) == []


async def test_an_entry_held_by_a_dead_consumer_is_redelivered_to_another(make_log: MakeLog) -> None:
    log = await make_log(partitions=2, ack_wait=1.0)
    entries = entries_for(log, 3, 2)
    await log.append(entries)
    held = await consume_all(log, "push", "dies", len(entries))
    await log.ack("push", held[1:])  # it dies holding the first one

    async def take_over() -> list[Delivery]:
        # Redis and memory hand it out by claim_stale; JetStream by consume after ack_wait.
        claimed = await log.claim_stale("push", "survivor", idle_s=0.2, max_entries=10)
        return claimed + await log.consume("push", "survivor", [0, 1], 10, block_s=0.2)

    again = await poll(take_over, 1)
    assert [d.entry for d in again] == [held[0].entry]
    assert again[0].deliveries >= 2
    await log.ack("push", again)
    assert await log.pending("push", held[0].entry.partition) == 0


async def test_every_group_gets_every_entry(make_log: MakeLog) -> None:
    log = await make_log()
    entries = entries_for(log, 4, 3)
    await log.append(entries)
    push = await consume_all(log, "push", "p1", len(entries))
    audit = await consume_all(log, "audit", "a1", len(entries))
    assert sorted(d.entry.payload for d in push) == sorted(d.entry.payload for d in audit)
    assert len(push) == len(entries)
    await log.ack("push", push)
    assert await log.pending("audit", entries[0].partition) > 0  # one group's ack is its own


async def test_a_partition_never_holds_more_than_its_bound(make_log: MakeLog) -> None:
    log = await make_log(partitions=1, max_entries=5)
    refused = 0
    for msg_id in range(1, 9):
        try:
            await log.append(
                [Entry((1, 1, 2), 0, (1, 1, 2), msg_id, b"m")]
                if False
                else [Entry(0, (1, 1, 2), msg_id, b"m")]
            )
        except Overloaded:
            refused += 1
    # Memory and JetStream refuse the overflow; Redis (not authoritative) trims the oldest.
    assert await log.length(0) == 5
    assert refused == (0 if isinstance(log, RedisStreamsDeliveryLog) else 3)


async def test_trim_keeps_the_newest(make_log: MakeLog) -> None:
    log = await make_log(partitions=1)
    await log.append([Entry(0, (1, 1, 2), i, b"m") for i in range(1, 11)])
    await log.trim(3)
    assert await log.length(0) == 3
    got = await consume_all(log, "push", "c1", 3)
    assert [d.entry.msg_id for d in got] == [8, 9, 10]


async def test_bad_partitions_are_refused(make_log: MakeLog) -> None:
    log = await make_log(partitions=2)
    with pytest.raises(InvalidArgument):
        await log.append([Entry(2, (1, 1, 2), 1, b"m")])
    with pytest.raises(InvalidArgument):
        await log.consume("push", "c1", [5], 1, block_s=0)


@pytest.mark.nats
async def test_an_unreachable_nats_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="unreachable"):
        await JetStreamDeliveryLog.connect("nats://127.0.0.1:1", 1, connect_budget_s=0.5)


async def test_another_client_of_the_same_log_takes_over(make_log: MakeLog, backend: str) -> None:
    if backend == "memory":
        pytest.skip("the in-process log is one process's")
    appender = await make_log(partitions=2, ack_wait=1.0)
    first = await make_log(same_as=appender)
    second = await make_log(same_as=appender)
    entries = entries_for(appender, 2, 2)
    await appender.append(entries)
    held = await consume_all(first, "push", "first", len(entries))
    assert sorted(d.entry.payload for d in held) == sorted(e.payload for e in entries)
    await first.close()  # dies without acking

    async def take_over() -> list[Delivery]:
        claimed = await second.claim_stale("push", "second", idle_s=0.2, max_entries=10)
        return claimed + await second.consume("push", "second", [0, 1], 10, block_s=0.2)

    again = await poll(take_over, len(entries))
    assert sorted(d.entry.payload for d in again) == sorted(e.payload for e in entries)
    await second.ack("push", again)
    assert [await second.pending("push", p) for p in (0, 1)] == [0, 0]


@pytest.mark.nats
async def test_jetstream_stores_a_retried_append_once(make_log: MakeLog, backend: str) -> None:
    if backend != "nats":
        pytest.skip("deduplication by Nats-Msg-Id is JetStream's")
    log = await make_log(partitions=1)
    entry = Entry(0, (1, 1, 2), 7, b"m")
    await log.append([entry])
    await log.append([entry])  # db_proxy retrying after a lost PubAck
    assert await log.length(0) == 1


async def test_a_takeover_with_idle_0_gets_everything_pending_at_once(
    make_log: MakeLog, backend: str
) -> None:
    # A long ack wait: on JetStream the take-over must not wait for it.
    log = await make_log(partitions=2, ack_wait=30.0)
    other = await make_log(same_as=log)
    entries = entries_for(log, 2, 3)
    await log.append(entries)
    held = await consume_all(log, "push", "dies", len(entries))
    await log.ack("push", held[:1])
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def take_over() -> list[Delivery]:
        claimed = await other.claim_stale("push", "heir", idle_s=0, max_entries=100)
        return claimed + await other.consume("push", "heir", [0, 1], 10, block_s=0.2)

    again = await poll(take_over, len(entries) - 1)
    assert sorted(d.entry.payload for d in again) == sorted(d.entry.payload for d in held[1:])
    assert all(d.deliveries >= 2 for d in again)
    assert loop.time() - started < 5.0  # not the 30 s ack wait
    await other.ack("push", again)
    assert [await other.pending("push", p) for p in (0, 1)] == [0, 0]


async def test_given_back_entries_go_to_the_next_consumer(make_log: MakeLog) -> None:
    log = await make_log(partitions=1, ack_wait=30.0)
    other = await make_log(same_as=log)
    await log.append(entries_for(log, 1, 2))
    held = await consume_all(log, "push", "stopping", 2)
    await log.give_back("push", held)

    async def next_holder() -> list[Delivery]:
        # JetStream hands them out again by itself (a NAK); elsewhere a claim takes them.
        claimed = await other.claim_stale("push", "next", idle_s=0, max_entries=10)
        return claimed + await other.consume("push", "next", [0], 10, block_s=0.2)

    again = await poll(next_holder, 2)
    assert sorted(d.entry.msg_id for d in again) == [1, 2]


async def test_another_entry_of_the_same_message_is_stored_too(make_log: MakeLog) -> None:
    # A resend recognised as a duplicate is appended again (its first push may
    # never have happened): a different payload (origin, commit time), same msg id.
    log = await make_log(partitions=1)
    await log.append([Entry(0, (1, 1, 2), 7, b"first")])
    await log.append([Entry(0, (1, 1, 2), 7, b"again")])
    assert await log.length(0) == 2
