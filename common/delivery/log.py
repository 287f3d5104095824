"""The delivery log: the interface every backend implements, and its records.

After db_proxy commits a message it appends an :class:`Entry` here; pushes
(and later offline push, audit export, webhooks) are consumed from it by
consumer *groups*, each of which sees every entry. Inside a group an entry is
held by one consumer until it is acknowledged; if that consumer dies, another
takes it over with :meth:`DeliveryLog.claim_stale` (or, on JetStream, when its
ack wait expires). Delivery is at least once: consumers must tolerate a
redelivered entry (``Delivery.deliveries > 1``).

The log is partitioned by conversation with :func:`partition_of`, a stable
hash, so that every process (and every engine: Redis, JetStream, Kafka)
agrees on where a conversation's entries go, and order is kept per partition,
hence per conversation.

The log is never the source of truth: message ids per conversation are
consecutive, so a consumer that sees a gap (or is told :class:`StreamLost`)
refills it from the database.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from common.conversation import shard_of
from common.errors import Bug, InvalidArgument, Unavailable

#: A conversation key as built by ``common.conversation.conversation_key``.
ConversationKey = tuple[int, int, int]

_KEY = struct.Struct(">QQQ")
#: The byte form of an entry shared by the Redis and JetStream backends:
#: partition, the three conversation ints, msg id, then the payload.
_HEADER = struct.Struct(">IQQQQ")


def partition_of(conversation: ConversationKey, partitions: int) -> int:
    """The partition of a conversation: :func:`common.conversation.shard_of`,
    the one stable shard function the cluster uses everywhere (db_proxies,
    workers, route servers), here on a validated key.

    Never Python's ``hash()``: it is salted per process. This function is part
    of the cluster's contract (every node must agree), so it must not change.
    """
    if partitions < 1:
        raise InvalidArgument(f"partitions must be >= 1, not {partitions}")
    try:
        packed = _KEY.pack(*conversation)
    except struct.error as exc:
        raise InvalidArgument(f"bad conversation key {conversation!r}: {exc}") from None
    del packed  # packing was the check: three ints, each an unsigned 64-bit one
    return shard_of(tuple(conversation), partitions)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message, as appended after its commit."""

    partition: int
    conversation: ConversationKey
    #: The message id, consecutive per conversation (how a gap is detected).
    msg_id: int
    #: Opaque to the log (the serialized message the consumers need).
    payload: bytes

    @classmethod
    def of(cls, conversation: ConversationKey, msg_id: int, payload: bytes, partitions: int) -> Entry:
        """An entry in the partition its conversation hashes to."""
        return cls(partition_of(conversation, partitions), conversation, msg_id, payload)


@dataclass(frozen=True, slots=True)
class Delivery:
    """An entry handed to one consumer of a group, to be acknowledged."""

    entry: Entry
    #: The backend's handle for this entry, opaque to callers: memory
    #: ``"<partition>-<offset>"``, Redis the stream entry id, JetStream the
    #: message's ack subject. Only valid for the group it was delivered to.
    delivery_id: str
    #: How many times the entry was handed out in this group (1 on first delivery).
    deliveries: int


class StreamLost(Unavailable):
    """The backend lost a partition's entries (Redis flushed, key deleted).

    The group was recreated; the caller must refill what it missed from the
    database (by msg id gaps) and consume again.
    """

    def __init__(self, partitions: Sequence[int]) -> None:
        super().__init__(f"delivery log partitions lost: {sorted(partitions)}")
        self.partitions = tuple(sorted(partitions))


