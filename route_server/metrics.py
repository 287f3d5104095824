"""A route server's metrics (see common.metrics for the shared ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from route_server.server import RouteServer

ONLINE_USERS = Gauge("imcluster_route_online_users", "Users with at least one session, cluster-wide.")
GATEWAYS = Gauge("imcluster_route_gateways", "Gateways linked to this route server.")
RELAYED = Counter("imcluster_route_relayed", "RouteDeliver frames forwarded to gateways.")
KICKS = Counter("imcluster_route_kicks", "Sessions kicked (newer login, mobile kick, admin).")
PUSHES_DROPPED = Counter(
    "imcluster_route_pushes_dropped",
    "Pushes (per recipient gateway) not forwarded, by reason: no_gateway_link (the gateway that "
    "holds the session is not linked here), send_failed (its link refused the frame).",
    ["reason"],
)
STATUS_CHANGES = Counter("imcluster_route_status_changes", "User presence changes published to gateways.")


def bind(server: RouteServer) -> None:
    ONLINE_USERS.set_function(lambda: server.table.online_users)
    GATEWAYS.set_function(lambda: len(server.gateway_links))
