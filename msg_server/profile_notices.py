"""Profile notices (avatar, sign info): only to the connections that see the user.

A change goes from db_proxy, which made it (a client's request, with the
connection it came from, or an admin's: db_proxy.notices), to a route server, which coalesces
the changes over status_batch_interval, the last per (user, kind) winning,
and sends every gateway one batch per interval (route_server.notices). Here
each change goes to the connections that asked for its user's status
(IMUsersStatReq: the presence watchers, Gateway.watchers and watch_all) and
to the user's own other connections (the one that made the change has its
reply). A TeamTalk client asks for the status of the contacts it shows, so
those are the users who see it; nobody else hears of the change, and reads
it with the user's info when it next needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter

from common.pb import internal_pb2
from msg_server.metrics import PUSHED

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

NOTICES_DROPPED = Counter(
    "imcluster_gateway_profile_notices_dropped",
    "Profile notices (avatar, sign info) not passed on from this gateway, by reason: connection_gone "
    "(a watching connection was closing, or cut off as a slow reader).",
    ["reason"],
)
for _reason in ("connection_gone",):
    NOTICES_DROPPED.labels(_reason)


def publish_profile(gw: Gateway, batch: internal_pb2.RouteProfileBatch) -> None:
    """A route server's batch: each change to this gateway's connections that see its user."""
    for change in batch.changes:
        skip = (
            change.origin.conn_id
            if change.HasField("origin") and change.origin.gateway_id == gw.node_id
            else 0
        )
        targets: set[ClientConnection] = gw.watchers.get(change.user_id, set()) | gw.watch_all
        targets = targets.union(gw.sessions.get(change.user_id, ()))
        for conn in targets:
            if conn.conn_id == skip:
                continue
            if conn.send_raw(change.command_id, change.body):
                PUSHED.inc()
            else:
                NOTICES_DROPPED.labels("connection_gone").inc()
