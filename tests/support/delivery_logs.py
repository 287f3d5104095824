"""Delivery logs of their own for test clusters, deleted afterwards.

A cluster's servers open the log by URL; the names in it (Redis key prefix,
JetStream stream and subjects) are random, so clusters never share entries
or leases, and the log is dropped when the cluster is done with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator

from common.delivery import delete_delivery_log

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("IMCLUSTER_TEST_NATS", "nats://127.0.0.1:4222")


def delivery_log_url(backend: str) -> str:
    """A fresh log's URL on ``backend`` (memory, redis or nats); nothing is created yet."""
    tag = secrets.token_hex(4)
    if backend == "memory":
        return "memory://"
    if backend == "redis":
        return f"{REDIS_URL}?prefix=imtest:cluster:{tag}"
    if backend == "nats":
        # ack_wait: how soon JetStream hands a dead consumer's entries to another.
        names = f"stream=IMTEST_CLUSTER_{tag.upper()}&subject_prefix=imtest.cluster.{tag}"
        return f"{NATS_URL}?{names}&ack_wait=5"
    raise ValueError(f"unknown delivery log backend {backend!r}")


@contextlib.contextmanager
def fresh_delivery_log_url(backend: str) -> Iterator[str]:
    """The URL of a log of its own on ``backend``, deleted on exit."""
    url = delivery_log_url(backend)
    try:
        yield url
    finally:
        if backend != "memory":
            asyncio.run(delete_delivery_log(url))
