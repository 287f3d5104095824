"""A db_proxy's metrics (see common.metrics for the shared ones)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from common.metrics import latency_histogram

QUEUE_DEPTH = Gauge("imcluster_db_queue_depth", "Jobs waiting in each ordered message worker.", ["worker"])
COMMITTED = Counter("imcluster_db_messages_committed", "Messages stored (duplicates not counted).")
DUPLICATES = Counter(
    "imcluster_db_messages_duplicate", "Resends recognised and answered with the original id."
)
BATCH_SIZE = Histogram(
    "imcluster_db_batch_size", "Messages per commit (group commit).", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
COMMIT_SECONDS = latency_histogram("imcluster_db_commit_seconds", "Time of one message transaction.")
PUSHES_DROPPED = Counter(
    "imcluster_db_pushes_dropped",
    "Stored messages whose push found no route server and no room in the backlog waiting for one.",
)
PUSH_BACKLOG = Gauge("imcluster_db_push_backlog", "Pushes waiting for a route server link (bounded).")


def bind(queues: Sequence[asyncio.Queue[Any]]) -> None:
    for index, queue in enumerate(queues):
        QUEUE_DEPTH.labels(str(index)).set_function(partial(queue.qsize))
