"""The durable delivery log (issue 8): see ``docs/delivery-log.md``.

:func:`open_delivery_log` picks the backend from a URL:

* ``memory://?partitions=16&max_entries=100000&max_bytes=67108864``
* ``redis://host:6379/0?partitions=16&prefix=imcluster:delivery&max_entries=100000&exact_trim=0``
* ``nats://host:4222?partitions=16&stream=IMCLUSTER_DELIVERY&subject_prefix=imcluster.delivery``
  ``&max_entries=100000&max_bytes=67108864&ack_wait=30`` (max_bytes per partition: the stream
  reserves partitions times max_bytes of JetStream storage)

Every node of a cluster must use the same ``partitions``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

from common.delivery.log import (
    ConversationKey,
    Delivery,
    DeliveryLog,
    Entry,
    StreamLost,
    partition_of,
)
from common.errors import InvalidArgument

__all__ = [
    "DEFAULT_PARTITIONS",
    "ConversationKey",
    "Delivery",
    "DeliveryLog",
    "Entry",
    "StreamLost",
    "delete_delivery_log",
    "open_delivery_log",
    "partition_of",
]

DEFAULT_PARTITIONS = 16

_OPTIONS = {
    "memory": {"partitions", "max_entries", "max_bytes"},
    "redis": {"partitions", "prefix", "max_entries", "exact_trim"},
    "rediss": {"partitions", "prefix", "max_entries", "exact_trim"},
    "nats": {"partitions", "stream", "subject_prefix", "max_entries", "max_bytes", "ack_wait"},
}


def _int(options: dict[str, str], name: str, default: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"delivery log option {name}={raw!r} is not an integer") from None


async def open_delivery_log(url: str) -> DeliveryLog:
    """The log named by ``url``; raises InvalidArgument for a bad URL or option."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _OPTIONS:
        raise InvalidArgument(f"delivery log URL {url!r}: scheme must be memory, redis, rediss or nats")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - _OPTIONS[scheme]
    if unknown:
        raise InvalidArgument(f"delivery log URL {url!r}: unknown options {sorted(unknown)}")
    partitions = _int(options, "partitions", DEFAULT_PARTITIONS)
    # The engine's own URL, without our options.
    engine_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if scheme == "memory":
        from common.delivery.memory import MemoryDeliveryLog

        return MemoryDeliveryLog(
            partitions,
            max_entries=_int(options, "max_entries", 100_000),
            max_bytes=_int(options, "max_bytes", 64 << 20),
        )
    if scheme in ("redis", "rediss"):
        from common.delivery.redis_streams import RedisStreamsDeliveryLog

        return RedisStreamsDeliveryLog.from_url(
            engine_url,
            partitions,
            prefix=options.get("prefix", "imcluster:delivery"),
            max_entries=_int(options, "max_entries", 100_000),
            exact_trim=options.get("exact_trim", "0") not in ("", "0", "false", "no"),
        )
    from common.delivery.jetstream import JetStreamDeliveryLog

    try:
        ack_wait = float(options.get("ack_wait", "30"))
    except ValueError:
        raise InvalidArgument(
            f"delivery log option ack_wait={options['ack_wait']!r} is not a number"
        ) from None
    return await JetStreamDeliveryLog.connect(
        engine_url,
        partitions,
        stream=options.get("stream", "IMCLUSTER_DELIVERY"),
        subject_prefix=options.get("subject_prefix", "imcluster.delivery"),
        max_entries=_int(options, "max_entries", 100_000),
        max_bytes=_int(options, "max_bytes", 64 << 20),
        ack_wait_s=ack_wait,
    )


async def delete_delivery_log(url: str) -> None:
    """Drop what the log named by ``url`` keeps in its engine: Redis streams and
    leases, a JetStream stream (tests, benchmarks, decommissioning). A
    ``memory://`` log goes with its process: nothing to do."""
    if urlsplit(url).scheme.lower() == "memory":
        return
    log = await open_delivery_log(url)
    try:
        delete = getattr(log, "delete", None)
        if delete is not None:
            await delete()
    finally:
        await log.close()
