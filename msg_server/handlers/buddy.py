"""Service 0x02: directory, recent sessions, presence, profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.codec import Frame
from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2, internal_pb2
from msg_server.handlers.base import UPSTREAM_ERRORS, Handler, deliver, forward_to_db

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

MAX_STATUS_QUERY = 20_000  # ids in one users-status request


async def users_status(
    gw: Gateway, conn: ClientConnection, frame: Frame, req: buddy_pb2.IMUsersStatReq
) -> None:
    """Live presence from the route servers; the client follows these users from now on."""
    user_ids = list(dict.fromkeys(req.user_id_list))[:MAX_STATUS_QUERY]
    gw.watch(conn, user_ids)
    try:
        _, res = await gw.route_request(
            Cmd.ROUTE_USERS_STAT_REQ, internal_pb2.RouteUsersStatReq(user_ids=user_ids)
        )
        assert isinstance(res, internal_pb2.RouteUsersStatRes)
        stats = list(res.stats)
        # What we tell the client is the baseline later changes are measured
        # against: a quick online-offline flap coalesced by the route server
        # must still reach a client that was told "online" in between.
        gw.remember_status(stats)
    except UPSTREAM_ERRORS as exc:
        # Without a route server we still know our own users.
        conn.log.warning("users status from route failed (%s); answering from this gateway", exc)
        stats = [
            base_pb2.UserStat(
                user_id=u,
                status=base_pb2.USER_STATUS_ONLINE if u in gw.sessions else base_pb2.USER_STATUS_OFFLINE,
            )
            for u in user_ids
        ]
    conn.send(
        Cmd.USERS_STAT_RES,
        buddy_pb2.IMUsersStatRsp(user_id=conn.user_id, user_stat_list=stats, attach_data=req.attach_data),
        frame.seq_num,
    )


def _session_removed(
    gw: Gateway, conn: ClientConnection, req: buddy_pb2.IMRemoveSessionReq, res: buddy_pb2.IMRemoveSessionRsp
) -> None:
    if res.result_code == 0:
        notify = buddy_pb2.IMRemoveSessionNotify(
            user_id=conn.user_id, session_type=req.session_type, session_id=req.session_id
        )
        deliver(gw, conn, [conn.user_id], Cmd.REMOVE_SESSION_NOTIFY, notify)


def _avatar_changed(
    gw: Gateway, conn: ClientConnection, req: buddy_pb2.IMChangeAvatarReq, res: buddy_pb2.IMChangeAvatarRsp
) -> None:
    if res.result_code == 0:
        notify = buddy_pb2.IMAvatarChangedNotify(changed_user_id=conn.user_id, avatar_url=req.avatar_url)
        deliver(gw, conn, [], Cmd.AVATAR_CHANGED_NOTIFY, notify, broadcast=True)


def _sign_changed(
    gw: Gateway,
    conn: ClientConnection,
    req: buddy_pb2.IMChangeSignInfoReq,
    res: buddy_pb2.IMChangeSignInfoRsp,
) -> None:
    if res.result_code == 0:
        notify = buddy_pb2.IMSignInfoChangedNotify(changed_user_id=conn.user_id, sign_info=req.sign_info)
        deliver(gw, conn, [], Cmd.SIGN_INFO_CHANGED_NOTIFY, notify, broadcast=True)


COMMANDS: dict[int, Handler] = {
    Cmd.RECENT_SESSION_REQ: forward_to_db(Cmd.RECENT_SESSION_RES),
    Cmd.USERS_INFO_REQ: forward_to_db(Cmd.USERS_INFO_RES),
    Cmd.REMOVE_SESSION_REQ: forward_to_db(Cmd.REMOVE_SESSION_RES, _session_removed),
    Cmd.ALL_USER_REQ: forward_to_db(Cmd.ALL_USER_RES),
    Cmd.USERS_STAT_REQ: users_status,
    Cmd.CHANGE_AVATAR_REQ: forward_to_db(Cmd.CHANGE_AVATAR_RES, _avatar_changed),
    Cmd.DEPARTMENT_REQ: forward_to_db(Cmd.DEPARTMENT_RES),
    Cmd.CHANGE_SIGN_INFO_REQ: forward_to_db(Cmd.CHANGE_SIGN_INFO_RES, _sign_changed),
}
