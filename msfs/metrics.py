"""msfs's metrics (see common.metrics for the shared ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from common.metrics import latency_histogram
from msfs.refusals import REASONS

UPLOADS = Counter("imcluster_msfs_uploads", "Uploads msfs stored.")
UPLOAD_BYTES = Counter("imcluster_msfs_upload_bytes", "Bytes of the uploads msfs stored.")
REFUSALS = Counter(
    "imcluster_msfs_refusals",
    "Uploads msfs refused, by reason: " + ", ".join(r.name for r in REASONS) + " (docs/msfs.md).",
    ["reason"],
)
DOWNLOADS = Counter(
    "imcluster_msfs_downloads", "GETs of stored files, by result (ok, not_found, error).", ["result"]
)
ACTIVE = Gauge("imcluster_msfs_uploads_active", "Uploads streaming now.")
UPLOAD_SECONDS = latency_histogram(
    "imcluster_msfs_upload_seconds", "Time from an upload's request to its stored reply."
)

for _reason in REASONS:
    REFUSALS.labels(_reason.name)  # every series exists from the start, at 0
for _result in ("ok", "not_found", "error"):
    DOWNLOADS.labels(_result)
