"""Partition leases, run on every backend: one holder at a time, renewed, lapsing, released.

A lapse is waited for by polling with a bounded deadline, never by a sleep.
"""

from __future__ import annotations

import asyncio

import pytest

from common.errors import InvalidArgument
from tests.delivery.conftest import MakeLog

DEADLINE_S = 10.0


async def test_a_lease_is_exclusive(make_log: MakeLog) -> None:
    log = await make_log(partitions=3)
    other = await make_log(same_as=log)
    assert await log.hold(0, "a", 5.0)
    assert not await other.hold(0, "b", 5.0)
    assert await other.hold(1, "b", 5.0)
    assert await log.holders() == {0: "a", 1: "b"}
    assert await other.holders() == {0: "a", 1: "b"}


async def test_the_holder_renews(make_log: MakeLog) -> None:
    log = await make_log(partitions=2)
    other = await make_log(same_as=log)
    for _ in range(3):
        assert await log.hold(0, "a", 5.0)
        assert not await other.hold(0, "b", 5.0)
    assert await log.holders() == {0: "a"}


async def test_a_lease_not_renewed_lapses_and_another_takes_it(make_log: MakeLog) -> None:
    log = await make_log(partitions=2)
    other = await make_log(same_as=log)
    ttl = 0.5
    loop = asyncio.get_running_loop()
    assert await log.hold(1, "a", ttl)
    taken_at = loop.time()
    async with asyncio.timeout(DEADLINE_S):
        while not await other.hold(1, "b", ttl):
            await asyncio.sleep(0.02)  # a poll interval, not a wait for an outcome
    assert loop.time() - taken_at >= ttl * 0.8  # not before it lapsed (clock granularity aside)
    assert await log.holders() == {1: "b"}
    assert not await log.hold(1, "a", ttl)  # the old holder's renewal fails: it lost it


async def test_a_renewed_lease_outlives_its_ttl(make_log: MakeLog) -> None:
    log = await make_log(partitions=1)
    other = await make_log(same_as=log)
    ttl = 0.6
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 3 * ttl:  # bounded: 1.8 s of renewing every ttl/3
        assert await log.hold(0, "a", ttl)
        assert not await other.hold(0, "b", ttl)
        await asyncio.sleep(ttl / 3)
    assert await other.holders() == {0: "a"}


async def test_release_frees_the_partition(make_log: MakeLog) -> None:
    log = await make_log(partitions=2)
    other = await make_log(same_as=log)
    assert await log.hold(0, "a", 30.0)
    await other.release(0, "b")  # not b's: nothing happens
    assert await log.holders() == {0: "a"}
    await log.release(0, "a")
    assert await log.holders() == {}
    assert await other.hold(0, "b", 30.0)
    await log.release(0, "a")  # a no longer holds it: b keeps it
    assert await other.holders() == {0: "b"}
    await other.release(1, "b")  # never held: fine


async def test_holders_of_a_fresh_log_is_empty(make_log: MakeLog) -> None:
    log = await make_log(partitions=2)
    assert await log.holders() == {}


async def test_bad_lease_arguments_are_refused(make_log: MakeLog) -> None:
    log = await make_log(partitions=2)
    with pytest.raises(InvalidArgument):
        await log.hold(2, "a", 1.0)
    with pytest.raises(InvalidArgument):
        await log.hold(0, "a", 0.0)
