"""A route server's metrics (see common.metrics for the shared ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from common.metrics import latency_histogram

if TYPE_CHECKING:
    from route_server.server import RouteServer

ONLINE_USERS = Gauge("imcluster_route_online_users", "Users with at least one session, cluster-wide.")
GATEWAYS = Gauge("imcluster_route_gateways", "Gateways linked to this route server.")
READY = Gauge(
    "imcluster_route_ready", "1 while this route server answers pushes, 0 while settling (see /healthz)."
)
RELAYED = Counter("imcluster_route_relayed", "RouteDeliver frames forwarded to gateways.")
PUSHES_RELAYED = Counter(
    "imcluster_route_pushes_relayed",
    "Stored-message pushes (PUSH_MSG) a gateway confirmed, per recipient user at that gateway.",
)
PUSH_SECONDS = latency_histogram(
    "imcluster_route_push_seconds",
    "Time to handle one PUSH_MSG (or one PUSH_MSGS batch) from db_proxy: fan-out until every gateway "
    "answered or timed out.",
)
PUSH_BATCH = Counter(
    "imcluster_route_push_batches",
    "PUSH_MSGS frames: from db_proxy (received) and to gateways (sent), each many pushes at once.",
    ["direction"],
)
for _direction in ("received", "sent"):
    PUSH_BATCH.labels(_direction)
ORIGIN_SKIPPED = Counter(
    "imcluster_route_origin_skipped",
    "Stored-message pushes not sent back to the sender's own gateway: the connection the message "
    "came from (PushMsg.origin) is the sender's only session there, and it has the message. Not a "
    "drop: the sender's other sessions still get it.",
)
KICKS = Counter(
    "imcluster_route_kicks", "Sessions kicked (newer login, mobile kick, admin, healed partition)."
)
PUSHES_DROPPED = Counter(
    "imcluster_route_pushes_dropped",
    "Recipients (a user, at one gateway where one is known) a push did not reach from here, by reason: "
    "no_session (the user has no session anywhere: it syncs at its next login), no_gateway_link (the "
    "gateway that holds the session is not linked here, or its link dropped during the call), "
    "gateway_timeout (PUSH_MSG to the gateway got no answer within push_timeout), gateway_error (the "
    "gateway refused or asked for a retry), settling (refused: this route server is (re)joining or "
    "awaits a gateway's snapshot), send_failed (a RouteDeliver notice the link refused). PUSH_MSG "
    "recipients dropped for any reason but no_session are handed back to db_proxy to retry.",
    ["reason"],
)
STATUS_CHANGES = Counter("imcluster_route_status_changes", "User presence changes published to gateways.")
NOTICES_RELAYED = Counter(
    "imcluster_route_profile_notices",
    "Profile changes (avatar, sign info) sent to the gateways in a batch, counted once per change.",
)
NOTICES_DROPPED = Counter(
    "imcluster_route_profile_notices_dropped",
    "Profile changes (avatar, sign info) that did not go out from here, by reason: superseded (a "
    "newer change of the same user and kind replaced it within the batch interval: coalesced), "
    "pending_entries / pending_bytes (max_pending_notices / max_pending_notice_bytes reached), "
    "bad_command (not a profile notice), send_failed (per gateway link that refused the batch's "
    "frame, counted per change in it).",
    ["reason"],
)
INVALIDATIONS = Counter(
    "imcluster_route_db_invalidations",
    "Directory invalidations (DB_INVALIDATE) from a db_proxy forwarded to another linked db_proxy, "
    "per receiving db_proxy, by outcome: relayed, send_failed (the link refused the frame).",
    ["outcome"],
)
for _outcome in ("relayed", "send_failed"):
    INVALIDATIONS.labels(_outcome)
NOTICES_PENDING = Gauge(
    "imcluster_route_profile_notices_pending", "Profile changes waiting for the next batch."
)
NOTICE_DROP_REASONS = ("superseded", "pending_entries", "pending_bytes", "bad_command", "send_failed")
for _reason in NOTICE_DROP_REASONS:
    NOTICES_DROPPED.labels(_reason)

DROP_REASONS = (
    "no_session",
    "no_gateway_link",
    "gateway_timeout",
    "gateway_error",
    "settling",
    "send_failed",
)
for _reason in DROP_REASONS:
    PUSHES_DROPPED.labels(_reason)  # every series exists from the start, at 0


def bind(server: RouteServer) -> None:
    ONLINE_USERS.set_function(lambda: server.table.online_users)
    GATEWAYS.set_function(lambda: len(server.gateway_links))
    READY.set_function(lambda: 1.0 if server.ready() else 0.0)
    NOTICES_PENDING.set_function(lambda: server.notices.pending)
