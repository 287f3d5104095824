"""PushDispatcher: consume the delivery log and push each entry through a route server.

One dispatcher per db_proxy, consumer ``node_id`` of the group ``push``. It
holds leases on some of the log's partitions (renewed every third of their
ttl; it takes free ones up to its share, ``ceil(partitions / live holders)``)
and runs one task per held partition, so a conversation's entries are pushed
by one process at a time, in order. A lease that could not be renewed within
its ttl (by our own clock, measured from before the call) is given up at
once: another dispatcher may hold it by then.

A partition's task first takes over what the previous holder left pending
(``claim_stale(idle_s=0)``), then consumes. What one read returned (up to
``batch`` entries) leaves as few frames as it can: the entries that got a
window slot are grouped by the route server their conversation picks among
the ready ones, and each group goes as one ``Rpcs.PUSH_MSGS`` (in the
partition's order), to the next route server in turn if that one fails; at
most ``window`` entries of a partition are unanswered, ``max_outstanding``
not yet done. The answer is read push by push (results[i] for pushes[i]). An
entry is acknowledged once every recipient is done: the route server
answered without naming them in ``retry_user_ids``, or ``push_give_up``
passed (dropped, counted); the entries of a batch done together are
acknowledged in one call. Users a route server names are retried later,
alone (one ``PUSH_MSG`` per try, the slow path), without holding up the
partition: the gateway fills a gap from storage before a later message and
drops a stale copy, so order and exactly-once per connection hold at the
gateway. While no route server answers at all, the batch keeps its window
slots and is retried whole with backoff, so the partition waits, in order,
instead of racing ahead. A batch a route server refuses as a whole is pushed
entry by entry, so only what is refused by itself is dropped.

Recipients a route server names in ``offline_user_ids`` (no session on any
gateway) are handed to the offline push, when one is configured, once per
message and recipient: a retried or redelivered push that names them again
is recognised by the notification key (a bounded recent window).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from common.commands import Rpcs
from common.conversation import ShardKey, shard_of
from common.delivery import Delivery, DeliveryLog, StreamLost
from common.errors import ImError, Unavailable
from common.link import Upstream
from common.pb import internal_pb2
from db_proxy import metrics
from db_proxy.offline_push.build import notification_key

log = logging.getLogger("db.push")

GROUP = "push"

#: One entry as the dispatcher knows it: the same append handed out again
#: (a redelivery, a claim) has the same key and is pushed once.
_Key = tuple[int, bytes]


class Routes(Protocol):
    def in_order_for(self, key: ShardKey) -> list[Upstream]: ...


class OfflineSink(Protocol):
    """Where recipients with no online session go (db_proxy.offline_push.pusher.OfflinePush)."""

    def offer(self, push: internal_pb2.PushMsg, user_ids: Sequence[int]) -> None: ...


class _Recent:
    """Notification keys handed over lately: at most ``size``, each for ``ttl`` seconds."""

    def __init__(self, size: int = 100_000, ttl: float = 900.0) -> None:
        self.size = size
        self.ttl = ttl
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, key: str, now: float) -> bool:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.ttl and len(self._seen) < self.size:
                break
            del self._seen[oldest]
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


class _NoRoute(Exception):
    """No ready route server answered the push."""


class _Refused(Exception):
    """A route server refused the push itself (not a transient failure)."""


_NO_PUSH = internal_pb2.PushMsg()


class _Slots:
    """A counting semaphore, first come first served, without asyncio.Semaphore's cost
    per call (two slots per entry pushed): :meth:`take_nowait` is the common case."""

    __slots__ = ("_waiters", "free")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_nowait(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.take_nowait():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # woken with the slot handed over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed over just as we were cancelled: to the next
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def give(self, count: int = 1) -> None:
        waiters = self._waiters
        for _ in range(count):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
            else:
                self.free += 1


class _Item:
    """One entry being pushed. It holds a window slot until a route server answered it
    (``window_held``) and an outstanding slot until it is done; both released once."""

    __slots__ = ("delivery", "key", "push", "window_held")

    def __init__(self, key: _Key, delivery: Delivery) -> None:
        self.key = key
        self.delivery = delivery
        self.push = _NO_PUSH  # decoded when its batch is made
        self.window_held = True


class _Chunk:
    """Entries for one route server, as one PUSH_MSGS."""

    __slots__ = ("batch", "items", "order", "users")

    def __init__(self, order: list[Upstream]) -> None:
        self.order = order
        self.batch = internal_pb2.PushMsgBatch()
        self.items: list[_Item] = []
        self.users = 0


@dataclass(slots=True)
class _Partition:
    number: int
    window: _Slots
    outstanding: _Slots
    #: Entries being pushed, with every delivery of them to acknowledge once done.
    in_flight: dict[_Key, list[Delivery]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Set to stop after the current read: a read cancelled half way could
    #: leave entries fetched for nobody (a JetStream pull still open).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class PushDispatcher:
    def __init__(
        self,
        delivery_log: DeliveryLog,
        routes: Routes,
        node_id: str,
        *,
        lease_ttl: float = 1.5,
        push_timeout: float = 1.0,
        give_up: float = 10.0,
        window: int = 64,
        max_outstanding: int = 1024,
        batch: int = 64,
        batch_users: int = 4096,
        block_s: float = 0.5,
        retry_initial: float = 0.05,
        retry_cap: float = 1.0,
        offline: OfflineSink | None = None,
    ) -> None:
        self.log = delivery_log
        self.routes = routes
        self.node_id = node_id
        self.lease_ttl = lease_ttl
        self.push_timeout = push_timeout
        self.give_up = give_up
        self.window = window
        self.max_outstanding = max(max_outstanding, window)
        self.batch = batch
        self.batch_users = batch_users  # recipients per PUSH_MSGS frame (one message more at most)
        self.block_s = block_s
        self.retry_initial = retry_initial
        self.retry_cap = retry_cap
        self.offline = offline
        self._notified = _Recent()
        #: Held partitions and their pushing tasks.
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._states: dict[int, _Partition] = {}
        #: When each held lease was last renewed (loop time before the call).
        self._renewed: dict[int, float] = {}
        self._lease_task: asyncio.Task[None] | None = None
        #: Set after every lease round (tests wait on it).
        self.lease_round = asyncio.Event()
        self.delivered = 0
        self.dropped = 0
        #: Set by :meth:`halt`: play dead, leave what is half pushed pending.
        self._dying = False

    @property
    def held(self) -> set[int]:
        return set(self.tasks)

    def start(self) -> None:
        self._lease_task = asyncio.get_running_loop().create_task(
            self._lease_loop(), name=f"push-leases-{self.node_id}"
        )

    async def stop(self) -> None:
        """Stop pushing and release the leases, so another dispatcher takes over at once."""
        await self._halt()
        for p in list(self._renewed):
            with contextlib.suppress(ImError, TimeoutError):
                async with asyncio.timeout(self.lease_ttl):
                    await self.log.release(p, self.node_id)
        self._renewed.clear()

    async def halt(self) -> None:
        """Stop renewing and pushing, without releasing (the leases lapse by themselves):
        what a dispatcher that died leaves behind (tests)."""
        self._dying = True
        await self._halt()

    async def _halt(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
            self._lease_task = None
        await asyncio.gather(*(self._lose(p, "stopping", forget=False) for p in list(self.tasks)))
        metrics.PARTITIONS_HELD.set(0)

    # -- leases -------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.lease_ttl / 3
        while True:
            started = loop.time()
            taken: list[int] = []
            try:
                async with asyncio.timeout(interval):
                    await self._lease_round(taken)
            except (ImError, TimeoutError) as exc:
                log.warning("delivery log leases: %s", str(exc) or "timed out")
            except Exception:
                log.exception("delivery log lease round failed")
            # Outside the round's bound: stopping a partition waits for its read.
            for p in taken:
                await self._lose(p, "taken by another dispatcher")
            await self._drop_lapsed(loop.time())
            metrics.PARTITIONS_HELD.set(len(self.tasks))
            self.lease_round.set()
            self.lease_round = asyncio.Event()
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _lease_round(self, taken: list[int]) -> None:
        """Renew, then take up to our share; ``taken`` gets the partitions someone else holds now."""
        loop = asyncio.get_running_loop()
        for p in list(self.tasks):
            asked = loop.time()
            if await self.log.hold(p, self.node_id, self.lease_ttl):
                self._renewed[p] = asked
            else:
                taken.append(p)
                self._renewed.pop(p, None)  # not ours: never renewed again
        holders = await self.log.holders()
        live = set(holders.values()) | {self.node_id}
        share = math.ceil(self.log.partitions / len(live))
        # Each dispatcher starts looking at its own place, so two that start
        # together do not contend for the same partitions.
        first = shard_of(self.node_id, self.log.partitions)
        for i in range(self.log.partitions):
            if len(self.tasks) - len(taken) >= share:
                break
            p = (first + i) % self.log.partitions
            if p in self.tasks or p in holders:
                continue
            asked = loop.time()
            if await self.log.hold(p, self.node_id, self.lease_ttl):
                self._renewed[p] = asked
                self._take(p)

    async def _drop_lapsed(self, now: float) -> None:
        for p in list(self.tasks):
            renewed = self._renewed.get(p)
            if renewed is not None and now - renewed >= self.lease_ttl:
                await self._lose(p, "not renewed within its ttl")

    def _take(self, p: int) -> None:
        log.info("%s: pushing delivery log partition %d", self.node_id, p)
        state = self._states[p] = _Partition(p, _Slots(self.window), _Slots(self.max_outstanding))
        self.tasks[p] = asyncio.get_running_loop().create_task(
            self._run_partition(state), name=f"push-{self.node_id}-p{p}"
        )

    async def _lose(self, p: int, why: str, forget: bool = True) -> None:
        task = self.tasks.pop(p, None)
        if forget:
            self._renewed.pop(p, None)
        if task is None:
            return
        if why != "stopping":
            log.warning("%s: lost delivery log partition %d (%s)", self.node_id, p, why)
        state = self._states.pop(p, None)
        if state is not None:
            state.stopping.set()
        # The read under way ends within its block time; then the task stops itself.
        done, _ = await asyncio.wait({task}, timeout=self.block_s + 1.0)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- a partition ----------------------------------------------------------------------

    async def _run_partition(self, state: _Partition) -> None:
        try:
            await self._take_over(state)
            while not state.stopping.is_set():
                try:
                    await self._consume(state)
                except Exception:
                    # A bug: the partition must not sit held and unpushed.
                    log.exception("%s: pushing partition %d failed; going on", self.node_id, state.number)
                    await asyncio.sleep(self.retry_cap)
        finally:
            tasks = list(state.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Not pushed to the end: a successor gets them at once where the log can hand them back.
            left = [d for ds in state.in_flight.values() for d in ds]
            if left and not self._dying:
                with contextlib.suppress(ImError, TimeoutError):
                    async with asyncio.timeout(self.push_timeout):
                        await self.log.give_back(GROUP, left)

    async def _consume(self, state: _Partition) -> None:
        delay = self.retry_initial
        while not state.stopping.is_set():
            try:
                got = await self.log.consume(GROUP, self.node_id, [state.number], self.batch, self.block_s)
            except StreamLost as exc:
                # The gateways refill what the log lost from storage (a gap in msg ids).
                metrics.STREAMS_LOST.inc()
                log.warning("%s: %s; going on", self.node_id, exc)
                continue
            except Unavailable as exc:
                log.warning("%s: consuming partition %d: %s", self.node_id, state.number, exc)
                await asyncio.sleep(delay)
                delay = min(self.retry_cap, delay * 2)
                continue
            delay = self.retry_initial
            if not await self._start(state, got):
                return

    async def _take_over(self, state: _Partition) -> None:
        """Push what the previous holder (or we, before a lapse) left pending, first."""
        limit = max(self.batch, 256)
        for _ in range(10_000):  # bounded: each round needs a full batch of new entries
            try:
                claimed = await self.log.claim_stale(GROUP, self.node_id, 0.0, limit, [state.number])
            except StreamLost as exc:
                metrics.STREAMS_LOST.inc()
                log.warning("%s: %s; going on", self.node_id, exc)
                return
            except Unavailable as exc:
                log.warning("%s: claiming partition %d: %s", self.node_id, state.number, exc)
                return  # consume() will wait for the log; a later take-over claims them
            fresh = [d for d in claimed if (d.entry.partition, d.entry.payload) not in state.in_flight]
            if not await self._start(state, claimed):
                return
            if len(claimed) < limit or not fresh:
                return
            # What was claimed stays pending (for us) until acknowledged, and
            # claiming again starts from the oldest: let this batch be answered first.
            for _ in range(self.window):
                await state.window.take()
            state.window.give(self.window)

    async def _start(self, state: _Partition, deliveries: Sequence[Delivery]) -> bool:
        """Push ``deliveries`` in order, as few frames as the window allows: what has a
        window slot leaves together before waiting for the next slot. False: stopping
        (what was not started is kept in ``in_flight``, to be handed back)."""
        ready: list[_Item] = []
        in_flight = state.in_flight
        outstanding, window = state.outstanding, state.window
        redelivered = 0
        try:
            for i, delivery in enumerate(deliveries):
                if state.stopping.is_set():
                    for rest in deliveries[i:]:  # handed back with the others
                        in_flight.setdefault((rest.entry.partition, rest.entry.payload), []).append(rest)
                    return False
                key = (delivery.entry.partition, delivery.entry.payload)
                pending = in_flight.get(key)
                if pending is not None:
                    pending.append(delivery)  # handed out again while being pushed: acked with it
                    continue
                in_flight[key] = [delivery]
                if delivery.deliveries > 1:
                    redelivered += 1
                if not outstanding.take_nowait():
                    if ready:
                        self._launch(state, ready)  # what has its slots goes now, the rest waits
                        ready = []
                    await outstanding.take()
                if not window.take_nowait():
                    if ready:
                        self._launch(state, ready)
                        ready = []
                    await window.take()
                ready.append(_Item(key, delivery))
            return True
        finally:
            if redelivered:
                metrics.PUSH_REDELIVERED.inc(redelivered)
            if ready:
                self._launch(state, ready)

    def _launch(self, state: _Partition, items: list[_Item]) -> None:
        self._task(state, self._push_batch(state, items))

    def _task(self, state: _Partition, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    async def _push_batch(self, state: _Partition, items: list[_Item]) -> None:
        """One PUSH_MSGS per first-choice route server, with that route's entries in order.

        Each item holds a window and an outstanding slot: released here, or handed
        on with the item to its slow path (:meth:`_deliver`, one PUSH_MSG at a time)
        when users are to be retried, or when no route server took the batch.
        """
        owned = list(items)
        try:
            # Per first-choice route server, frames of at most ``batch_users`` recipients
            # (and one message): a 500-member group's batch is a few messages per frame.
            open_chunks: dict[int, _Chunk] = {}
            chunks: list[_Chunk] = []
            orders: dict[ShardKey, list[Upstream]] = {}
            done: list[_Item] = []
            for item in items:
                conversation = item.delivery.entry.conversation
                order = orders.get(conversation)
                if order is None:
                    order = orders[conversation] = self.routes.in_order_for(conversation)
                group_key = id(order[0]) if order else 0
                chunk = open_chunks.get(group_key)
                if chunk is None:
                    chunk = open_chunks[group_key] = _Chunk(order)
                    chunks.append(chunk)
                push = chunk.batch.pushes.add()
                try:
                    push.MergeFromString(item.delivery.entry.payload)
                    if not push.IsInitialized():
                        raise DecodeError("missing required fields")
                except DecodeError:
                    del chunk.batch.pushes[-1]
                    log.error("delivery log entry %s is no PushMsg; dropping it", item.delivery.delivery_id)
                    self._drop("refused", 1)
                    done.append(item)
                    continue
                item.push = push
                chunk.items.append(item)
                chunk.users += len(push.user_ids)
                if chunk.users >= self.batch_users:
                    del open_chunks[group_key]  # full: the next entries of that route in another
            if done:
                await self._ack(state, done)
            chunks = [c for c in chunks if c.items]
            if len(chunks) == 1:
                await self._push_group(state, owned, chunks[0])
            elif chunks:
                # Created in order, so their frames leave in order (each call writes in its first step).
                await asyncio.gather(*(self._push_group(state, owned, chunk) for chunk in chunks))
        finally:
            for item in owned:
                if item.window_held:
                    state.window.give()
                state.outstanding.give()

    async def _push_group(self, state: _Partition, owned: list[_Item], chunk: _Chunk) -> None:
        order, batch, items = chunk.order, chunk.batch, chunk.items
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up
        delay = self.retry_initial
        while True:
            try:
                reply = await self._push_batch_once(order, batch, len(items))
            except _Refused:
                # Refused as a whole: each alone, so only what is refused by itself is dropped.
                for item in items:
                    owned.remove(item)
                    self._task(state, self._deliver(state, item, list(item.push.user_ids), deadline, False))
                return
            except _NoRoute:
                # Retried whole, keeping the window slots: the partition waits, in order.
                if loop.time() >= deadline:
                    for item in items:
                        self._give_up(item, list(item.push.user_ids))
                    await self._ack(state, items)
                    return
                metrics.PUSH_RETRIES.inc(len(items))
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(self.retry_cap, delay * 2)
                order = self.routes.in_order_for(items[0].delivery.entry.conversation)
                continue
            break
        done: list[_Item] = []
        now = time.time()
        window = state.window
        for item, result in zip(items, reply.results, strict=True):
            push = item.push
            window.give()  # answered: the partition goes on while named users wait
            item.window_held = False
            if push.committed_at_us:
                metrics.PUSH_LATENCY.observe(max(0.0, now - push.committed_at_us / 1e6))
            if not result.retry_user_ids and not result.offline_user_ids:
                done.append(item)
                continue
            asked = set(push.user_ids)
            if result.offline_user_ids:
                self._hand_offline(push, [u for u in result.offline_user_ids if u in asked])
            users = [u for u in result.retry_user_ids if u in asked]
            if not users:
                done.append(item)
                continue
            owned.remove(item)  # its slot goes with it
            self._task(state, self._deliver(state, item, users, deadline, True))
        if done:
            self.delivered += len(done)
            metrics.PUSH_DELIVERED.inc(len(done))
            await self._ack(state, done)

    async def _push_batch_once(
        self, order: list[Upstream], batch: internal_pb2.PushMsgBatch, count: int
    ) -> internal_pb2.PushMsgBatchResult:
        """The answer of the first route server in ``order`` that answers the batch."""
        for upstream in order:
            try:
                reply = await upstream.call(Rpcs.PUSH_MSGS, batch, self.push_timeout)
            except Unavailable as exc:  # LinkDown, RequestTimeout, a route server settling
                log.debug("%s: push of %d via %s failed: %s", self.node_id, count, upstream.name, exc)
                continue
            except ImError as exc:
                log.warning("%s: %s refused a batch of %d: %s", self.node_id, upstream.name, count, exc)
                raise _Refused from exc
            if len(reply.results) != count:
                log.error(
                    "%s: %s answered %d pushes with %d results; pushing each alone",
                    self.node_id,
                    upstream.name,
                    count,
                    len(reply.results),
                )
                raise _Refused
            return reply
        raise _NoRoute

    async def _deliver(
        self, state: _Partition, item: _Item, users: list[int], deadline: float, wait_first: bool
    ) -> None:
        """The slow path: one entry, one PUSH_MSG at a time, until every user in ``users``
        is done or ``give_up`` passed (``wait_first``: a retry, after the backoff). Owns
        the item's slots (its window slot while no route server has answered it yet)."""
        push = item.push
        loop = asyncio.get_running_loop()
        delay = self.retry_initial
        try:
            while True:
                if wait_first:
                    if loop.time() >= deadline:
                        self._give_up(item, users)
                        break
                    metrics.PUSH_RETRIES.inc()
                    await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                    delay = min(self.retry_cap, delay * 2)
                wait_first = True
                try:
                    reply = await self._push_once(item.delivery.entry.conversation, push, users)
                except _Refused:
                    self._drop("refused", len(users))
                    break
                except _NoRoute:
                    continue  # retried, keeping the window slot: the partition waits in order
                if item.window_held:
                    # Answered: the partition goes on while the named users wait.
                    item.window_held = False
                    state.window.give()
                    if push.committed_at_us:
                        metrics.PUSH_LATENCY.observe(max(0.0, time.time() - push.committed_at_us / 1e6))
                asked = set(users)
                self._hand_offline(push, [u for u in reply.offline_user_ids if u in asked])
                users = [u for u in reply.retry_user_ids if u in asked]
                if not users:
                    self.delivered += 1
                    metrics.PUSH_DELIVERED.inc()
                    break
            await self._ack(state, [item])
        finally:
            if item.window_held:
                state.window.give()
            state.outstanding.give()

    def _give_up(self, item: _Item, users: list[int]) -> None:
        self._drop("gave_up", len(users))
        log.debug(
            "%s: gave up pushing msg %d of %s to %d users",
            self.node_id,
            item.push.msg_id,
            item.delivery.entry.conversation,
            len(users),
        )

    async def _push_once(
        self, conversation: ShardKey, push: internal_pb2.PushMsg, users: Sequence[int]
    ) -> internal_pb2.PushMsgResult:
        """The answer of the first route server that answers; _NoRoute if none does."""
        if list(push.user_ids) != list(users):
            narrowed = internal_pb2.PushMsg()
            narrowed.CopyFrom(push)
            del narrowed.user_ids[:]
            narrowed.user_ids.extend(users)
            push = narrowed
        for upstream in self.routes.in_order_for(conversation):
            try:
                reply = await upstream.call(Rpcs.PUSH_MSG, push, self.push_timeout)
            except Unavailable as exc:  # LinkDown, RequestTimeout, a route server settling
                log.debug("%s: push via %s failed: %s", self.node_id, upstream.name, exc)
                continue
            except ImError as exc:
                log.error("%s: %s refused push of msg %d: %s", self.node_id, upstream.name, push.msg_id, exc)
                raise _Refused from exc
            return reply
        raise _NoRoute

    def _hand_offline(self, push: internal_pb2.PushMsg, user_ids: list[int]) -> None:
        if self.offline is None or not user_ids:
            return
        now = time.monotonic()
        fresh = [u for u in user_ids if self._notified.first_time(notification_key(push, u), now)]
        if fresh:
            self.offline.offer(push, fresh)

    async def _ack(self, state: _Partition, items: list[_Item]) -> None:
        """Acknowledge the entries of ``items``, every delivery of each, in one call."""
        deliveries: list[Delivery] = []
        for item in items:
            deliveries += state.in_flight.pop(item.key, ())
        if not deliveries:
            return
        try:
            await self.log.ack(GROUP, deliveries)
        except ImError as exc:
            # It stays pending and is pushed again later: the gateway drops the copy.
            log.warning("%s: acknowledging a push: %s", self.node_id, exc)

    def _drop(self, reason: str, count: int) -> None:
        self.dropped += count
        metrics.PUSH_DROPPED.labels(reason).inc(count)
