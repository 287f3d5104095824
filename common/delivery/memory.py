"""The in-process delivery log of the embedded default (SQLite, no Redis).

Same semantics as the engines: per-group cursors and pending lists, takeover
by :meth:`claim_stale`. Bounded per partition in entries and payload bytes:
when an append would pass a bound, the entries every group has acknowledged
are dropped first; if that is not enough the append raises
:class:`~common.errors.Overloaded` (nothing of the batch is stored). Not
durable across a restart, which is fine: the database refills the gap.

Time is passed in (``clock``) so idle times can be driven by tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.delivery.log import Delivery, DeliveryLog, Entry
from common.errors import InvalidArgument, Overloaded


@dataclass(slots=True)
class _Pending:
    consumer: str
    since: float
    deliveries: int


@dataclass(slots=True)
class _Partition:
    #: (offset, entry), oldest first; offsets are consecutive.
    entries: deque[tuple[int, Entry]] = field(default_factory=deque)
    next_offset: int = 0
    bytes: int = 0

    @property
    def first_offset(self) -> int:
        return self.entries[0][0] if self.entries else self.next_offset

    def get(self, offset: int) -> Entry | None:
        index = offset - self.first_offset
        return self.entries[index][1] if 0 <= index < len(self.entries) else None

    def drop_oldest(self) -> None:
        _, entry = self.entries.popleft()
        self.bytes -= len(entry.payload)


@dataclass(slots=True)
class _Group:
    #: Next offset to hand out, per partition.
    cursors: list[int]
    #: (partition, offset) -> who holds it since when.
    pending: dict[tuple[int, int], _Pending] = field(default_factory=dict)


class MemoryDeliveryLog(DeliveryLog):
    def __init__(
        self,
        partitions: int,
        max_entries: int = 100_000,
        max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(partitions)
        if max_entries < 1 or max_bytes < 1:
            raise InvalidArgument("max_entries and max_bytes must be >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._parts = [_Partition() for _ in range(partitions)]
        self._groups: dict[str, _Group] = {}
        self._appended = asyncio.Event()
        #: partition -> (owner, expiry on ``clock``)
        self._leases: dict[int, tuple[str, float]] = {}

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group([part.first_offset for part in self._parts])
        return group

    def _acked_by_all(self, partition: int, offset: int) -> bool:
        if not self._groups:
            return False  # kept for the first group to come
        return all(
            g.cursors[partition] > offset and (partition, offset) not in g.pending
            for g in self._groups.values()
        )

    def _make_room(self, partition: int, count: int, size: int) -> None:
        part = self._parts[partition]
        if count > self.max_entries or size > self.max_bytes:
            raise Overloaded(
                f"delivery log batch of {count} entries, {size} bytes exceeds the partition bound"
            )
        while len(part.entries) + count > self.max_entries or part.bytes + size > self.max_bytes:
            if not part.entries or not self._acked_by_all(partition, part.first_offset):
                raise Overloaded(
                    f"delivery log partition {partition} full "
                    f"({len(part.entries)} entries, {part.bytes} bytes unacknowledged)"
                )
            part.drop_oldest()

    async def append(self, entries: Sequence[Entry]) -> None:
        self.check(entries)
        need: dict[int, tuple[int, int]] = {}
        for entry in entries:
            count, size = need.get(entry.partition, (0, 0))
            need[entry.partition] = (count + 1, size + len(entry.payload))
        for partition, (count, size) in need.items():
            self._make_room(partition, count, size)  # all checked before anything is stored
        for entry in entries:
            part = self._parts[entry.partition]
            part.entries.append((part.next_offset, entry))
            part.next_offset += 1
            part.bytes += len(entry.payload)
        if entries:
            self._appended.set()
            self._appended = asyncio.Event()

    def _take_new(
        self, group: _Group, consumer: str, partitions: Sequence[int], limit: int
    ) -> list[Delivery]:
        now = self._clock()
        out: list[Delivery] = []
        for p in partitions:
            part = self._parts[p]
            offset = max(group.cursors[p], part.first_offset)
            stop = min(part.next_offset, offset + limit)  # the limit is per partition, as on the engines
            while offset < stop:
                entry = part.get(offset)
                assert entry is not None
                group.pending[(p, offset)] = _Pending(consumer, now, 1)
                out.append(Delivery(entry, f"{p}-{offset}", 1))
                offset += 1
            group.cursors[p] = offset
        return out

    async def consume(
        self, group: str, consumer: str, partitions: Sequence[int], max_entries: int, block_s: float
    ) -> list[Delivery]:
        self.check_partitions(partitions)
        state = self._group(group)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block_s, 0.0)
        while True:
            got = self._take_new(state, consumer, partitions, max_entries)
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            try:
                async with asyncio.timeout(remaining):
                    await self._appended.wait()
            except TimeoutError:
                return []

    async def ack(self, group: str, deliveries: Sequence[Delivery]) -> None:
        state = self._group(group)
        for d in deliveries:
            p, _, offset = d.delivery_id.partition("-")
            state.pending.pop((int(p), int(offset)), None)

    async def claim_stale(
        self, group: str, consumer: str, idle_s: float, max_entries: int, partitions: Sequence[int] = ()
    ) -> list[Delivery]:
        self.check_partitions(partitions)
        state = self._group(group)
        wanted = set(partitions) if partitions else None
        now = self._clock()
        out: list[Delivery] = []
        for key in sorted(state.pending):
            if len(out) >= max_entries:
                break
            p, offset = key
            held = state.pending[key]
            if (wanted is not None and p not in wanted) or now - held.since < idle_s:
                continue
            entry = self._parts[p].get(offset)
            if entry is None:  # trimmed away while pending
                del state.pending[key]
                continue
            held.consumer, held.since, held.deliveries = consumer, now, held.deliveries + 1
            out.append(Delivery(entry, f"{p}-{offset}", held.deliveries))
        return out

    async def trim(self, max_entries: int) -> None:
        for p, part in enumerate(self._parts):
            while len(part.entries) > max(max_entries, 0):
                offset = part.first_offset
                part.drop_oldest()
                for g in self._groups.values():
                    g.pending.pop((p, offset), None)

    async def pending(self, group: str, partition: int) -> int:
        self.check_partitions([partition])
        return sum(1 for p, _ in self._group(group).pending if p == partition)

    async def length(self, partition: int) -> int:
        self.check_partitions([partition])
        return len(self._parts[partition].entries)

    def _lease(self, partition: int) -> tuple[str, float] | None:
        lease = self._leases.get(partition)
        if lease is not None and lease[1] <= self._clock():
            del self._leases[partition]  # lapsed
            return None
        return lease

    async def hold(self, partition: int, owner: str, ttl_s: float) -> bool:
        self.check_partitions([partition])
        if ttl_s <= 0:
            raise InvalidArgument(f"lease ttl must be positive, not {ttl_s}")
        lease = self._lease(partition)
        if lease is not None and lease[0] != owner:
            return False
        self._leases[partition] = (owner, self._clock() + ttl_s)
        return True

    async def release(self, partition: int, owner: str) -> None:
        self.check_partitions([partition])
        lease = self._lease(partition)
        if lease is not None and lease[0] == owner:
            del self._leases[partition]

    async def holders(self) -> dict[int, str]:
        return {p: lease[0] for p in range(self.partitions) if (lease := self._lease(p)) is not None}

    async def close(self) -> None:
        pass
