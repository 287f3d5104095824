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

    async def make(partitions: int = 4, max_entries: int = 1000, ack_wait: float = 1.0) -> DeliveryLog:
        log = await open_delivery_log(log_url(backend, partitions, max_entries, ack_wait))
        opened.append(log)
        return log

    yield make
    for log in opened:
        if hasattr(log, "delete"):
            await log.delete()
        await log.close()
