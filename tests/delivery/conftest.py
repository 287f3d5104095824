"""One fixture, ``make_log``, that opens a fresh delivery log on each backend.

Redis and NATS are the real servers (IMCLUSTER_TEST_REDIS, IMCLUSTER_TEST_NATS);
each test gets its own key prefix or stream (random names) and deletes it afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from common.delivery import DeliveryLog, open_delivery_log

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("IMCLUSTER_TEST_NATS", "nats://127.0.0.1:4222")

MakeLog = Callable[..., Awaitable[DeliveryLog]]


def log_url(backend: str, partitions: int, max_entries: int, ack_wait: float) -> str:
    tag = secrets.token_hex(4)
    if backend == "memory":
        return f"memory://?partitions={partitions}&max_entries={max_entries}"
    if backend == "redis":
        return (
            f"{REDIS_URL}?partitions={partitions}&prefix=imtest:dlog:{tag}"
            f"&max_entries={max_entries}&exact_trim=1"
        )
    return (
        f"{NATS_URL}?partitions={partitions}&stream=IMTEST_DLOG_{tag.upper()}&subject_prefix=imtest.dlog.{tag}"
        f"&max_entries={max_entries}&ack_wait={ack_wait}"
    )


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_log(backend: str) -> AsyncIterator[MakeLog]:
    opened: list[Any] = []
    urls: dict[int, str] = {}

    async def make(
        partitions: int = 4,
        max_entries: int = 1000,
        ack_wait: float = 1.0,
        same_as: DeliveryLog | None = None,
    ) -> DeliveryLog:
        """A new log, or with ``same_as`` another client of that log (as another process would be)."""
        if same_as is not None:
            if backend == "memory":
                return same_as  # the in-process log is one process's: its other clients share it
            url = urls[id(same_as)]
        else:
            url = log_url(backend, partitions, max_entries, ack_wait)
        log = await open_delivery_log(url)
        opened.append(log)
        urls[id(log)] = url
        return log

    yield make
    owners: dict[str, Any] = {}  # the first client of each log deletes it, after the others closed
    for log in opened:
        owners.setdefault(urls[id(log)], log)
    for log in opened:
        if owners.get(urls[id(log)]) is not log:
            await log.close()
    for log in owners.values():
        if hasattr(log, "delete"):
            await log.delete()
        await log.close()
