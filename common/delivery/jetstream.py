"""The delivery log on NATS JetStream.

One stream (``LIMITS`` retention, so every group sees every entry) with the
subjects ``<subject_prefix>.<partition>``; a message's data is the bytes of
:func:`~common.delivery.log.encode_entry` and its ``Nats-Msg-Id`` is
``<conversation>-<msg_id>-<hash of the payload>``, so a retried append
within the duplicate window is stored once, while another entry of the same
message (a resend pushed again, with its own origin and commit time) is not
taken for it. Bounds are the stream's: ``max_msgs_per_subject`` (entries
per partition) and ``max_bytes`` (the whole stream, JetStream has no byte
bound per subject), with ``discard: new`` per subject: a full log refuses the
append (:class:`~common.errors.Overloaded`) rather than drop what a consumer
has not read.

A group is one durable pull consumer per partition, ``<group>_p<partition>``,
filtered on its subject, explicit acks. Redelivery is JetStream's own: an
entry not acknowledged within ``ack_wait`` is handed out again by a later
:meth:`consume` (to whichever consumer of the group pulls). A takeover need
not wait that long: :meth:`claim_stale` with ``idle_s=0`` NAKs every entry
the consumer still has pending (between its ack floor and its last
delivery, found with CONSUMER.INFO), through ack subjects it builds in
JetStream's format ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.
<consumer seq>.<time>.<pending>``; they come back from the next
:meth:`consume` at once, and :meth:`claim_stale` itself returns ``[]``. The
``consumer`` name is not needed by JetStream (pull consumers are shared by
their clients).

Partition leases live in a KV bucket, ``<stream>_LEASES`` (memory storage,
one revision per key ``p<partition>``, value the owner's name), whose TTL is
the longest lease asked for: the server expires a lease that was not
renewed, on its own clock. Taking is ``create`` (fails if the key exists),
renewing ``update(last=<our revision>)`` (fails if anyone wrote since),
releasing a delete at our revision. A lease asked for a shorter ttl than the
bucket's lasts the bucket's (longer: still exclusive, only a slower takeover).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from common.config import redact_urls
from common.delivery.log import Delivery, DeliveryLog, Entry, decode_entry, encode_entry
from common.errors import InvalidArgument, Overloaded, Unavailable

log = logging.getLogger(__name__)

#: The shortest pull: a fetch that finds nothing still waits this long.
_MIN_FETCH_S = 0.05
_REQUEST_TIMEOUT_S = 5.0
#: The most entries one take-over NAKs per partition.
_MAX_TAKEOVER = 10_000
#: JetStream's error code for a write whose expected last sequence did not match.
_WRONG_LAST_SEQUENCE = 10071


class JetStreamDeliveryLog(DeliveryLog):
    def __init__(
        self,
        nc: Any,
        partitions: int,
        stream: str = "IMCLUSTER_DELIVERY",
        subject_prefix: str = "imcluster.delivery",
        max_entries: int = 100_000,
        max_bytes: int = 64 << 20,
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
        self.lease_bucket = f"{stream}_LEASES"
        self._kv: KeyValue | None = None
        self._kv_ttl_s = 0.0
        #: The KV revision of each lease this client wrote last (renewal compares it).
        self._revisions: dict[int, int] = {}

    @classmethod
    async def connect(
        cls, url: str, partitions: int, connect_budget_s: float = 5.0, **options: Any
    ) -> JetStreamDeliveryLog:
        """Connect (within ``connect_budget_s``), then create or update the stream.

        Once connected the client reconnects forever (a db_proxy outlives a
        NATS restart); the first connection is bounded so a wrong URL fails.
        """

        async def report(exc: Exception) -> None:
            log.warning("nats delivery log at %s: %s", redact_urls(url), exc)

        nc = NATS()
        try:
            async with asyncio.timeout(connect_budget_s):
                await nc.connect(
                    url,
                    connect_timeout=1,
                    max_reconnect_attempts=-1,
                    # A cut leaves the TCP connection silent, not closed: nats-py's
                    # default pings (every 120 s) would keep the dead one for
                    # minutes, and its 2 s between reconnects delays the heal.
                    # Three missed 1 s pings declare it dead, as our links do.
                    ping_interval=1,
                    max_outstanding_pings=3,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]  # a float sleeps fine
                    error_cb=report,
                )
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
            digest = hashlib.blake2b(entry.payload, digest_size=8).hexdigest()
            msg_id = "{}.{}.{}-{}-{}".format(*entry.conversation, entry.msg_id, digest)
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

    async def give_back(self, group: str, deliveries: Sequence[Delivery]) -> None:
        # A NAK: redelivered at once to whoever pulls next, not after the ack wait.
        # Published, not requested: not every server version answers a NAK.
        try:
            for d in deliveries:
                await self._nc.publish(d.delivery_id, b"-NAK")
            await self._nc.flush(timeout=int(_REQUEST_TIMEOUT_S))
        except (NatsError, TimeoutError) as exc:
            raise Unavailable(f"jetstream delivery log give back: {exc}") from exc

    async def claim_stale(
        self, group: str, consumer: str, idle_s: float, max_entries: int, partitions: Sequence[int] = ()
    ) -> list[Delivery]:
        self.check_partitions(partitions)
        if idle_s > 0:
            return []  # JetStream redelivers by its ack_wait, through consume()
        try:
            for p in partitions or range(self.partitions):
                await self._nak_pending(group, p)
            await self._nc.flush(timeout=int(_REQUEST_TIMEOUT_S))
        except (NatsError, APIError, TimeoutError) as exc:
            raise Unavailable(f"jetstream delivery log claim: {exc}") from exc
        return []  # what was pending comes back through consume(), now

    async def _nak_pending(self, group: str, partition: int) -> None:
        durable = f"{group}_p{partition}"
        try:
            info = await self._js.consumer_info(self.stream, durable)
        except NotFoundError:
            return  # no such group yet: nothing is pending
        if not info.num_ack_pending or info.delivered is None or info.ack_floor is None:
            return
        # Any consumer seq above the ack floor up to the last delivered one is
        # accepted; a seq no longer pending (acked out of order) is a no-op.
        last = info.delivered.consumer_seq
        first = info.ack_floor.stream_seq + 1
        for stream_seq in range(first, min(info.delivered.stream_seq, first + _MAX_TAKEOVER - 1) + 1):
            await self._nc.publish(f"$JS.ACK.{self.stream}.{durable}.1.{stream_seq}.{last}.0.0", b"-NAK")

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

    # -- leases ----------------------------------------------------------------

    async def _leases(self, ttl_s: float | None) -> KeyValue | None:
        """The lease bucket, its TTL at least ``ttl_s``; None if it does not exist and ``ttl_s`` is None."""
        if self._kv is not None and (ttl_s is None or ttl_s <= self._kv_ttl_s):
            return self._kv
        try:
            try:
                kv = await self._js.key_value(self.lease_bucket)
            except BucketNotFoundError:
                if ttl_s is None:
                    return None
                kv = await self._js.create_key_value(
                    bucket=self.lease_bucket, ttl=ttl_s, history=1, storage=api.StorageType.MEMORY
                )
            info = await self._js.stream_info(f"KV_{self.lease_bucket}")
            bucket_ttl = float(info.config.max_age or 0.0)
            if ttl_s is not None and bucket_ttl < ttl_s:
                # Another client made it with a shorter ttl: leases last the longest asked for.
                config = info.config
                config.max_age = ttl_s
                config.duplicate_window = min(float(config.duplicate_window or ttl_s), ttl_s)
                await self._js.update_stream(config)
                bucket_ttl = ttl_s
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream lease bucket {self.lease_bucket}: {exc}") from exc
        self._kv, self._kv_ttl_s = kv, bucket_ttl
        return kv

    async def hold(self, partition: int, owner: str, ttl_s: float) -> bool:
        self.check_partitions([partition])
        if ttl_s <= 0:
            raise InvalidArgument(f"lease ttl must be positive, not {ttl_s}")
        kv = await self._leases(ttl_s)
        assert kv is not None
        key = f"p{partition}"
        value = owner.encode()
        try:
            revision = self._revisions.get(partition)
            if revision is not None:
                try:
                    self._revisions[partition] = await kv.update(key, value, last=revision)
                    return True
                except KeyWrongLastSequenceError:
                    del self._revisions[partition]  # lapsed (expired, or taken since): look again
            try:
                current = await kv.get(key)
            except KeyNotFoundError:  # free: never taken, expired, or released
                try:
                    self._revisions[partition] = await kv.create(key, value)
                except KeyWrongLastSequenceError:
                    return False  # someone took it first
                return True
            if current.value != value:
                return False
            # Ours from an earlier client of the same owner (a restart within the ttl).
            try:
                self._revisions[partition] = await kv.update(key, value, last=current.revision)
            except KeyWrongLastSequenceError:
                return False
            return True
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream delivery log hold: {exc}") from exc

    async def release(self, partition: int, owner: str) -> None:
        self.check_partitions([partition])
        revision = self._revisions.pop(partition, None)
        kv = await self._leases(None)
        if kv is None:
            return
        key = f"p{partition}"
        try:
            if revision is None:
                try:
                    current = await kv.get(key)
                except KeyNotFoundError:
                    return
                if current.value != owner.encode():
                    return
                revision = current.revision
            await kv.delete(key, last=revision)
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return  # not ours any more
            raise Unavailable(f"jetstream delivery log release: {exc}") from exc
        except NatsError as exc:
            raise Unavailable(f"jetstream delivery log release: {exc}") from exc

    async def holders(self) -> dict[int, str]:
        kv = await self._leases(None)
        if kv is None:
            return {}

        async def owner(partition: int) -> str | None:
            try:
                entry = await kv.get(f"p{partition}")
            except KeyNotFoundError:
                return None
            return entry.value.decode() if entry.value else None

        try:
            owners = await asyncio.gather(*(owner(p) for p in range(self.partitions)))
        except (NatsError, APIError) as exc:
            raise Unavailable(f"jetstream delivery log holders: {exc}") from exc
        return {p: o for p, o in enumerate(owners) if o is not None}

    async def delete(self) -> None:
        """Drop the stream, its consumers and its leases (tests, decommissioning)."""
        await self.close_subscriptions()
        with contextlib.suppress(NotFoundError):
            await self._js.delete_stream(self.stream)
        with contextlib.suppress(NotFoundError):
            await self._js.delete_key_value(self.lease_bucket)
        self._kv, self._revisions = None, {}

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
        # NATS already gone (its host cut, the server stopped): the client's
        # transport is closed under it, and closing must not fail a shutdown.
        with contextlib.suppress(NatsError, RuntimeError, OSError):
            await self._nc.close()
