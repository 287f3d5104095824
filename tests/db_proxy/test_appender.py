"""The append after a commit never fails the message: while the delivery log
refuses, entries wait in a bounded backlog and go out in order once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from common.delivery import Entry
from common.delivery.memory import MemoryDeliveryLog
from common.errors import Unavailable
from db_proxy.push import LogAppender


class FlakyLog(MemoryDeliveryLog):
    def __init__(self) -> None:
        super().__init__(2)
        self.down = False
        self.hang = False
        self.calls = 0

    async def append(self, entries: Sequence[Entry]) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise Unavailable("log down")
        await super().append(entries)


def entries(first: int, count: int, size: int = 1) -> list[Entry]:
    return [Entry.of((1, 1, 2), n, b"x" * size, 2) for n in range(first, first + count)]


async def appended(log: MemoryDeliveryLog) -> list[int]:
    got = await log.consume("t", "t", [0, 1], 1000, block_s=0)
    return [d.entry.msg_id for d in got]


async def test_entries_wait_while_the_log_is_down_and_go_out_in_order() -> None:
    log = FlakyLog()
    appender = LogAppender(log, retry_initial=0.01, retry_cap=0.02)
    appender.start()
    try:
        await appender.append(entries(1, 2))
        log.down = True
        await appender.append(entries(3, 2))  # refused: kept
        log.down = False
        await appender.append(entries(5, 1))  # behind what waits, even though the log is back
        assert len(appender.backlog) in (0, 1, 2, 3)
        async with asyncio.timeout(5):
            while appender.backlog:
                await asyncio.sleep(0.01)
        assert await appended(log) == [1, 2, 3, 4, 5]
        assert appender.failures == 1 and appender.dropped == 0
    finally:
        await appender.stop(1.0)


async def test_a_hanging_log_does_not_hold_up_the_ack() -> None:
    log = FlakyLog()
    log.hang = True
    appender = LogAppender(log, append_timeout=0.1, retry_initial=0.01, retry_cap=0.02)
    appender.start()
    try:
        async with asyncio.timeout(2):
            await appender.append(entries(1, 1))  # bounded by append_timeout
        assert len(appender.backlog) == 1 and appender.failures >= 1
        log.hang = False
        async with asyncio.timeout(5):
            while appender.backlog:
                await asyncio.sleep(0.01)
        assert await appended(log) == [1]
    finally:
        await appender.stop(1.0)


async def test_the_backlog_is_bounded_and_drops_are_counted() -> None:
    log = FlakyLog()
    log.down = True
    appender = LogAppender(log, max_entries=3, max_bytes=1000)  # not started: nothing drains
    await appender.append(entries(1, 5))
    assert [e.msg_id for e in appender.backlog] == [1, 2, 3] and appender.dropped == 2
    by_bytes = LogAppender(log, max_entries=100, max_bytes=10)
    await by_bytes.append(entries(1, 3, size=4))
    assert len(by_bytes.backlog) == 2 and by_bytes.backlog_bytes == 8 and by_bytes.dropped == 1
