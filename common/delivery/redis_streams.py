"""The delivery log on Redis Streams.

One stream per partition, ``<prefix>:<partition>``; each entry has one field,
``e``, the bytes of :func:`~common.delivery.log.encode_entry`. Appends are
``XADD ... MAXLEN ~ <max_entries>`` (Redis trims the oldest: it is not the
source of truth, a consumer refills a trimmed gap from the database). A
consumer group is a Redis group, created at ``0`` with ``MKSTREAM`` (so a new
group reads all that is retained); consuming is ``XREADGROUP ... >``,
acknowledging ``XACK``, takeover ``XAUTOCLAIM``.

A partition's lease is the key ``<prefix>:lease:<partition>`` holding the
owner's name with a PX expiry: taken with ``SET NX PX``, renewed and released
by Lua scripts that compare the owner first (so nobody renews or deletes a
lease another consumer took after theirs lapsed). Expiry is Redis's own
clock, so the hosts' clocks do not matter.

Redis is non-authoritative: when a stream is lost (FLUSHALL, the key deleted,
a failover to an empty replica) ``XREADGROUP`` answers ``NOGROUP``; the group
is recreated and :class:`~common.delivery.log.StreamLost` tells the caller to
refill from the database. Redis has no byte bound per stream: bytes are
bounded by ``maxmemory``. Durability is Redis's (``appendfsync``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from common.delivery.log import Delivery, DeliveryLog, Entry, StreamLost, decode_entry, encode_entry
from common.errors import InvalidArgument, Unavailable

#: Extra seconds a blocking read may take beyond its BLOCK before the
#: connection is presumed dead.
_BLOCK_SLACK_S = 5.0

#: Take the lease if free, renew it if ours; 1 if held by ARGV[1] on return.
_HOLD = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

#: Delete the lease only if ARGV[1] holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStreamsDeliveryLog(DeliveryLog):
    def __init__(
        self,
        client: aioredis.Redis,
        partitions: int,
        prefix: str = "imcluster:delivery",
        max_entries: int = 100_000,
        exact_trim: bool = False,
    ) -> None:
        super().__init__(partitions)
        if max_entries < 1:
            raise InvalidArgument("max_entries must be >= 1")
        self._redis = client
        self.prefix = prefix
        self.max_entries = max_entries
        #: Exact MAXLEN costs more per XADD; ``~`` trims by whole macro nodes.
        self._approximate = not exact_trim
        #: (group, partition) pairs this process has made sure exist.
        self._groups: set[tuple[str, int]] = set()
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, partitions: int, prefix: str, max_entries: int, exact_trim: bool
    ) -> RedisStreamsDeliveryLog:
        # No socket timeout: blocking reads are bounded by BLOCK and our own timeout.
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0, decode_responses=False)
        return cls(client, partitions, prefix, max_entries, exact_trim)

    def key(self, partition: int) -> str:
        return f"{self.prefix}:{partition}"

    async def append(self, entries: Sequence[Entry]) -> None:
        self.check(entries)
        if not entries:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.xadd(
                        self.key(entry.partition),
                        {"e": encode_entry(entry)},
                        maxlen=self.max_entries,
                        approximate=self._approximate,
                    )
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"redis delivery log append: {exc}") from exc

    async def _create_group(self, group: str, partition: int) -> bool:
        """Make sure the group exists; True if it had to be created."""
        try:
            await self._redis.xgroup_create(self.key(partition), group, id="0", mkstream=True)
            created = True
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            created = False
        self._groups.add((group, partition))
        return created

    async def _ensure_groups(self, group: str, partitions: Sequence[int]) -> None:
        for p in partitions:
            if (group, p) not in self._groups:
                await self._create_group(group, p)

    async def _recover(self, group: str, partitions: Sequence[int]) -> StreamLost:
        """After NOGROUP: recreate the groups that vanished and name them."""
        lost = [p for p in partitions if await self._create_group(group, p)]
        return StreamLost(lost or partitions)

    async def consume(
        self, group: str, consumer: str, partitions: Sequence[int], max_entries: int, block_s: float
    ) -> list[Delivery]:
        self.check_partitions(partitions)
        if not partitions:
            return []
        # No BLOCK for 0: BLOCK 0 would mean forever.
        block_ms = max(1, round(block_s * 1000)) if block_s > 0 else None
        try:
            await self._ensure_groups(group, partitions)
            try:
                async with asyncio.timeout(block_s + _BLOCK_SLACK_S):
                    reply = await self._redis.xreadgroup(
                        group,
                        consumer,
                        {self.key(p): ">" for p in partitions},
                        count=max_entries,
                        block=block_ms,
                    )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                raise await self._recover(group, partitions) from None
        except (RedisError, TimeoutError) as exc:
            raise Unavailable(f"redis delivery log consume: {exc}") from exc
        return [
            Delivery(decode_entry(fields[b"e"]), _str(entry_id), 1)
            for _key, items in _streams(reply)
            for entry_id, fields in items
            if fields  # an id without fields was trimmed while pending
        ]

    async def ack(self, group: str, deliveries: Sequence[Delivery]) -> None:
        by_key: dict[str, list[str]] = {}
        for d in deliveries:
            by_key.setdefault(self.key(d.entry.partition), []).append(d.delivery_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, ids in by_key.items():
                    pipe.xack(key, group, *ids)
                # A NOGROUP here means the stream was lost: nothing left to acknowledge.
                await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise Unavailable(f"redis delivery log ack: {exc}") from exc

    async def claim_stale(
        self, group: str, consumer: str, idle_s: float, max_entries: int, partitions: Sequence[int] = ()
    ) -> list[Delivery]:
        self.check_partitions(partitions)
        parts = list(partitions) or list(range(self.partitions))
        out: list[Delivery] = []
        try:
            await self._ensure_groups(group, parts)
            for p in parts:
                if len(out) >= max_entries:
                    break
                try:
                    reply = await self._redis.xautoclaim(
                        self.key(p), group, consumer, int(idle_s * 1000), "0-0", count=max_entries - len(out)
                    )
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    raise await self._recover(group, [p]) from None
                claimed = reply[1] if len(reply) > 1 else []
                out.extend(await self._with_counts(group, consumer, p, claimed))
        except RedisError as exc:
            raise Unavailable(f"redis delivery log claim: {exc}") from exc
        return out

    async def _with_counts(self, group: str, consumer: str, partition: int, claimed: Any) -> list[Delivery]:
        """XAUTOCLAIM does not say how often an entry was delivered: ask XPENDING."""
        items = [(i, f) for i, f in claimed if f]
        if not items:
            return []
        pending = await self._redis.xpending_range(
            self.key(partition), group, _str(items[0][0]), _str(items[-1][0]), len(items), consumer
        )
        counts = {_str(row["message_id"]): int(row["times_delivered"]) for row in pending}
        return [Delivery(decode_entry(fields[b"e"]), _str(i), counts.get(_str(i), 2)) for i, fields in items]

    async def trim(self, max_entries: int) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for p in range(self.partitions):
                    pipe.xtrim(self.key(p), maxlen=max(max_entries, 0), approximate=False)
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"redis delivery log trim: {exc}") from exc

    async def pending(self, group: str, partition: int) -> int:
        self.check_partitions([partition])
        try:
            summary = await self._redis.xpending(self.key(partition), group)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return 0  # no group (yet, or lost): nothing is pending
            raise Unavailable(f"redis delivery log pending: {exc}") from exc
        except RedisError as exc:
            raise Unavailable(f"redis delivery log pending: {exc}") from exc
        return int(summary["pending"])

    async def length(self, partition: int) -> int:
        self.check_partitions([partition])
        try:
            return int(await self._redis.xlen(self.key(partition)))
        except RedisError as exc:
            raise Unavailable(f"redis delivery log length: {exc}") from exc

    def lease_key(self, partition: int) -> str:
        return f"{self.prefix}:lease:{partition}"

    async def hold(self, partition: int, owner: str, ttl_s: float) -> bool:
        self.check_partitions([partition])
        ttl_ms = round(ttl_s * 1000)
        if ttl_ms < 1:
            raise InvalidArgument(f"lease ttl must be at least 1 ms, not {ttl_s}")
        try:
            return bool(await self._hold(keys=[self.lease_key(partition)], args=[owner, ttl_ms]))
        except RedisError as exc:
            raise Unavailable(f"redis delivery log hold: {exc}") from exc

    async def release(self, partition: int, owner: str) -> None:
        self.check_partitions([partition])
        try:
            await self._release(keys=[self.lease_key(partition)], args=[owner])
        except RedisError as exc:
            raise Unavailable(f"redis delivery log release: {exc}") from exc

    async def holders(self) -> dict[int, str]:
        try:
            owners = await self._redis.mget([self.lease_key(p) for p in range(self.partitions)])
        except RedisError as exc:
            raise Unavailable(f"redis delivery log holders: {exc}") from exc
        return {p: _str(owner) for p, owner in enumerate(owners) if owner is not None}

    async def delete(self) -> None:
        """Drop every partition's stream and lease (tests, decommissioning)."""
        await self._redis.delete(*(self.key(p) for p in range(self.partitions)))
        await self._redis.delete(*(self.lease_key(p) for p in range(self.partitions)))
        self._groups.clear()

    async def close(self) -> None:
        await self._redis.aclose()


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _streams(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply as (key, items) (RESP2, the protocol our client speaks)."""
    return [(k, items) for k, items in reply or []]
