"""Service 0x01: login, logout, device token, kicking one's desktop, push shield."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.commands import Cmd, Rpcs
from common.conversation import is_mobile
from common.errors import InvalidArgument
from common.metrics import LOGINS
from common.pb import base_pb2, internal_pb2, login_pb2
from msg_server.handlers.base import FAILED, ClientError, forward_to_db, now, text
from msg_server.handlers.table import Client, ClientCommands

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

# Storage's limits (db_proxy.storage.schema), checked here so that a request
# that cannot be stored costs no db_proxy round trip; a test keeps them equal.
USER_NAME_LIMIT = 64
PASSWORD_LIMIT = 255  # TeamTalk sends the md5 hex of the password: 32 characters
DEVICE_TOKEN_LIMIT = 255
LOGINS_OK = LOGINS.labels("ok")  # bound once: the hot path
USER_STATUSES = frozenset(base_pb2.UserStatType.values())
CLIENT_TYPES = frozenset(base_pb2.ClientType.values())


def refusal(conn: ClientConnection, code: base_pb2.ResultType.ValueType, reason: str) -> login_pb2.IMLoginRes:
    """A refused login; TeamTalk's clients expect the connection to end after it."""
    LOGINS.labels("refused" if code == base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED else "error").inc()
    conn.close_after_reply = True
    return login_pb2.IMLoginRes(server_time=now(), result_code=code, result_string=reason)


def login_refused(
    conn: ClientConnection, req: login_pb2.IMLoginReq, err: ClientError
) -> login_pb2.IMLoginRes:
    return refusal(conn, err.login_code, err.text)


async def login(
    gw: Gateway, conn: ClientConnection, req: login_pb2.IMLoginReq
) -> login_pb2.IMLoginRes | None:
    if conn.logged_in:
        raise InvalidArgument("already logged in on this connection")
    if gw.logged_in >= gw.config.max_connections:
        return refusal(conn, base_pb2.REFUSE_REASON_MSG_SERVER_FULL, "this server is full")
    if req.client_type not in CLIENT_TYPES:
        raise InvalidArgument("unknown client type")
    # A name longer than any stored one (a 60 KB one, say) is refused here,
    # as a failed login (login_refused), before it costs db_proxy anything.
    name = text(req.user_name, "user name", USER_NAME_LIMIT)
    password = text(req.password, "password", PASSWORD_LIMIT)
    # The address without the port: db_proxy counts failed logins per address.
    db_req = internal_pb2.DbLoginReq(user_name=name, password_md5=password, peer=conn.source)
    res = await gw.db_call(name, Rpcs.DB_LOGIN, db_req)
    if conn.closing:
        return None  # the client left while we checked
    if res.result_code != base_pb2.REFUSE_REASON_NONE:
        conn.log.debug("login refused for %r", name)  # db_proxy logs the refusal
        return refusal(conn, res.result_code, res.result_string)
    status = req.online_status if req.online_status in USER_STATUSES else base_pb2.USER_STATUS_ONLINE
    if status == base_pb2.USER_STATUS_OFFLINE:
        status = base_pb2.USER_STATUS_ONLINE  # logging in "offline" would make no sense to peers
    LOGINS_OK.inc()
    conn.became_logged_in(res.user_info.user_id, req.client_type, status)
    conn.log.debug("logged in as %r (client type 0x%02x)", name, req.client_type)
    return login_pb2.IMLoginRes(
        server_time=now(),
        result_code=base_pb2.REFUSE_REASON_NONE,
        online_status=status,
        user_info=res.user_info,
    )


async def logout(gw: Gateway, conn: ClientConnection, req: login_pb2.IMLogoutReq) -> login_pb2.IMLogoutRsp:
    gw.detach(conn)
    conn.close_after_reply = True
    return login_pb2.IMLogoutRsp(result_code=0)


def logout_refused(
    conn: ClientConnection, req: login_pb2.IMLogoutReq, err: ClientError
) -> login_pb2.IMLogoutRsp:
    conn.close_after_reply = True  # the client leaves anyway
    return login_pb2.IMLogoutRsp(result_code=err.result_code)


async def kick_pc_client(
    gw: Gateway, conn: ClientConnection, req: login_pb2.IMKickPCClientReq
) -> login_pb2.IMKickPCClientRsp:
    """A phone ends the same user's desktop session(s), on whichever gateway."""
    if not is_mobile(conn.client_type):
        result = FAILED  # TeamTalk allows this from mobile clients only
    else:
        kick = internal_pb2.RouteKickDesktop(user_id=conn.user_id)
        result = 0 if gw.to_route(Cmd.ROUTE_KICK_DESKTOP, kick) else FAILED
    return login_pb2.IMKickPCClientRsp(user_id=conn.user_id, result_code=result)


def kick_refused(
    conn: ClientConnection, req: login_pb2.IMKickPCClientReq, err: ClientError
) -> login_pb2.IMKickPCClientRsp:
    return login_pb2.IMKickPCClientRsp(user_id=conn.user_id, result_code=err.result_code)


def _device_token(req: login_pb2.IMDeviceTokenReq) -> None:
    text(req.device_token, "device token", DEVICE_TOKEN_LIMIT)


def _token_refused(
    conn: ClientConnection, req: login_pb2.IMDeviceTokenReq, err: ClientError
) -> login_pb2.IMDeviceTokenRsp:
    # TeamTalk's reply cannot say "refused": an answer at least, so the client does not wait.
    return login_pb2.IMDeviceTokenRsp(user_id=conn.user_id, attach_data=req.attach_data)


def _shield_refused(
    conn: ClientConnection, req: login_pb2.IMPushShieldReq, err: ClientError
) -> login_pb2.IMPushShieldRsp:
    return login_pb2.IMPushShieldRsp(
        user_id=conn.user_id, result_code=err.result_code, attach_data=req.attach_data
    )


def _query_shield_refused(
    conn: ClientConnection, req: login_pb2.IMQueryPushShieldReq, err: ClientError
) -> login_pb2.IMQueryPushShieldRsp:
    return login_pb2.IMQueryPushShieldRsp(
        user_id=conn.user_id, result_code=err.result_code, attach_data=req.attach_data
    )


async def device_token(
    gw: Gateway, conn: ClientConnection, req: login_pb2.IMDeviceTokenReq
) -> login_pb2.IMDeviceTokenRsp | None:
    # A token belongs to the device that sent it, whatever the client claims.
    req.client_type = conn.client_type
    return await _forward_token(gw, conn, req)


_forward_token = forward_to_db(Rpcs.DEVICE_TOKEN, check=_device_token)

COMMANDS = (
    ClientCommands()
    .request(Client.LOGIN, login, login_refused)
    .request(Client.LOGOUT, logout, logout_refused)
    .request(Client.KICK_PC_CLIENT, kick_pc_client, kick_refused)
    .request(Client.DEVICE_TOKEN, device_token, _token_refused)
    .request(Client.PUSH_SHIELD, forward_to_db(Rpcs.PUSH_SHIELD), _shield_refused)
    .request(Client.QUERY_PUSH_SHIELD, forward_to_db(Rpcs.QUERY_PUSH_SHIELD), _query_shield_refused)
)