class DeliveryLog(ABC):
    """A durable, partitioned log with consumer groups and acknowledgements.

    Groups are created on first use and start at the oldest retained entry.
    """

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise InvalidArgument(f"partitions must be >= 1, not {partitions}")
        self.partitions = partitions

    def check(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if not 0 <= entry.partition < self.partitions:
                raise InvalidArgument(f"partition {entry.partition} out of range 0..{self.partitions - 1}")

    def check_partitions(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            if not 0 <= p < self.partitions:
                raise InvalidArgument(f"partition {p} out of range 0..{self.partitions - 1}")

    @abstractmethod
    async def append(self, entries: Sequence[Entry]) -> None:
        """Append a batch; durable (as far as the engine is) when it returns.

        Raises :class:`~common.errors.Overloaded` if a bound refuses it (the
        whole batch on memory; on JetStream the entries before the refused one
        were stored), :class:`~common.errors.Unavailable` if the engine is down.
        """

    @abstractmethod
    async def consume(
        self, group: str, consumer: str, partitions: Sequence[int], max_entries: int, block_s: float
    ) -> list[Delivery]:
        """New entries of ``partitions`` for ``consumer``, in order per partition.

        At most ``max_entries`` per partition (Redis's COUNT and a JetStream
        fetch are per stream/consumer; all that is fetched is handed out, since
        it is pending once fetched).

        Waits up to ``block_s`` (0: not at all) for at least one. Each returned
        entry is pending for ``consumer`` until acknowledged. Raises
        :class:`StreamLost` when the engine lost a partition (the group is
        recreated first, so the next call goes on).
        """

    @abstractmethod
    async def ack(self, group: str, deliveries: Sequence[Delivery]) -> None:
        """Done with these: they will not be delivered to this group again."""

    @abstractmethod
    async def claim_stale(
        self, group: str, consumer: str, idle_s: float, max_entries: int, partitions: Sequence[int] = ()
    ) -> list[Delivery]:
        """Take over entries another consumer has held unacknowledged for ``idle_s``.

        ``partitions`` empty means all. JetStream redelivers by its ack wait
        instead: there this returns ``[]`` and the entries come back from
        :meth:`consume`.
        """

    async def give_back(self, group: str, deliveries: Sequence[Delivery]) -> None:
        """Not done with these, and not going to be (a consumer stopping, a lease lost).

        Where the engine can, they are handed out again at once (JetStream:
        a NAK); elsewhere a successor takes them with :meth:`claim_stale`, so
        this does nothing.
        """
        del group, deliveries

    @abstractmethod
    async def trim(self, max_entries: int) -> None:
        """Keep at most the newest ``max_entries`` of every partition (retention)."""

    @abstractmethod
    async def pending(self, group: str, partition: int) -> int:
        """How many of the partition's entries are delivered to the group but not acknowledged."""

    @abstractmethod
    async def length(self, partition: int) -> int:
        """How many entries the partition retains (metrics, tests)."""

    # -- partition ownership -------------------------------------------------
    # One consumer pushes a partition at a time, so a conversation's pushes
    # leave in order; a lease that is not renewed lapses after ``ttl_s`` and
    # another consumer takes the partition over (its pending entries with
    # ``claim_stale(idle_s=0, partitions=[p])``). Kafka's consumer groups do
    # this natively (partition assignment); Redis and JetStream need a lease.

    @abstractmethod
    async def hold(self, partition: int, owner: str, ttl_s: float) -> bool:
        """Take or renew the lease on ``partition`` for ``ttl_s`` seconds.

        True if ``owner`` holds it on return; False if someone else does.
        """

    @abstractmethod
    async def release(self, partition: int, owner: str) -> None:
        """Give up the lease, if ``owner`` holds it (a clean stop)."""

    @abstractmethod
    async def holders(self) -> dict[int, str]:
        """Current lease holders by partition (unheld partitions are absent)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the log's content stays in the engine."""


def encode_entry(entry: Entry) -> bytes:
    """The byte form stored by Redis and JetStream (see :data:`_HEADER`)."""
    return _HEADER.pack(entry.partition, *entry.conversation, entry.msg_id) + entry.payload


def decode_entry(data: bytes) -> Entry:
    """The inverse of :func:`encode_entry`; raises :class:`~common.errors.Bug` on garbage."""
    if len(data) < _HEADER.size:
        raise Bug(f"delivery log entry of {len(data)} bytes is shorter than its header")
    partition, a, b, c, msg_id = _HEADER.unpack_from(data)
    return Entry(partition, (a, b, c), msg_id, bytes(data[_HEADER.size :]))
