"""Client commands, one coroutine each.

Every handler gets the gateway, the connection, the request frame (its
seq_num is echoed in the reply) and the parsed message. ``user_id`` fields
in requests are overwritten with the logged-in user: a client can act only
as itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from common.codec import Frame
from common.commands import Cmd
from common.conversation import conversation_key, session_type_of
from common.link import LinkDown, RemoteError
from common.pb import base_pb2, internal_pb2, login_pb2, message_pb2

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

log = logging.getLogger("handlers")

Handler = Callable[["Gateway", "ClientConnection", Frame, Any], Awaitable[None]]
UPSTREAM_ERRORS = (LinkDown, RemoteError, TimeoutError)


def now() -> int:
    return int(time.time())


async def login(gw: Gateway, conn: ClientConnection, frame: Frame, req: login_pb2.IMLoginReq) -> None:
    def refuse(code: int, text: str) -> None:
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
    status = (
        req.online_status
        if req.online_status in base_pb2.UserStatType.values()
        else base_pb2.USER_STATUS_ONLINE
    )
    conn.became_logged_in(res.user_info.user_id, req.client_type, status)
    conn.log.info("logged in as %r (client type 0x%02x)", req.user_name, req.client_type)
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


async def logout(gw: Gateway, conn: ClientConnection, frame: Frame, req: login_pb2.IMLogoutReq) -> None:
    conn.send(Cmd.LOGOUT_RES, login_pb2.IMLogoutRsp(result_code=0), frame.seq_num)
    gw.detach(conn)
    conn.close()


async def msg_data(gw: Gateway, conn: ClientConnection, frame: Frame, msg: message_pb2.IMMsgData) -> None:
    session_type = session_type_of(msg.msg_type)
    if session_type is None or msg.to_session_id == 0:
        conn.log.warning("message with msg_type %d to %d refused", msg.msg_type, msg.to_session_id)
        return
    msg.from_user_id = conn.user_id
    msg.create_time = 0  # db_proxy stamps it when the message is stored
    req = internal_pb2.DbSaveMsgReq(msg=msg, session_type=session_type, origin=conn.origin())
    key = conversation_key(session_type, conn.user_id, msg.to_session_id)
    try:
        _, res = await gw.db_request(key, Cmd.DB_SAVE_MSG_REQ, req)
    except UPSTREAM_ERRORS as exc:
        # No ack: the client keeps the message as unsent and may resend it;
        # a resend with the same client msg id is deduplicated.
        conn.log.warning("message to %d not stored: %s", msg.to_session_id, exc)
        return
    assert isinstance(res, internal_pb2.DbSaveMsgRes)
    ack = message_pb2.IMMsgDataAck(
        user_id=conn.user_id, session_id=msg.to_session_id, msg_id=res.msg_id, session_type=session_type
    )
    conn.send(Cmd.MSG_DATA_ACK, ack, frame.seq_num)


async def read_ack(
    gw: Gateway, conn: ClientConnection, frame: Frame, req: message_pb2.IMMsgDataReadAck
) -> None:
    req.user_id = conn.user_id
    key = conversation_key(req.session_type, conn.user_id, req.session_id)
    try:
        await gw.db_request(key, Cmd.MSG_READ_ACK, req)
    except UPSTREAM_ERRORS as exc:
        conn.log.warning("read ack not stored: %s", exc)
        return
    notify = message_pb2.IMMsgDataReadNotify(
        user_id=conn.user_id, session_id=req.session_id, msg_id=req.msg_id, session_type=req.session_type
    )
    gw.route(
        internal_pb2.RouteDeliver(
            user_ids=[conn.user_id],
            command_id=Cmd.MSG_READ_NOTIFY,
            body=notify.SerializeToString(),
            origin=conn.origin(),
        )
    )


async def client_time(
    gw: Gateway, conn: ClientConnection, frame: Frame, req: message_pb2.IMClientTimeReq
) -> None:
    conn.send(Cmd.CLIENT_TIME_RES, message_pb2.IMClientTimeRsp(server_time=now()), frame.seq_num)


def forward_to_db(reply_command: int) -> Handler:
    """A read answered by db_proxy with the client's own response message."""

    async def handler(gw: Gateway, conn: ClientConnection, frame: Frame, req: Any) -> None:
        req.user_id = conn.user_id
        key = (
            conversation_key(req.session_type, conn.user_id, req.session_id)
            if hasattr(req, "session_id")
            else conn.user_id
        )
        try:
            command, res = await gw.db_request(key, frame.command_id, req)
        except UPSTREAM_ERRORS as exc:
            conn.log.warning("0x%04x failed upstream: %s", frame.command_id, exc)
            return
        if command != reply_command:
            conn.log.error("db_proxy answered 0x%04x with 0x%04x", frame.command_id, command)
            return
        conn.send(command, res, frame.seq_num)

    return handler


CLIENT_COMMANDS: dict[int, Handler] = {
    Cmd.LOGIN_REQ: login,
    Cmd.LOGOUT_REQ: logout,
    Cmd.MSG_DATA: msg_data,
    Cmd.MSG_READ_ACK: read_ack,
    Cmd.CLIENT_TIME_REQ: client_time,
    Cmd.UNREAD_CNT_REQ: forward_to_db(Cmd.UNREAD_CNT_RES),
    Cmd.MSG_LIST_REQ: forward_to_db(Cmd.MSG_LIST_RES),
    Cmd.LATEST_MSG_ID_REQ: forward_to_db(Cmd.LATEST_MSG_ID_RES),
    Cmd.MSG_BY_ID_REQ: forward_to_db(Cmd.MSG_BY_ID_RES),
}
