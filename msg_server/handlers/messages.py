"""Service 0x03: messages (1:1 and group), read receipts, unread counts, history."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from common.commands import Cmd, Rpcs
from common.conversation import ShardKey, conversation_key, session_type_of
from common.errors import InvalidArgument
from common.pb import base_pb2, internal_pb2, message_pb2
from msg_server.handlers.base import ClientError, deliver, forward_to_db, now, session
from msg_server.handlers.table import Client, ClientCommands, no_reply
from msg_server.metrics import ACK_LATENCY, MESSAGES_IN, PUSHES_DROPPED

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

SessionRead = message_pb2.IMGetMsgListReq | message_pb2.IMGetLatestMsgIdReq | message_pb2.IMGetMsgByIdReq


async def msg_data(
    gw: Gateway, conn: ClientConnection, msg: message_pb2.IMMsgData
) -> message_pb2.IMMsgDataAck:
    """Stored, then acked. Refused, it is not acked (TeamTalk's ack cannot say
    "refused"): the client keeps the message as unsent and may resend it; a
    resend with the same client msg id is deduplicated."""
    MESSAGES_IN.inc()
    started = time.monotonic()
    found = session_type_of(msg.msg_type)
    if found is None:
        raise InvalidArgument(f"message type {msg.msg_type}")
    # session_type_of answers one of the SessionType values (common.conversation).
    session_type = base_pb2.SessionType.ValueType(found)
    session(session_type, msg.to_session_id)
    msg.from_user_id = conn.user_id
    msg.create_time = 0  # db_proxy stamps it when the message is stored
    req = internal_pb2.DbSaveMsgReq(msg=msg, session_type=session_type, origin=conn.origin())
    key = conversation_key(session_type, conn.user_id, msg.to_session_id)
    # Queued (in this turn's DB_SAVE_MSGS frame to the conversation's db_proxy) before
    # anything is awaited, so the connection's next message cannot overtake it. No db_proxy
    # linked, or too many saves outstanding on its link: refused here, nothing was sent.
    saved = gw.db.save(key, req, gw.config)
    order = conn.order()
    # Recorded as this connection's own send before its answer is back: it may be
    # committed first (a frame's answer waits for its last item), and a later message of
    # the conversation pushed meanwhile finds it in a gap; the fill, even one whose fetch
    # is answered after this ack, must not write the connection its own send. Refused or
    # unanswered, it may be stored all the same (a commit whose answer was lost): the
    # record stays for that too. Bounded per connection (push_order.MAX_UNACKED).
    order.unacked(key, msg.msg_data)
    res = await saved
    # The connection has its own message: a later gap check must not fetch it back.
    skipped = order.raise_to(key, res.msg_id)
    if skipped:
        PUSHES_DROPPED.labels("gap_unfilled").inc(skipped)
    ACK_LATENCY.observe(time.monotonic() - started)
    return message_pb2.IMMsgDataAck(
        user_id=conn.user_id, session_id=msg.to_session_id, msg_id=res.msg_id, session_type=session_type
    )


async def read_ack(gw: Gateway, conn: ClientConnection, req: message_pb2.IMMsgDataReadAck) -> None:
    session(req.session_type, req.session_id)
    req.user_id = conn.user_id
    key = conversation_key(req.session_type, conn.user_id, req.session_id)
    await gw.db_call(key, Rpcs.MSG_READ_ACK, req)
    notify = message_pb2.IMMsgDataReadNotify(
        user_id=conn.user_id, session_id=req.session_id, msg_id=req.msg_id, session_type=req.session_type
    )
    deliver(gw, conn, [conn.user_id], Cmd.MSG_READ_NOTIFY, notify)


async def client_time(
    gw: Gateway, conn: ClientConnection, req: message_pb2.IMClientTimeReq
) -> message_pb2.IMClientTimeRsp:
    return message_pb2.IMClientTimeRsp(server_time=now())


def _time_refused(
    conn: ClientConnection, req: message_pb2.IMClientTimeReq, err: ClientError
) -> message_pb2.IMClientTimeRsp:
    return message_pb2.IMClientTimeRsp(server_time=now())


def by_conversation(conn: ClientConnection, req: SessionRead) -> ShardKey:
    """A read of one session goes to the db_proxy that stores it."""
    return conversation_key(req.session_type, conn.user_id, req.session_id)


def _check_session(req: SessionRead) -> None:
    session(req.session_type, req.session_id)


# -- what a refused read is answered with: nothing found -------------------------------


def _unread_refused(
    conn: ClientConnection, req: message_pb2.IMUnreadMsgCntReq, err: ClientError
) -> message_pb2.IMUnreadMsgCntRsp:
    return message_pb2.IMUnreadMsgCntRsp(user_id=conn.user_id, total_cnt=0, attach_data=req.attach_data)


def _list_refused(
    conn: ClientConnection, req: message_pb2.IMGetMsgListReq, err: ClientError
) -> message_pb2.IMGetMsgListRsp:
    return message_pb2.IMGetMsgListRsp(
        user_id=conn.user_id,
        session_type=req.session_type,
        session_id=req.session_id,
        msg_id_begin=req.msg_id_begin,
        attach_data=req.attach_data,
    )


def _latest_refused(
    conn: ClientConnection, req: message_pb2.IMGetLatestMsgIdReq, err: ClientError
) -> message_pb2.IMGetLatestMsgIdRsp:
    return message_pb2.IMGetLatestMsgIdRsp(
        user_id=conn.user_id,
        session_type=req.session_type,
        session_id=req.session_id,
        latest_msg_id=0,
        attach_data=req.attach_data,
    )


def _by_id_refused(
    conn: ClientConnection, req: message_pb2.IMGetMsgByIdReq, err: ClientError
) -> message_pb2.IMGetMsgByIdRsp:
    return message_pb2.IMGetMsgByIdRsp(
        user_id=conn.user_id,
        session_type=req.session_type,
        session_id=req.session_id,
        attach_data=req.attach_data,
    )


COMMANDS = (
    ClientCommands()
    .request(Client.MSG_DATA, msg_data, no_reply)
    .notice(Client.MSG_READ_ACK, read_ack)
    .request(Client.CLIENT_TIME, client_time, _time_refused)
    .request(Client.UNREAD_CNT, forward_to_db(Rpcs.UNREAD_CNT), _unread_refused)
    .request(
        Client.MSG_LIST,
        forward_to_db(Rpcs.MSG_LIST, check=_check_session, key=by_conversation),
        _list_refused,
    )
    .request(
        Client.LATEST_MSG_ID,
        forward_to_db(Rpcs.LATEST_MSG_ID, check=_check_session, key=by_conversation),
        _latest_refused,
    )
    .request(
        Client.MSG_BY_ID,
        forward_to_db(Rpcs.MSG_BY_ID, check=_check_session, key=by_conversation),
        _by_id_refused,
    )
)
