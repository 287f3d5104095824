"""A saved message as a delivery log entry: a PushMsg, in its conversation's partition."""

from __future__ import annotations

from common.conversation import conversation_key
from common.delivery import Entry
from common.pb import base_pb2, internal_pb2, message_pb2
from db_proxy.storage.model import SESSION_GROUP, NewMessage, SavedMessage


def recipients_of(message: NewMessage, saved: SavedMessage) -> list[int]:
    """Who gets it: the store's answer (the sender too: its other devices get a copy);
    a trusted group message, the admin API's, may have nobody at all."""
    recipients = saved.recipients
    if not recipients and message.session_type != SESSION_GROUP:
        recipients = (message.from_user_id, message.to_id)
    return sorted(set(recipients))


def push_entry(
    message: NewMessage,
    saved: SavedMessage,
    origin: internal_pb2.Origin | None,
    partitions: int,
    committed_at_us: int,
) -> Entry | None:
    """The entry to append for ``saved``, or None if nobody is to get it."""
    user_ids = recipients_of(message, saved)
    if not user_ids:
        return None
    body = message_pb2.IMMsgData(
        from_user_id=message.from_user_id,
        to_session_id=message.to_id,
        msg_id=saved.msg_id,
        create_time=saved.create_time,
        msg_type=base_pb2.MsgType.ValueType(message.msg_type),
        msg_data=message.msg_data,
    )
    push = internal_pb2.PushMsg(
        user_ids=user_ids,
        session_type=base_pb2.SessionType.ValueType(message.session_type),
        from_user_id=message.from_user_id,
        to_id=message.to_id,
        msg_id=saved.msg_id,
        body=body.SerializeToString(),
        committed_at_us=committed_at_us,
    )
    if origin is not None and origin.IsInitialized():
        push.origin.CopyFrom(origin)
    key = conversation_key(message.session_type, message.from_user_id, message.to_id)
    return Entry.of(key, saved.msg_id, push.SerializeToString(), partitions)
