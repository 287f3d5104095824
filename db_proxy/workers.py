"""Ordered, bounded message workers with group commit, fair across conversations.

Each conversation hashes onto one worker, so its messages are stored (and
their ids allocated) in arrival order, and appended to the delivery log in
that same order, before their senders are answered. A worker keeps one queue
per conversation (:mod:`db_proxy.fair_queue`) and forms each group-commit
batch round-robin across them, so a conversation that floods fills only its
own share (``queue_size // CONVERSATION_SHARES`` jobs, a share of
``QUEUE_BYTES``) and an unrelated conversation on the same worker is still
admitted and served in the next batch. Past a bound a request fails at once
with "overloaded" (counted by reason in ``imcluster_db_jobs_refused``)
instead of piling up (TeamTalk hands work to a random thread with an
unbounded queue). The bound is in time too (issue 12): a job is refused at
admission ("expected_wait") when the jobs ahead of it would take longer than
``max_wait`` (db_proxy.save_max_wait) to commit at the worker's recent pace
(:class:`~db_proxy.fair_queue.CommitPace`), so at twice the capacity the
excess is refused at once and what is admitted is acked in well under a
second; a job that has waited ``max_wait`` anyway (storage stalled: a lock
held, a disk full) is refused too, while its sender still waits, instead of
being answered after the client gave up; a batch already in its transaction
is never abandoned (an ack means committed). Messages
that queue up while a transaction runs are committed together in the next
one, which is what keeps throughput up when every commit is an fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from common.conversation import conversation_key, shard_of
from common.delivery import Entry
from common.errors import Bug, ImError, NotFound, Overloaded, Unavailable
from common.pb import internal_pb2
from common.throttle import Throttle
from db_proxy import metrics
from db_proxy.fair_queue import CommitPace, FairQueue
from db_proxy.push.appender import LogAppender
from db_proxy.push.entries import push_entry
from db_proxy.recipients import KnownUsers
from db_proxy.storage.model import SESSION_SINGLE, NewMessage, SavedMessage, Store

log = logging.getLogger("db.workers")

# Where a message came from (the gateway and connection that sent it), for
# the push: that connection has it already.
Origin = internal_pb2.Origin
T = TypeVar("T")

#: The top bit of a server-made idempotency key. A client's own ids are the
#: 32-bit msg_id of IMMsgData, so the two never meet in the dedup key.
SERVER_KEY_BIT = 1 << 63


def server_key() -> int:
    """A unique idempotency key for a message whose client sent none (client msg id 0)."""
    return SERVER_KEY_BIT | secrets.randbits(63)


@dataclass(slots=True)
class SaveJob:
    message: NewMessage
    origin: Origin
    future: asyncio.Future[SavedMessage]


@dataclass(slots=True)
class OrderedJob:
    run: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]


Job = SaveJob | OrderedJob


#: A conversation may hold this fraction of its worker's queue (entries and bytes).
CONVERSATION_SHARES = 4
#: Bytes of message bodies one worker may hold queued (64 KiB frames: 128 of the largest).
QUEUE_BYTES = 8 * 1024 * 1024
#: Seconds a job may wait in a queue (expected at admission, or actually waited)
#: before it is refused "overloaded" (the default of db_proxy.save_max_wait).
#: Far under the gateway's request_timeout (10 s), so the refusal reaches the
#: gateway (and, where the protocol can say so, the client) while it still
#: waits; over a healthy commit (milliseconds; a full batch of 64 in tens), and
#: short enough that an admitted message is acked within a second even at
#: twice the capacity offered (issue 12).
MAX_QUEUE_WAIT = 0.5
#: How often queued jobs are checked against the wait bound (also while a
#: worker is stuck in a transaction).
EXPIRE_INTERVAL = 0.1
LOG_INTERVAL = 1.0  # seconds between two lines about refusals (per reason)


class MessageWorkers:
    def __init__(
        self,
        store: Store,
        appender: LogAppender,
        workers: int,
        queue_size: int,
        batch_size: int,
        *,
        queue_bytes: int = QUEUE_BYTES,
        max_wait: float = MAX_QUEUE_WAIT,
        directory: Store | None = None,
    ) -> None:
        self.store = store
        # Users live in the directory database (perhaps another one than the messages').
        self.recipients = KnownUsers(directory if directory is not None else store)
        self.appender = appender
        self.partitions = appender.log.partitions
        self.batch_size = batch_size
        self.queues: list[FairQueue[Job]] = [
            FairQueue(
                capacity=queue_size,
                max_bytes=queue_bytes,
                share=max(1, queue_size // CONVERSATION_SHARES),
                share_bytes=max(1, queue_bytes // CONVERSATION_SHARES),
                max_wait=max_wait,
                pace=CommitPace(batch_size),
            )
            for _ in range(workers)
        ]
        self._wake = [asyncio.Event() for _ in range(workers)]
        self._tasks: list[asyncio.Task[None]] = []
        self._refusal_logs = {reason: Throttle(LOG_INTERVAL) for reason in metrics.REFUSAL_REASONS}
        self.committed = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._work(i), name=f"msg-worker-{i}") for i in range(len(self.queues))
        ]
        self._tasks.append(loop.create_task(self._expire_loop(), name="msg-worker-expiry"))

    async def stop(self, timeout: float) -> None:
        """Finish what is queued (bounded by ``timeout``), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(q.qsize() for q in self.queues) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self.queues:
            for job in queue.drain():
                if not job.future.done():
                    job.future.set_exception(Unavailable("db_proxy is stopping"))

    def depths(self) -> list[int]:
        return [q.qsize() for q in self.queues]

    def _put(self, key: tuple[int, int, int], job: Job, size: int) -> None:
        index = shard_of(key, len(self.queues))
        now = asyncio.get_running_loop().time()
        reason = self.queues[index].push(key, job, now, size, barrier=isinstance(job, OrderedJob))
        if reason is not None:
            self._refused(reason, f"worker {index}")
            raise Overloaded(f"message worker {index} is saturated ({reason.replace('_', ' ')})")
        self._wake[index].set()

    def _refused(self, reason: str, where: str, count: int = 1) -> None:
        metrics.JOBS_REFUSED.labels(reason).inc(count)
        throttle = self._refusal_logs[reason]
        if throttle.ready():
            log.warning("%s: %d job(s) refused, %s%s", where, count, reason, throttle.more())

    def save(self, message: NewMessage, origin: Origin) -> asyncio.Future[SavedMessage]:
        future: asyncio.Future[SavedMessage] = asyncio.get_running_loop().create_future()
        if not message.client_msg_id:
            # Every message gets an idempotency key, so that retrying a batch
            # whose COMMIT was applied (its answer lost) does not store it twice.
            # (Built directly: dataclasses.replace costs several times more.)
            m = message
            message = NewMessage(
                m.from_user_id,
                m.session_type,
                m.to_id,
                m.msg_type,
                m.msg_data,
                m.create_time,
                server_key(),
                m.trusted,
            )
        key = conversation_key(message.session_type, message.from_user_id, message.to_id)
        self._put(key, SaveJob(message, origin, future), len(message.msg_data))
        return future

    def run_ordered(self, key: tuple[int, int, int], run: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Run ``run`` after everything already queued for that conversation."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(key, OrderedJob(run, future), 0)
        return future

    async def _work(self, index: int) -> None:
        queue, wake = self.queues[index], self._wake[index]
        pace = queue.pace
        assert pace is not None
        clock = asyncio.get_running_loop().time
        while True:
            batch = queue.next_batch(self.batch_size)
            if not batch:
                wake.clear()
                await wake.wait()
                continue
            first = batch[0]
            if isinstance(first, OrderedJob):
                await self._run_one(first)
            else:
                pace.started(clock())
                try:
                    await self._commit([job for job in batch if isinstance(job, SaveJob)])
                finally:
                    pace.finished(clock())

    async def _expire_loop(self) -> None:
        """Refuse what has waited too long, also while a worker is stuck in a transaction."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)
            now = loop.time()
            for index, queue in enumerate(self.queues):
                expired = queue.expire(now)
                if not expired:
                    continue
                self._refused(metrics.QUEUE_TIMEOUT, f"worker {index}", len(expired))
                error = Overloaded(f"storage is slow: waited {queue.max_wait:g} s in message worker {index}")
                for job in expired:
                    if not job.future.done():
                        job.future.set_exception(error)

    async def _run_one(self, job: OrderedJob) -> None:
        try:
            result = await job.run()
        except Exception as exc:
            # Whoever awaits the future answers for it (a non-ImError is
            # logged as a bug by the link that carried the request).
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result(result)

    async def _refuse_unknown_recipients(self, batch: list[SaveJob]) -> list[SaveJob]:
        """The jobs whose recipient exists; the others fail here, in their place in the order."""
        singles = [job.message.to_id for job in batch if job.message.session_type == SESSION_SINGLE]
        try:
            missing = await self.recipients.missing(singles)
        except Exception as exc:
            for job in batch:
                self._fail(job, exc)
            return []
        if not missing:
            return batch
        kept = []
        for job in batch:
            if job.message.session_type == SESSION_SINGLE and job.message.to_id in missing:
                if not job.future.done():
                    job.future.set_exception(NotFound(f"no user {job.message.to_id}"))
            else:
                kept.append(job)
        return kept

    async def _commit(self, batch: list[SaveJob]) -> None:
        batch = await self._refuse_unknown_recipients(batch)
        if not batch:
            return
        started = time.monotonic()
        try:
            results = await self.store.save_messages([job.message for job in batch])
        except Exception as exc:  # the taxonomy, or a bug: either way the worker lives on
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            # One bad message must not sink the others: retry them one by one.
            # (A sender outside its group is routine; anything else is worth a look.)
            caller_fault = isinstance(exc, ImError) and not exc.server_fault
            log.log(
                logging.INFO if caller_fault else logging.WARNING,
                "batch of %d failed (%s); retrying one by one",
                len(batch),
                exc,
            )
            for job in batch:
                await self._commit([job])
            return
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        committed_at_us = int(time.time() * 1_000_000)
        entries: list[Entry] = []
        duplicates = 0
        for job, saved in zip(batch, results, strict=True):
            duplicates += saved.duplicate
            # A duplicate too: its first push may never have happened (an
            # ambiguous commit); the gateway drops what it pushed already.
            try:
                entry = push_entry(job.message, saved, job.origin, self.partitions, committed_at_us)
            except Exception:
                log.exception("building the push of msg %d failed; it is stored", saved.msg_id)
                continue
            if entry is not None:
                entries.append(entry)
        if duplicates:
            metrics.DUPLICATES.inc(duplicates)
        metrics.COMMITTED.inc(len(batch) - duplicates)
        self.committed += len(batch) - duplicates
        # Appended (or kept for a later append) before anyone is answered:
        # an acked message is always on its way to its recipients.
        await self.appender.append(entries)
        for job, saved in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(saved)

    @staticmethod
    def _fail(job: SaveJob, exc: Exception) -> None:
        """The message is not stored: its sender hears why (storage's refusals are the taxonomy)."""
        if not isinstance(exc, ImError):
            log.error("storing a message failed", exc_info=exc)
            exc = Bug("storing the message failed")
        elif exc.server_fault:
            log.warning("storing a message failed: %s", exc)
        if not job.future.done():
            job.future.set_exception(exc)
