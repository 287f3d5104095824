"""Appending committed messages to the delivery log, or keeping them while it is down.

The message is stored before its entry is appended, so a failed append must
not fail the message (its sender would resend it, and learn it was a
duplicate): the entries wait in a bounded backlog, in order, and a
background task appends them once the log takes them again. While anything
waits, later entries queue behind it, so a partition's entries reach the log
in commit order. What does not fit is dropped (counted): those recipients
find the messages on their next sync, or their gateway fills the gap.

An append is bounded in time: a log that hangs must not hold up the acks.
An append that timed out may have been stored after all; the retry then
appends it twice, which the consumer tolerates (the gateway drops the second
push; JetStream even stores it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

from common.delivery import DeliveryLog, Entry
from common.errors import Overloaded, Unavailable
from db_proxy import metrics

log = logging.getLogger("db.push")

#: Entries appended in one call when the backlog drains.
_DRAIN_BATCH = 256


class LogAppender:
    def __init__(
        self,
        delivery_log: DeliveryLog,
        max_entries: int = 100_000,
        max_bytes: int = 64 << 20,
        append_timeout: float = 1.0,
        retry_initial: float = 0.05,
        retry_cap: float = 1.0,
    ) -> None:
        self.log = delivery_log
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.append_timeout = append_timeout
        self.retry_initial = retry_initial
        self.retry_cap = retry_cap
        self.backlog: deque[Entry] = deque()
        self.backlog_bytes = 0
        self.failures = 0
        self.dropped = 0
        self._failing = False  # in a streak of failures (logged once)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="delivery-log-appender")

    async def stop(self, timeout: float) -> None:
        """Give the backlog ``timeout`` to go out, then stop (what is left is dropped, counted)."""
        if self._task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.backlog and loop.time() < deadline and not self._task.done():
            await asyncio.sleep(0.05)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self.backlog:
            log.warning("stopping with %d entries not appended to the delivery log", len(self.backlog))
            self._drop(len(self.backlog))

    async def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` in one call, or keep them for later; never raises."""
        if not entries:
            return
        if not self.backlog:
            try:
                async with asyncio.timeout(self.append_timeout):
                    await self.log.append(entries)
                return
            except (Unavailable, Overloaded, TimeoutError) as exc:
                self._failed(exc)
        self._keep(entries)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        metrics.APPEND_FAILURES.inc()
        # The first failure of a streak is news; the next ones are counted.
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        log.log(level, "delivery log append failed (%s); keeping the entries", str(exc) or "timed out")

    def _keep(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            size = len(entry.payload)
            if len(self.backlog) >= self.max_entries or self.backlog_bytes + size > self.max_bytes:
                self._drop(1)
                continue
            self.backlog.append(entry)
            self.backlog_bytes += size
        metrics.APPEND_BACKLOG.set(len(self.backlog))
        self._wake.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        metrics.PUSH_DROPPED.labels("log_full").inc(count)

    async def _drain(self) -> None:
        delay = self.retry_initial
        while True:
            await self._wake.wait()
            while self.backlog:
                batch = [self.backlog[i] for i in range(min(_DRAIN_BATCH, len(self.backlog)))]
                try:
                    async with asyncio.timeout(self.append_timeout):
                        await self.log.append(batch)
                except (Unavailable, Overloaded, TimeoutError) as exc:
                    self._failed(exc)
                    await asyncio.sleep(delay)
                    delay = min(self.retry_cap, delay * 2)
                    continue
                except Exception:
                    # A bug (an entry the log refuses as invalid): drop it rather than spin.
                    log.exception("delivery log refused %d entries; dropping them", len(batch))
                    self._drop(len(batch))
                delay = self.retry_initial
                for _ in batch:
                    self.backlog_bytes -= len(self.backlog.popleft().payload)
                metrics.APPEND_BACKLOG.set(len(self.backlog))
            if self._failing:
                self._failing = False
                log.info("delivery log appends resumed")
            self._wake.clear()
