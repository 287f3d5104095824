"""Retention: messages older than the configured days deleted, per conversation
type, and old admin audit entries, in bounded batches.

Two parts. :class:`RetentionPlan` is sans-IO: given the policy and ``now``
it says which batch to delete next and, told how many rows each batch
removed, when a kind is done (a batch shorter than its limit: nothing older
is left, since every cut-off is fixed when the run starts and new rows are
never older). :class:`Retention` runs a plan against the stores, one short
transaction a batch with a pause as long as the batch took between two
(so a message save waits on it for one batch at most, and it takes at most
half of the database's time), and its loop runs one plan every
``retention_interval`` on each db_proxy serving messages. Runs on two
db_proxies at once are safe: each batch deletes by key what it found, and
finds nothing where the other was first (see :mod:`db_proxy.storage.sql_retention`).

A message deleted is gone for every reader alike: history, message-by-id
and export simply no longer find it; the conversation's id counter stays,
so ids are never reused. The resend-detection rows (message_dedup) of the
same type and age go too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from db_proxy.config import DbProxyConfig
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, Store

log = logging.getLogger("db.retention")

SINGLE, GROUP, AUDIT, DEDUP = "single", "group", "audit", "dedup"
KINDS = (SINGLE, GROUP, AUDIT, DEDUP)
DAY = 86400
FIRST_RUN_DELAY = 60.0  # seconds after start (or the interval, if shorter)
MIN_PAUSE = 0.01  # seconds between two batches, however quick the batch was
MAX_BATCHES = 50_000  # per run: the rest waits for the next run

DELETED = Counter(
    "imcluster_db_retention_deleted",
    "Rows deleted by retention, by kind: single and group (messages), audit (admin audit entries), "
    "dedup (resend-detection rows of deleted messages).",
    ["kind"],
)
LAST_RUN = Gauge(
    "imcluster_db_retention_last_run_timestamp_seconds", "Unix time the last retention run ended."
)
LAST_RUN_SECONDS = Gauge("imcluster_db_retention_last_run_seconds", "How long the last retention run took.")
for _kind in KINDS:
    DELETED.labels(_kind)  # every kind exported from the start, at 0


@dataclass(frozen=True, slots=True)
class Policy:
    single_days: int = 0  # 0: kept forever
    group_days: int = 0
    audit_days: int = 365
    batch_rows: int = 2000
    interval: float = 3600.0

    @classmethod
    def of(cls, config: DbProxyConfig) -> Policy:
        return cls(
            config.retention_single_days,
            config.retention_group_days,
            config.retention_audit_days,
            config.retention_batch_rows,
            config.retention_interval,
        )

    def as_json(self) -> dict[str, int | float]:
        return {
            "single_days": self.single_days,
            "group_days": self.group_days,
            "audit_days": self.audit_days,
            "batch_rows": self.batch_rows,
            "interval": self.interval,
        }


@dataclass(frozen=True, slots=True)
class Batch:
    """One delete: ``kind``'s rows older than ``before`` (unix s; ms for audit), at most ``limit``."""

    kind: str
    session_type: int  # of messages and dedup rows; 0 for audit
    before: int
    limit: int


@dataclass(slots=True)
class RetentionPlan:
    """What one run deletes, batch by batch (sans-IO)."""

    policy: Policy
    now: float
    max_batches: int = MAX_BATCHES
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    batches: int = 0
    _todo: list[Batch] = field(default_factory=list)

    def __post_init__(self) -> None:
        p, now, limit = self.policy, int(self.now), self.policy.batch_rows
        for kind, session_type, days in (
            (SINGLE, SESSION_SINGLE, p.single_days),
            (GROUP, SESSION_GROUP, p.group_days),
        ):
            if days > 0:
                before = now - days * DAY
                self._todo += [
                    Batch(kind, session_type, before, limit),
                    Batch(DEDUP, session_type, before, limit),
                ]
        if p.audit_days > 0:
            self._todo.append(Batch(AUDIT, 0, (now - p.audit_days * DAY) * 1000, limit))

    @property
    def finished(self) -> bool:
        """Nothing left to delete, or the run's batches used up (``more`` then)."""
        return not self._todo or self.batches >= self.max_batches

    @property
    def more(self) -> bool:
        """Stopped at max_batches with rows perhaps left: the next run goes on."""
        return bool(self._todo) and self.batches >= self.max_batches

    def next_batch(self) -> Batch | None:
        return None if self.finished else self._todo[0]

    def done(self, batch: Batch, deleted: int) -> None:
        """``batch`` (the one next_batch gave) deleted ``deleted`` rows."""
        self.batches += 1
        self.deleted[batch.kind] += deleted
        if deleted < batch.limit and self._todo and self._todo[0] == batch:
            self._todo.pop(0)  # fewer than asked for: none that old is left


class Retention:
    """Runs plans against the stores: audit entries in the directory database,
    messages in the messages database (perhaps the same one)."""

    def __init__(
        self,
        policy: Policy,
        directory: Store,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.store = store
        self.clock = clock
        self.max_batches = max_batches
        self._task: asyncio.Task[None] | None = None

    async def run(self, deadline: float | None = None) -> RetentionPlan:
        """One run, to the end (or until the monotonic ``deadline``: ``more`` then)."""
        started = time.monotonic()
        plan = RetentionPlan(self.policy, self.clock(), self.max_batches)
        while (batch := plan.next_batch()) is not None:
            began = time.monotonic()
            deleted = await self._delete(batch)
            plan.done(batch, deleted)
            DELETED.labels(batch.kind).inc(deleted)
            if plan.finished:
                break
            took = time.monotonic() - began
            if deadline is not None and time.monotonic() + took >= deadline:
                plan.max_batches = plan.batches  # out of time: the rest is for the next run
                break
            await asyncio.sleep(max(MIN_PAUSE, took))
        LAST_RUN.set(time.time())
        LAST_RUN_SECONDS.set(time.monotonic() - started)
        if any(plan.deleted.values()):
            log.info(
                "retention deleted %s", ", ".join(f"{n} {kind}" for kind, n in plan.deleted.items() if n)
            )
        return plan

    async def _delete(self, batch: Batch) -> int:
        if batch.kind == AUDIT:
            return await self.directory.delete_audit_before(batch.before, batch.limit)
        if batch.kind == DEDUP:
            return await self.store.delete_dedup_before(batch.session_type, batch.before, batch.limit)
        return await self.store.delete_messages_before(batch.session_type, batch.before, batch.limit)

    async def _loop(self) -> None:
        delay = min(self.policy.interval, FIRST_RUN_DELAY)
        while True:
            await asyncio.sleep(delay)
            delay = self.policy.interval
            try:
                await self.run()
            except Exception as exc:  # the database down, most likely: the next run tries again
                log.warning("retention run failed (%s: %s); next in %g s", type(exc).__name__, exc, delay)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def retention_loop(config: DbProxyConfig, directory: Store, store: Store) -> AsyncIterator[Retention]:
    """The background runs of a db_proxy serving messages, while the block lasts."""
    retention = Retention(Policy.of(config), directory, store)
    retention.start()
    try:
        yield retention
    finally:
        await retention.stop()
