"""The offline push's metrics (docs/offline-push.md lists them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SENT = Counter(
    "imcluster_offline_push_sent",
    "Notifications a provider accepted (a 2xx from the webhook, FCM or APNs), per provider.",
    ["provider"],
)
DROPPED = Counter(
    "imcluster_offline_push_dropped",
    "Notifications not sent, per reason: shielded (the recipient muted push), group_shielded (muted "
    "that group), no_device (no provider serves it), queue_full, too_big, rejected (a provider refused "
    "it: a 4xx, a bad token), expired (retried for retry_for seconds), lookup_failed (its recipients' "
    "devices could not be read), shutdown (queued when db_proxy stopped).",
    ["reason"],
)
RETRIES = Counter(
    "imcluster_offline_push_retries",
    "Sends tried again after a timeout, a 429 or a 5xx, per provider.",
    ["provider"],
)
QUEUE_DEPTH = Gauge(
    "imcluster_offline_push_queue_depth",
    "Notifications waiting, retrying or in flight (queue_size bounds it).",
)
QUEUE_BYTES = Gauge(
    "imcluster_offline_push_queue_bytes", "Estimated bytes of those notifications (queue_bytes bounds it)."
)
STALE_TOKENS = Counter(
    "imcluster_offline_push_stale_tokens", "Device tokens removed because a push service called them invalid."
)
