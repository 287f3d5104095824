"""The one place db_proxy turns a service's notices into frames for the route servers.

* :class:`GroupNotice` -> RouteDeliver of IMGroupChangeMemberNotify, with the
  origin of the request, so only the connection that asked is skipped (it
  has its reply); an admin's origin ("admin") skips nobody.
* :class:`ProfileNotice` -> RouteProfileChange, batched by the route server
  to the user's watchers and its other connections.
* :class:`UsersGone` -> DbInvalidate, relayed by the route server to every
  other db_proxy (which forget those users).

Nothing here is stored: a notice that finds no route server linked is
counted and lost, as a client's notice always was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from google.protobuf.message import Message

from common.commands import Cmd
from common.conversation import ShardKey
from common.pb import group_pb2, internal_pb2
from db_proxy.services.outcome import GroupNotice, Notice, ProfileNotice, UsersGone

# Where an admin's change comes from, for the gateways: no client connection
# sent it, so every connection of the recipients gets it.
ADMIN_ORIGIN = internal_pb2.Origin(gateway_id="admin", conn_id=0)

#: Sends one frame through a route server (``RouteLinks.send``): command, message, shard key.
Send = Callable[[int, Message, ShardKey], bool]


def frame_of(notice: Notice, origin: internal_pb2.Origin, node_id: str) -> tuple[int, Message, ShardKey]:
    """The route server frame for ``notice``: its command, message and shard key."""
    if isinstance(notice, GroupNotice):
        notify = group_pb2.IMGroupChangeMemberNotify(
            user_id=notice.user_id,
            change_type=notice.change_type,
            group_id=notice.group_id,
            cur_user_id_list=notice.current,
            chg_user_id_list=notice.changed,
        )
        deliver = internal_pb2.RouteDeliver(
            user_ids=notice.recipients,
            command_id=Cmd.GROUP_CHANGE_MEMBER_NOTIFY,
            body=notify.SerializeToString(),
            origin=origin,
        )
        return Cmd.ROUTE_DELIVER, deliver, notice.group_id
    if isinstance(notice, ProfileNotice):
        change = internal_pb2.RouteProfileChange(
            user_id=notice.user_id, command_id=notice.command_id, body=notice.body, origin=origin
        )
        return Cmd.ROUTE_PROFILE_CHANGE, change, notice.user_id
    gone = internal_pb2.DbInvalidate(user_ids=notice.user_ids, from_node=node_id)
    return Cmd.DB_INVALIDATE, gone, notice.user_ids[0] if notice.user_ids else 0


class Notices:
    def __init__(self, send: Send, node_id: str) -> None:
        self.send = send
        self.node_id = node_id

    def publish(self, notices: Iterable[Notice], origin: internal_pb2.Origin) -> None:
        for notice in notices:
            if isinstance(notice, GroupNotice | UsersGone) and not _addressed(notice):
                continue
            self.send(*frame_of(notice, origin, self.node_id))


def _addressed(notice: GroupNotice | UsersGone) -> bool:
    return bool(notice.recipients if isinstance(notice, GroupNotice) else notice.user_ids)
