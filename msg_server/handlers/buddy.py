"""Service 0x02: directory, recent sessions, presence, profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.commands import Cmd, Rpcs
from common.errors import Unavailable
from common.pb import base_pb2, buddy_pb2, internal_pb2
from common.throttle import Throttle
from msg_server.handlers.base import (
    LOG_INTERVAL,
    ClientError,
    deliver,
    forward_to_db,
    forward_with_origin,
    session,
    text,
)
from msg_server.handlers.table import Client, ClientCommands

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

MAX_STATUS_QUERY = 20_000  # ids in one users-status request
_ROUTE_DOWN_LOG = Throttle(LOG_INTERVAL)
# Storage's limits (db_proxy.storage.schema USER_TEXT_LIMITS); a test keeps them equal.
AVATAR_LIMIT = 255
SIGN_INFO_LIMIT = 255


async def users_status(
    gw: Gateway, conn: ClientConnection, req: buddy_pb2.IMUsersStatReq
) -> buddy_pb2.IMUsersStatRsp:
    """Live presence from the route servers; the client follows these users from now on."""
    user_ids = list(dict.fromkeys(req.user_id_list))[:MAX_STATUS_QUERY]
    gw.watch(conn, user_ids)
    try:
        res = await gw.route_call(Rpcs.ROUTE_USERS_STAT, internal_pb2.RouteUsersStatReq(user_ids=user_ids))
        stats = list(res.stats)
        # What we tell the client is the baseline later changes are measured
        # against: a quick online-offline flap coalesced by the route server
        # must still reach a client that was told "online" in between.
        gw.remember_status(stats)
    except Unavailable as exc:
        # Without a route server we still know our own users.
        if _ROUTE_DOWN_LOG.ready():
            conn.log.warning(
                "users status from route failed (%s); answering from this gateway%s",
                exc,
                _ROUTE_DOWN_LOG.more(),
            )
        stats = [
            base_pb2.UserStat(
                user_id=u,
                status=base_pb2.USER_STATUS_ONLINE if u in gw.sessions else base_pb2.USER_STATUS_OFFLINE,
            )
            for u in user_ids
        ]
    return buddy_pb2.IMUsersStatRsp(user_id=conn.user_id, user_stat_list=stats, attach_data=req.attach_data)


def _session_removed(
    gw: Gateway, conn: ClientConnection, req: buddy_pb2.IMRemoveSessionReq, res: buddy_pb2.IMRemoveSessionRsp
) -> None:
    if res.result_code == 0:
        notify = buddy_pb2.IMRemoveSessionNotify(
            user_id=conn.user_id, session_type=req.session_type, session_id=req.session_id
        )
        deliver(gw, conn, [conn.user_id], Cmd.REMOVE_SESSION_NOTIFY, notify)


def _check_removal(req: buddy_pb2.IMRemoveSessionReq) -> None:
    session(req.session_type, req.session_id)


def _check_avatar(req: buddy_pb2.IMChangeAvatarReq) -> None:
    text(req.avatar_url, "avatar url", AVATAR_LIMIT)


def _check_sign_info(req: buddy_pb2.IMChangeSignInfoReq) -> None:
    text(req.sign_info, "sign info", SIGN_INFO_LIMIT)


# -- what a refused request is answered with ------------------------------------------
# Replies without a result code are empty and echo the request, so the client
# does not wait; it asks again when it next syncs.


def _recent_refused(
    conn: ClientConnection, req: buddy_pb2.IMRecentContactSessionReq, err: ClientError
) -> buddy_pb2.IMRecentContactSessionRsp:
    return buddy_pb2.IMRecentContactSessionRsp(user_id=conn.user_id, attach_data=req.attach_data)


def _users_info_refused(
    conn: ClientConnection, req: buddy_pb2.IMUsersInfoReq, err: ClientError
) -> buddy_pb2.IMUsersInfoRsp:
    return buddy_pb2.IMUsersInfoRsp(user_id=conn.user_id, attach_data=req.attach_data)


def _removal_refused(
    conn: ClientConnection, req: buddy_pb2.IMRemoveSessionReq, err: ClientError
) -> buddy_pb2.IMRemoveSessionRsp:
    return buddy_pb2.IMRemoveSessionRsp(
        user_id=conn.user_id,
        result_code=err.result_code,
        session_type=req.session_type,
        session_id=req.session_id,
        attach_data=req.attach_data,
    )


def _all_users_refused(
    conn: ClientConnection, req: buddy_pb2.IMAllUserReq, err: ClientError
) -> buddy_pb2.IMAllUserRsp:
    # The client's own sync point back: nothing newer, so it asks again from there.
    return buddy_pb2.IMAllUserRsp(
        user_id=conn.user_id, latest_update_time=req.latest_update_time, attach_data=req.attach_data
    )


def _status_refused(
    conn: ClientConnection, req: buddy_pb2.IMUsersStatReq, err: ClientError
) -> buddy_pb2.IMUsersStatRsp:
    return buddy_pb2.IMUsersStatRsp(user_id=conn.user_id, attach_data=req.attach_data)


def _avatar_refused(
    conn: ClientConnection, req: buddy_pb2.IMChangeAvatarReq, err: ClientError
) -> buddy_pb2.IMChangeAvatarRsp:
    return buddy_pb2.IMChangeAvatarRsp(
        user_id=conn.user_id, result_code=err.result_code, attach_data=req.attach_data
    )


def _departments_refused(
    conn: ClientConnection, req: buddy_pb2.IMDepartmentReq, err: ClientError
) -> buddy_pb2.IMDepartmentRsp:
    return buddy_pb2.IMDepartmentRsp(
        user_id=conn.user_id, latest_update_time=req.latest_update_time, attach_data=req.attach_data
    )


def _sign_info_refused(
    conn: ClientConnection, req: buddy_pb2.IMChangeSignInfoReq, err: ClientError
) -> buddy_pb2.IMChangeSignInfoRsp:
    return buddy_pb2.IMChangeSignInfoRsp(
        user_id=conn.user_id, result_code=err.result_code, attach_data=req.attach_data
    )


COMMANDS = (
    ClientCommands()
    .request(Client.RECENT_SESSION, forward_to_db(Rpcs.RECENT_SESSION), _recent_refused)
    .request(Client.USERS_INFO, forward_to_db(Rpcs.USERS_INFO), _users_info_refused)
    .request(
        Client.REMOVE_SESSION,
        forward_to_db(Rpcs.REMOVE_SESSION, check=_check_removal, after=_session_removed),
        _removal_refused,
    )
    .request(Client.ALL_USER, forward_to_db(Rpcs.ALL_USER), _all_users_refused)
    .request(Client.USERS_STAT, users_status, _status_refused)
    .request(
        Client.CHANGE_AVATAR,
        forward_with_origin(Rpcs.DB_CHANGE_AVATAR, internal_pb2.DbChangeAvatarReq, check=_check_avatar),
        _avatar_refused,
    )
    .request(Client.DEPARTMENT, forward_to_db(Rpcs.DEPARTMENT), _departments_refused)
    .request(
        Client.CHANGE_SIGN_INFO,
        forward_with_origin(
            Rpcs.DB_CHANGE_SIGN_INFO, internal_pb2.DbChangeSignInfoReq, check=_check_sign_info
        ),
        _sign_info_refused,
    )
)
