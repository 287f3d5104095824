"""Profile notices (avatar, sign info): only to the connections that see the user.

A change goes from the changer's gateway to a route server, which coalesces
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

from google.protobuf.message import Message
from prometheus_client import Counter

from common.commands import Cmd
from common.pb import internal_pb2
from common.throttle import Throttle
from msg_server.metrics import PUSHED

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

NOTICES_DROPPED = Counter(
    "imcluster_gateway_profile_notices_dropped",
    "Profile notices (avatar, sign info) not passed on from this gateway, by reason: no_route_link (a "
    "change made here found no route server linked), connection_gone (a watching connection was "
    "closing, or cut off as a slow reader).",
    ["reason"],
)
for _reason in ("no_route_link", "connection_gone"):
    NOTICES_DROPPED.labels(_reason)
_NO_ROUTE_LOG = Throttle(10.0)


def send_change(gw: Gateway, conn: ClientConnection, command_id: int, notify: Message) -> None:
    """A change made on ``conn``: to a route server, which batches it to every gateway."""
    change = internal_pb2.RouteProfileChange(
        user_id=conn.user_id, command_id=command_id, body=notify.SerializeToString(), origin=conn.origin()
    )
    if not gw.to_route(Cmd.ROUTE_PROFILE_CHANGE, change):
        NOTICES_DROPPED.labels("no_route_link").inc()
        if _NO_ROUTE_LOG.ready():
            conn.log.warning("profile change not announced: no route server linked%s", _NO_ROUTE_LOG.more())


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
