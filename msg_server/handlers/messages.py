"""Service 0x03: messages (1:1 and group), read receipts, unread counts, history."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from common.codec import Frame
from common.commands import Cmd
from common.conversation import conversation_key, session_type_of
from common.metrics import ERRORS
from common.pb import internal_pb2, message_pb2
from msg_server.handlers.base import UPSTREAM_ERRORS, Handler, deliver, forward_to_db, now
from msg_server.metrics import ACK_LATENCY, MESSAGES_ACKED, MESSAGES_IN

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway


async def msg_data(gw: Gateway, conn: ClientConnection, frame: Frame, msg: message_pb2.IMMsgData) -> None:
    MESSAGES_IN.inc()
    started = time.monotonic()
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
        ERRORS.labels("upstream").inc()
        # No ack: the client keeps the message as unsent and may resend it;
        # a resend with the same client msg id is deduplicated.
        conn.log.warning(
            "message to %d (session type %d) not stored: %s", msg.to_session_id, session_type, exc
        )
        return
    assert isinstance(res, internal_pb2.DbSaveMsgRes)
    ack = message_pb2.IMMsgDataAck(
        user_id=conn.user_id, session_id=msg.to_session_id, msg_id=res.msg_id, session_type=session_type
    )
    conn.send(Cmd.MSG_DATA_ACK, ack, frame.seq_num)
    MESSAGES_ACKED.inc()
    ACK_LATENCY.observe(time.monotonic() - started)


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
    deliver(gw, conn, [conn.user_id], Cmd.MSG_READ_NOTIFY, notify)


async def client_time(
    gw: Gateway, conn: ClientConnection, frame: Frame, req: message_pb2.IMClientTimeReq
) -> None:
    conn.send(Cmd.CLIENT_TIME_RES, message_pb2.IMClientTimeRsp(server_time=now()), frame.seq_num)


def by_conversation(conn: ClientConnection, req: Any) -> object:
    """A read of one session goes to the db_proxy that stores it."""
    return conversation_key(req.session_type, conn.user_id, req.session_id)


COMMANDS: dict[int, Handler] = {
    Cmd.MSG_DATA: msg_data,
    Cmd.MSG_READ_ACK: read_ack,
    Cmd.CLIENT_TIME_REQ: client_time,
    Cmd.UNREAD_CNT_REQ: forward_to_db(Cmd.UNREAD_CNT_RES),
    Cmd.MSG_LIST_REQ: forward_to_db(Cmd.MSG_LIST_RES, key=by_conversation),
    Cmd.LATEST_MSG_ID_REQ: forward_to_db(Cmd.LATEST_MSG_ID_RES, key=by_conversation),
    Cmd.MSG_BY_ID_REQ: forward_to_db(Cmd.MSG_BY_ID_RES, key=by_conversation),
}
