"""The delivery log on NATS JetStream.

One stream (``LIMITS`` retention, so every group sees every entry) with the
subjects ``<subject_prefix>.<partition>``; a message's data is the bytes of
:func:`~common.delivery.log.encode_entry` and its ``Nats-Msg-Id`` is
``<conversation>-<msg_id>``, so a retried append within the duplicate window
is stored once. Bounds are the stream's: ``max_msgs_per_subject`` (entries
per partition) and ``max_bytes`` (the whole stream, JetStream has no byte
bound per subject), with ``discard: new`` per subject: a full log refuses the
append (:class:`~common.errors.Overloaded`) rather than drop what a consumer
has not read.

A group is one durable pull consumer per partition, ``<group>_p<partition>``,
filtered on its subject, explicit acks. Redelivery is JetStream's own: an
entry not acknowledged within ``ack_wait`` is handed out again by a later
:meth:`consume` (to whichever consumer of the group pulls), so
:meth:`claim_stale` has nothing to do and returns ``[]``. The ``consumer``
name is not needed by JetStream (pull consumers are shared by their clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from common.delivery.log import Delivery, DeliveryLog, Entry, decode_entry, encode_entry
from common.errors import InvalidArgument, Overloaded, Unavailable

log = logging.getLogger(__name__)

#: The shortest pull: a fetch that finds nothing still waits this long.
_MIN_FETCH_S = 0.05
_REQUEST_TIMEOUT_S = 5.0


class JetStreamDeliveryLog(DeliveryLog):
    def __init__(
        self,
        nc: Any,
        partitions: int,
        stream: str = "IMCLUSTER_DELIVERY",
        subject_prefix: str = "imcluster.delivery",
        max_entries: int = 100_000,
        max_bytes: int = 1 << 30,
        ack_wait_s: float = 30.0,
    ) -> None:
        super().__init__(partitions)
        #: ``max_bytes`` is per partition, as on memory; JetStream bounds the whole stream.
        if max_entries < 1 or max_bytes < 1 or ack_wait_s <= 0:
            raise InvalidArgument("max_entries, max_bytes and ack_wait must be positive")
        self._nc = nc
        self._js = nc.jetstream(timeout=_REQUEST_TIMEOUT_S)
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ack_wait_s = ack_wait_s
        self._subs: dict[tuple[str, int], Any] = {}
        self._watcher: Any = None
        #: Appends seen per partition (by :meth:`_watch`), and a wake-up for waiters.
        self._appends = [0] * partitions
        self._appended = asyncio.Event()

    @classmethod
    async def connect(
        cls, url: str, partitions: int, connect_budget_s: float = 5.0, **options: Any
    ) -> JetStreamDeliveryLog:
        """Connect (within ``connect_budget_s``), then create or update the stream.

        Once connected the client reconnects forever (a db_proxy outlives a
        NATS restart); the first connection is bounded so a wrong URL fails.
        """

        async def report(exc: Exception) -> None:
            log.warning("nats delivery log at %s: %s", url, exc)

        nc = NATS()
        try:
            async with asyncio.timeout(connect_budget_s):
                await nc.connect(url, connect_timeout=2, max_reconnect_attempts=-1, error_cb=report)
        except (OSError, NatsError, TimeoutError) as exc:
            with contextlib.suppress(NatsError):
                await nc.close()
            raise Unavailable(f"nats at {url} unreachable: {str(exc) or 'timed out'}") from exc
        opened = cls(nc, partitions, **options)
        try:
            await opened.ensure_stream()
        except Unavailable:
            await nc.close()
            raise
        return opened

    def subject(self, partition: int) -> str:
        return f"{self.subject_prefix}.{partition}"

    async def ensure_stream(self) -> None:
        """Create the stream, or bring an existing one's limits to ours."""
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.*"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_msgs_per_subject=self.max_entries,
            max_bytes=self.max_bytes * self.partitions,
            discard=api.DiscardPolicy.NEW,
            discard_new_per_subject=True,
            duplicate_window=120.0,
        )
        try:
            try:
                await self._js.stream_info(self.stream)
            except NotFoundError:
                await self._js.add_stream(config)
            else:
                await self._js.update_stream(config)
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream stream {self.stream}: {exc}") from exc

    async def append(self, entries: Sequence[Entry]) -> None:
        self.check(entries)
        # One at a time, each awaited: when one is refused, those before it are stored.
        for entry in entries:
            msg_id = "{}.{}.{}-{}".format(*entry.conversation, entry.msg_id)
            try:
                await self._js.publish(
                    self.subject(entry.partition),
                    encode_entry(entry),
                    stream=self.stream,
                    headers={"Nats-Msg-Id": msg_id},
                )
            except APIError as exc:
                if "maximum" in (exc.description or ""):
                    raise Overloaded(f"jetstream delivery log full: {exc.description}") from exc
                raise Unavailable(f"jetstream delivery log append: {exc}") from exc
            except NatsError as exc:
                raise Unavailable(f"jetstream delivery log append: {exc}") from exc

    async def _sub(self, group: str, partition: int) -> Any:
        sub = self._subs.get((group, partition))
        if sub is None:
            durable = f"{group}_p{partition}"
            config = api.ConsumerConfig(
                durable_name=durable,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait_s,
                filter_subject=self.subject(partition),
            )
            sub = await self._js.pull_subscribe(
                self.subject(partition), durable=durable, stream=self.stream, config=config
            )
            self._subs[(group, partition)] = sub
        return sub

    async def _watch(self) -> None:
        """Count appends per partition from a core subscription on the subjects.

        A blocked :meth:`consume` waits on these counters instead of on a
        long JetStream pull: a pull cancelled mid-batch would lose the
        messages it had collected until their ack wait, and a pull of N
        waits for N. The price is that every consumer process also sees the
        appends' bytes once more; redeliveries (after ack wait) do not wake a
        blocked consume, they come with the next call.
        """
        if self._watcher is not None:
            return
        prefix = len(self.subject_prefix) + 1

        async def seen(msg: Any) -> None:
            with contextlib.suppress(ValueError, IndexError):
                self._appends[int(msg.subject[prefix:])] += 1
                self._appended.set()
                self._appended = asyncio.Event()

        self._watcher = await self._nc.subscribe(f"{self.subject_prefix}.*", cb=seen)
        await self._nc.flush()

    async def _fetch(self, sub: Any, batch: int) -> list[Any]:
        """What the consumer has now: a no-wait pull, bounded by a short timeout."""
        try:
            return list(await sub.fetch(batch, timeout=_MIN_FETCH_S))
        except (NatsTimeout, TimeoutError):  # nats-py raises either, depending on the path
            return []

    async def consume(
        self, group: str, consumer: str, partitions: Sequence[int], max_entries: int, block_s: float
    ) -> list[Delivery]:
        self.check_partitions(partitions)
        if not partitions or max_entries < 1:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block_s, 0.0)
        try:
            await self._watch()
            subs = [await self._sub(group, p) for p in partitions]
            while True:
                before = [self._appends[p] for p in partitions]
                changed = self._appended
                # Never cancelled, so nothing fetched is dropped on the floor.
                results = await asyncio.gather(*(self._fetch(sub, max_entries) for sub in subs))
                out = [
                    Delivery(decode_entry(msg.data), msg.reply, msg.metadata.num_delivered)
                    for msgs in results
                    for msg in msgs
                ]
                remaining = deadline - loop.time()
                if out or remaining <= 0:
                    return out
                if [self._appends[p] for p in partitions] == before:
                    try:
                        async with asyncio.timeout(remaining):
                            while [self._appends[p] for p in partitions] == before:
                                await changed.wait()
                                changed = self._appended
                    except TimeoutError:
                        return []
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream delivery log consume: {exc}") from exc

    async def ack(self, group: str, deliveries: Sequence[Delivery]) -> None:
        # Double acks (a request, answered once the server recorded it): an ack
        # lost on the way would only cause a redelivery, but we want to know.
        try:
            await asyncio.gather(
                *(self._nc.request(d.delivery_id, b"+ACK", timeout=_REQUEST_TIMEOUT_S) for d in deliveries)
            )
        except NatsError as exc:
            raise Unavailable(f"jetstream delivery log ack: {exc}") from exc

    async def claim_stale(
        self, group: str, consumer: str, idle_s: float, max_entries: int, partitions: Sequence[int] = ()
    ) -> list[Delivery]:
        self.check_partitions(partitions)
        return []  # JetStream redelivers by ack_wait, through consume()

    async def trim(self, max_entries: int) -> None:
        try:
            for p in range(self.partitions):
                # keep=0 is sent as "no keep": the subject is purged, as asked.
                await self._js.purge_stream(self.stream, subject=self.subject(p), keep=max(max_entries, 0))
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream delivery log trim: {exc}") from exc

    async def pending(self, group: str, partition: int) -> int:
        self.check_partitions([partition])
        try:
            info = await self._js.consumer_info(self.stream, f"{group}_p{partition}")
        except NotFoundError:
            return 0
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream delivery log pending: {exc}") from exc
        # Includes entries whose ack wait expired, waiting to go out again.
        return int(info.num_ack_pending or 0)

    async def length(self, partition: int) -> int:
        self.check_partitions([partition])
        subject = self.subject(partition)
        try:
            info = await self._js.stream_info(self.stream, subjects_filter=subject)
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream delivery log length: {exc}") from exc
        return int((info.state.subjects or {}).get(subject, 0))

    async def delete(self) -> None:
        """Drop the stream and its consumers (tests, decommissioning)."""
        await self.close_subscriptions()
        with contextlib.suppress(NotFoundError):
            await self._js.delete_stream(self.stream)

    async def close_subscriptions(self) -> None:
        subs, self._subs = self._subs, {}
        if self._watcher is not None:
            subs[("", -1)], self._watcher = self._watcher, None
        for sub in subs.values():
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()

    async def close(self) -> None:
        if self._nc.is_closed:
            return
        await self.close_subscriptions()
        await self._nc.close()
