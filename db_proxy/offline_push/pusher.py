"""OfflinePush: the asyncio runner around :class:`.queue.PushQueue` and the providers.

The dispatcher hands over (``offer``) each pushed message with its offline
recipients; ``offer`` never waits, so a slow push service or database never
holds up online delivery. One builder task takes what was offered in
batches and looks up, per batch, the recipients' devices and push shields
(the directory store) and, per group message, the group shields (the
messages store): one query each, not one per recipient. Then one pump per
provider keeps up to ``concurrency`` sends in flight, asking the queue what
is due, sleeping until the next retry is.

Nothing here survives a restart: what is queued when db_proxy stops (or
crashes) is not sent. The messages are stored; clients sync them at login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from common.pb import base_pb2, internal_pb2
from db_proxy.offline_push import metrics
from db_proxy.offline_push.build import notifications
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.provider import Device, Notification, Outcome, Provider, Result
from db_proxy.offline_push.queue import DELIVERED, QUEUE_FULL, Job, PushQueue
from db_proxy.storage.model import DeviceToken, Store, StoreError

log = logging.getLogger("db.offline_push")

SHIELDED = "shielded"
GROUP_SHIELDED = "group_shielded"
LOOKUP_FAILED = "lookup_failed"

#: Recipients looked up together (one query each for the lot).
BATCH_USERS = 256
#: Senders whose display name is remembered, and for how long (a rename shows within that).
NAME_CACHE = 4096
NAME_TTL = 300.0


class OfflinePush:
    def __init__(
        self,
        config: OfflinePushConfig,
        providers: Sequence[Provider],
        directory: Store,
        messages: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.providers = {p.name: p for p in providers}
        self.directory = directory
        self.messages = messages
        self.clock = clock
        #: Outcomes so far, for /healthz: "delivered:<provider>" or a drop reason.
        self.outcomes: Counter[str] = Counter()
        self.queue = PushQueue(
            list(self.providers),
            max_entries=config.queue_size,
            max_bytes=config.queue_bytes,
            retry_initial=config.retry_initial,
            retry_max=config.retry_max,
            retry_for=config.retry_for,
            record=self._record,
            rng=rng,
        )
        #: Offered, not yet looked up: (message, recipients); at most queue_size recipients.
        self._intake: deque[tuple[internal_pb2.PushMsg, list[int]]] = deque()
        self._intake_users = 0
        self._offered = asyncio.Event()
        self._wakes = {name: asyncio.Event() for name in self.providers}
        self._names: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False

    # -- the dispatcher's side ----------------------------------------------------------------

    def offer(self, push: internal_pb2.PushMsg, user_ids: Sequence[int]) -> None:
        """Notify ``user_ids`` (offline recipients) of ``push``, later; never waits."""
        users = [u for u in dict.fromkeys(user_ids) if u != push.from_user_id]
        if not users:
            return
        if not self._running or self._intake_users + len(users) > self.config.queue_size:
            self._drop(QUEUE_FULL, len(users))
            return
        self._intake.append((push, users))
        self._intake_users += len(users)
        self._offered.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._spawn(self._build_loop(), "offline-push-build")
        for name in self.providers:
            self._spawn(self._pump(name), f"offline-push-{name}")

    async def stop(self) -> None:
        """Stop sending; what is still queued is dropped (counted ``shutdown``)."""
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._drop("shutdown", self._intake_users)
        self._intake.clear()
        self._intake_users = 0
        self.queue.close()
        self._gauges()
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.close()

    def status(self) -> dict[str, Any]:
        """For /healthz."""
        return {
            "providers": list(self.providers),
            "queued": self.queue.entries,
            "queued_bytes": self.queue.bytes,
            "waiting_lookup": self._intake_users,
            "in_flight": {name: self.queue.in_flight(name) for name in self.providers},
            "sent": {k.partition(":")[2]: v for k, v in self.outcomes.items() if k.startswith("delivered:")},
            "dropped": {k: v for k, v in self.outcomes.items() if not k.startswith("delivered:")},
            "retries": self.queue.retries,
        }

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- building notifications ---------------------------------------------------------------

    async def _build_loop(self) -> None:
        while True:
            await self._offered.wait()
            self._offered.clear()
            while self._intake:
                batch: list[tuple[internal_pb2.PushMsg, list[int]]] = []
                users = 0
                while self._intake and (not batch or users + len(self._intake[0][1]) <= BATCH_USERS):
                    item = self._intake.popleft()
                    batch.append(item)
                    users += len(item[1])
                self._intake_users -= users
                try:
                    await self._build(batch)
                except asyncio.CancelledError:
                    self._drop("shutdown", users)  # stopping: counted with the rest
                    raise
                except StoreError as exc:
                    log.warning("offline push: looking up %d recipients: %s", users, exc)
                    self._drop(LOOKUP_FAILED, users)
                except Exception:
                    log.exception("offline push: building notifications failed")  # a bug
                    self._drop(LOOKUP_FAILED, users)

    async def _build(self, batch: list[tuple[internal_pb2.PushMsg, list[int]]]) -> None:
        everyone = sorted({u for _, users in batch for u in users})
        shielded = await self.directory.push_shielded(everyone)
        devices: dict[int, tuple[Device, ...]] = {}
        for token in await self.directory.device_tokens([u for u in everyone if u not in shielded]):
            device = Device(token.user_id, token.client_type, token.token)
            devices[token.user_id] = (*devices.get(token.user_id, ()), device)
        names = await self._sender_names({push.from_user_id for push, _ in batch})
        group_muted: list[set[int]] = []
        for push, users in batch:
            muted: set[int] = set()
            if push.session_type == base_pb2.SESSION_TYPE_GROUP:
                unmuted = [u for u in users if u not in shielded]
                muted = await self.messages.group_shielded(push.to_id, unmuted)
            group_muted.append(muted)
        # Every lookup done: from here on nothing can fail half way (a failure above counts the lot once).
        now = self.clock()
        for (push, users), in_group in zip(batch, group_muted, strict=True):
            muted = {u for u in users if u in shielded}
            made, _ = notifications(
                push,
                users,
                devices=devices,
                shielded=muted | in_group,
                sender_name=names.get(push.from_user_id, ""),
                include_text=self.config.include_text,
            )
            self._drop(SHIELDED, len(muted))
            self._drop(GROUP_SHIELDED, len(in_group))
            for n in made:
                self.queue.offer(n, [p.name for p in self.providers.values() if p.serves(n)], now)
        for wake in self._wakes.values():
            wake.set()
        self._gauges()

    async def _sender_names(self, user_ids: set[int]) -> dict[int, str]:
        now = self.clock()
        names: dict[int, str] = {}
        missing = []
        for user_id in user_ids:
            cached = self._names.get(user_id)
            if cached is not None and now - cached[1] < NAME_TTL:
                names[user_id] = cached[0]
            else:
                missing.append(user_id)
        if missing:
            for user in await self.directory.users_by_id(missing):
                names[user.id] = user.nick or user.name
                self._names[user.id] = (names[user.id], now)
                self._names.move_to_end(user.id)
            while len(self._names) > NAME_CACHE:
                self._names.popitem(last=False)
        return names

    # -- sending ------------------------------------------------------------------------------

    async def _pump(self, name: str) -> None:
        wake = self._wakes[name]
        while True:
            wake.clear()
            now = self.clock()
            while self.queue.in_flight(name) < self.config.concurrency:
                job = self.queue.take(name, now)
                if job is None:
                    break
                self._spawn(self._send(name, job), f"offline-push-send-{name}")
            due = self.queue.next_due(name)
            full = self.queue.in_flight(name) >= self.config.concurrency
            timeout = None if due is None or full else max(0.0, due - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()

    async def _send(self, name: str, job: Job) -> None:
        provider = self.providers[name]
        try:
            # The provider bounds its own requests by config.timeout; this is the backstop.
            async with asyncio.timeout(self.config.timeout + 1.0):
                result = await provider.send(job.notification)
        except TimeoutError:
            result = Result(Outcome.RETRY, "timed out")
        except Exception:
            log.exception("offline push: provider %s failed", name)  # it must not raise: a bug
            result = Result(Outcome.RETRY, "provider failed")
        self.queue.finish(job, result, self.clock())
        if result.outcome is Outcome.REJECTED:
            log.warning("offline push: %s rejected %s: %s", name, job.notification.key, result.detail)
        elif result.outcome is Outcome.RETRY and not job.ended:
            metrics.RETRIES.labels(name).inc()
            log.debug("offline push: %s: retrying %s: %s", name, job.notification.key, result.detail)
        if result.stale_tokens:
            self._spawn(self._forget(job.notification, result.stale_tokens), "offline-push-stale")
        self._gauges()
        self._wakes[name].set()

    async def _forget(self, notification: Notification, tokens: tuple[str, ...]) -> None:
        stale = [
            DeviceToken(d.user_id, d.client_type, d.token) for d in notification.devices if d.token in tokens
        ]
        try:
            removed = await self.directory.remove_device_tokens(stale)
        except StoreError as exc:
            log.warning("offline push: removing stale device tokens: %s", exc)
            return
        metrics.STALE_TOKENS.inc(removed)

    # -- counting -----------------------------------------------------------------------------

    def _record(self, provider: str, outcome: str, notification: Notification) -> None:
        if outcome == DELIVERED:
            self.outcomes[f"delivered:{provider}"] += 1
            metrics.SENT.labels(provider).inc()
        else:
            self.outcomes[outcome] += 1
            metrics.DROPPED.labels(outcome).inc()
            if outcome != QUEUE_FULL:  # a flood would log every one
                log.debug("offline push: %s for %s: %s", provider or "-", notification.key, outcome)

    def _drop(self, reason: str, count: int) -> None:
        if count:
            self.outcomes[reason] += count
            metrics.DROPPED.labels(reason).inc(count)

    def _gauges(self) -> None:
        metrics.QUEUE_DEPTH.set(self.queue.entries)
        metrics.QUEUE_BYTES.set(self.queue.bytes)
