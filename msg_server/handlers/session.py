"""Service 0x01: login, logout, device token, kicking one's desktop, push shield."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.codec import Frame
from common.commands import Cmd
from common.metrics import ERRORS, LOGINS
from common.pb import base_pb2, internal_pb2, login_pb2
from msg_server.handlers.base import UPSTREAM_ERRORS, Handler, forward_to_db, now

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway


async def login(gw: Gateway, conn: ClientConnection, frame: Frame, req: login_pb2.IMLoginReq) -> None:
    def refuse(code: int, text: str) -> None:
        LOGINS.labels("refused" if code == base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED else "error").inc()
        res = login_pb2.IMLoginRes(server_time=now(), result_code=code, result_string=text)
        conn.send(Cmd.LOGIN_RES, res, frame.seq_num)
        conn.close()  # TeamTalk's clients expect the connection to end after a refusal

    if gw.logged_in >= gw.config.max_connections:
        refuse(base_pb2.REFUSE_REASON_MSG_SERVER_FULL, "this server is full")
        return
    if req.client_type not in base_pb2.ClientType.values():
        refuse(base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED, "unknown client type")
        return
    db_req = internal_pb2.DbLoginReq(user_name=req.user_name, password_md5=req.password, peer=conn.peer)
    try:
        _, res = await gw.db_request(req.user_name, Cmd.DB_LOGIN_REQ, db_req)
    except UPSTREAM_ERRORS as exc:
        ERRORS.labels("upstream").inc()
        conn.log.warning("login of %r failed upstream: %s", req.user_name, exc)
        refuse(base_pb2.REFUSE_REASON_NO_DB_SERVER, "login service unavailable; try again")
        return
    assert isinstance(res, internal_pb2.DbLoginRes)
    if conn.closing:
        return  # the client left while we checked
    if res.result_code != base_pb2.REFUSE_REASON_NONE:
        conn.log.info("login refused for %r", req.user_name)
        refuse(res.result_code, res.result_string)
        return
    status = req.online_status if req.online_status in base_pb2.UserStatType.values() else 1
    if status == base_pb2.USER_STATUS_OFFLINE:
        status = base_pb2.USER_STATUS_ONLINE  # logging in "offline" would make no sense to peers
    conn.send(
        Cmd.LOGIN_RES,
        login_pb2.IMLoginRes(
            server_time=now(),
            result_code=base_pb2.REFUSE_REASON_NONE,
            online_status=status,
            user_info=res.user_info,
        ),
        frame.seq_num,
    )
    LOGINS.labels("ok").inc()
    conn.became_logged_in(res.user_info.user_id, req.client_type, status)
    conn.log.info("logged in as %r (client type 0x%02x)", req.user_name, req.client_type)


async def logout(gw: Gateway, conn: ClientConnection, frame: Frame, req: login_pb2.IMLogoutReq) -> None:
    conn.send(Cmd.LOGOUT_RES, login_pb2.IMLogoutRsp(result_code=0), frame.seq_num)
    gw.detach(conn)
    conn.close()


async def kick_pc_client(
    gw: Gateway, conn: ClientConnection, frame: Frame, req: login_pb2.IMKickPCClientReq
) -> None:
    """A phone ends the same user's desktop session(s), on whichever gateway."""
    if not conn.is_mobile:
        result = 1  # TeamTalk allows this from mobile clients only
    else:
        result = (
            0
            if gw.to_route(Cmd.ROUTE_KICK_DESKTOP, internal_pb2.RouteKickDesktop(user_id=conn.user_id))
            else 1
        )
    conn.send(
        Cmd.KICK_PC_CLIENT_RES,
        login_pb2.IMKickPCClientRsp(user_id=conn.user_id, result_code=result),
        frame.seq_num,
    )


def _own_client_type(conn: ClientConnection, req: login_pb2.IMDeviceTokenReq) -> None:
    # A token belongs to the device that sent it, whatever the client claims.
    req.client_type = conn.client_type


COMMANDS: dict[int, Handler] = {
    Cmd.LOGIN_REQ: login,
    Cmd.LOGOUT_REQ: logout,
    Cmd.KICK_PC_CLIENT_REQ: kick_pc_client,
    Cmd.DEVICE_TOKEN_REQ: forward_to_db(Cmd.DEVICE_TOKEN_RES, prepare=_own_client_type),
    Cmd.PUSH_SHIELD_REQ: forward_to_db(Cmd.PUSH_SHIELD_RES),
    Cmd.QUERY_PUSH_SHIELD_REQ: forward_to_db(Cmd.QUERY_PUSH_SHIELD_RES),
}
