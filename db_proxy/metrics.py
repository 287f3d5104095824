"""A db_proxy's metrics (see common.metrics for the shared ones)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from common.metrics import latency_histogram
from db_proxy.fair_queue import CONVERSATION_FULL, EXPECTED_WAIT, WORKER_FULL

QUEUE_DEPTH = Gauge("imcluster_db_queue_depth", "Jobs waiting in each ordered message worker.", ["worker"])
QUEUE_EXPECTED_WAIT = Gauge(
    "imcluster_db_queue_expected_wait_seconds",
    "Seconds a job queued now would wait in each message worker, at its recent commit pace "
    "(admission refuses past db_proxy.save_max_wait).",
    ["worker"],
)
QUEUE_TIMEOUT = "queue_timeout"
REFUSAL_REASONS = (CONVERSATION_FULL, WORKER_FULL, EXPECTED_WAIT, QUEUE_TIMEOUT)
JOBS_REFUSED = Counter(
    "imcluster_db_jobs_refused",
    "Message-worker jobs (messages, read receipts) refused 'overloaded', by reason: conversation_full "
    "(that conversation holds its share of its worker's queue: a flood), worker_full (the worker's "
    "queue is full in jobs or bytes), expected_wait (the jobs ahead would take longer than "
    "save_max_wait to commit at the worker's recent pace: overload, refused at once), queue_timeout "
    "(admitted, then waited save_max_wait in the queue: the pace was misjudged or storage stalled).",
    ["reason"],
)
COMMITTED = Counter("imcluster_db_messages_committed", "Messages stored (duplicates not counted).")
DUPLICATES = Counter(
    "imcluster_db_messages_duplicate", "Resends recognised and answered with the original id."
)
BATCH_SIZE = Histogram(
    "imcluster_db_batch_size", "Messages per commit (group commit).", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
COMMIT_SECONDS = latency_histogram("imcluster_db_commit_seconds", "Time of one message transaction.")
NOTICES_DROPPED = Counter(
    "imcluster_db_notices_dropped",
    "Non-message notices (group and profile changes, invalidations) not sent: no route server "
    "linked. They are not stored.",
)

# The delivery path (issue 8): commit -> delivery log -> PushDispatcher -> route server.
PUSH_DELIVERED = Counter(
    "imcluster_push_delivered", "Delivery log entries pushed: every recipient's route server answered."
)
PUSH_REDELIVERED = Counter(
    "imcluster_push_redelivered",
    "Entries pushed again after a takeover or a redelivery (the log handed them out more than once).",
)
PUSH_RETRIES = Counter(
    "imcluster_push_retries",
    "Pushes tried again: to the users a route server named, or after no route answered.",
)
PUSH_DROPPED = Counter(
    "imcluster_push_dropped",
    "Pushes given up, per reason: gave_up (push_give_up passed; counted per recipient), log_full "
    "(the append backlog was full; per message), refused (a route server refused the push as invalid).",
    ["reason"],
)
PUSH_LATENCY = latency_histogram(
    "imcluster_push_latency_seconds", "From a message's commit to the route server's answer to its push."
)
APPEND_FAILURES = Counter(
    "imcluster_delivery_log_append_failures",
    "Appends to the delivery log that failed (the entries wait in the bounded append backlog).",
)
APPEND_BACKLOG = Gauge(
    "imcluster_delivery_log_append_backlog", "Entries waiting to be appended to the delivery log (bounded)."
)
STREAMS_LOST = Counter(
    "imcluster_delivery_log_streams_lost",
    "Times the delivery log lost a partition's entries (Redis flushed): gateways refill from storage.",
)
PARTITIONS_HELD = Gauge("imcluster_delivery_partitions_held", "Delivery log partitions this db_proxy pushes.")

LOGIN_REFUSED = Counter(
    "imcluster_db_login_throttled",
    "Logins refused at once by the login throttle, per reason: delayed (this address failed too often "
    "for this user), user_delayed (the user failed too often from all addresses; known-good ones stay "
    "free), source_locked (the address failed too often for any users).",
    ["reason"],
)
THROTTLE_MEMORY = Gauge(
    "imcluster_db_login_throttle_bytes",
    "Bytes taken by the in-process login failure counters (bounded by login_throttle_memory).",
)
LOGIN_CACHE = Counter(
    "imcluster_db_login_cache",
    "Verified-password cache lookups of users who may log in: hit (the password matched a "
    "remembered check; no scrypt), miss (scrypt runs).",
    ["outcome"],
)
for _reason in ("source_locked", "delayed", "user_delayed"):
    LOGIN_REFUSED.labels(_reason)
for _outcome in ("hit", "miss"):
    LOGIN_CACHE.labels(_outcome)

for _reason in ("gave_up", "log_full", "refused"):
    PUSH_DROPPED.labels(_reason)  # exported at 0 from the start
for _reason in REFUSAL_REASONS:
    JOBS_REFUSED.labels(_reason)


class Sized(Protocol):
    def qsize(self) -> int: ...
    def expected_wait(self, now: float) -> float: ...


def bind(queues: Sequence[Sized]) -> None:
    for index, queue in enumerate(queues):
        QUEUE_DEPTH.labels(str(index)).set_function(partial(queue.qsize))
        QUEUE_EXPECTED_WAIT.labels(str(index)).set_function(partial(_expected_wait, queue))


def _expected_wait(queue: Sized) -> float:
    # The event loop's clock is time.monotonic, as the workers' timestamps are.
    return queue.expected_wait(time.monotonic())
