"""From a pushed message and its offline recipients to the notifications to send (pure).

What is looked up (devices, shields, the sender's name) is handed in; this
module decides: a push-shielded recipient gets nothing, nor one who
shielded that group; the text only when configured, decoded from the
TeamTalk clients' AES encoding (common.teamtalk_text), never audio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf.message import DecodeError

from common.conversation import conversation_key
from common.pb import base_pb2, internal_pb2, message_pb2
from common.teamtalk_text import decode_text
from db_proxy.offline_push.provider import Device, Notification

TEXT_TYPES = frozenset({base_pb2.MSG_TYPE_SINGLE_TEXT, base_pb2.MSG_TYPE_GROUP_TEXT})
#: Characters of text a notification carries at most (push payloads are small: APNs takes 4 KB).
TEXT_LIMIT = 1000


def notification_key(push: internal_pb2.PushMsg, user_id: int) -> str:
    """Unique per (message, recipient), the same however often the message is pushed:
    ``<session type>.<conversation>.<msg id>.<recipient>``, e.g. ``1.3.7.42.7``."""
    session_type, a, b = conversation_key(push.session_type, push.from_user_id, push.to_id)
    return f"{session_type}.{a}.{b}.{push.msg_id}.{user_id}"


def message_text(msg_type: int, data: bytes) -> str | None:
    """The text of a text message (a TeamTalk client's encoding, or plain UTF-8); None otherwise."""
    if msg_type not in TEXT_TYPES:
        return None
    try:
        text = decode_text(data)
    except ValueError:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return None
    return text[:TEXT_LIMIT] if text else None


def notifications(
    push: internal_pb2.PushMsg,
    user_ids: Iterable[int],
    *,
    devices: Mapping[int, tuple[Device, ...]],
    shielded: set[int],
    sender_name: str,
    include_text: bool,
) -> tuple[list[Notification], list[int]]:
    """The notifications for ``user_ids``, and the recipients left out as shielded.

    ``shielded``: recipients who muted push, or muted this group.
    """
    try:
        data = message_pb2.IMMsgData.FromString(push.body)
    except DecodeError:
        data = message_pb2.IMMsgData()  # created_at 0, no text: the notification still says who wrote
    text = message_text(data.msg_type, data.msg_data) if include_text else None
    made: list[Notification] = []
    left_out: list[int] = []
    for user_id in dict.fromkeys(user_ids):
        if user_id == push.from_user_id:
            continue  # the sender wrote it: nothing to notify
        if user_id in shielded:
            left_out.append(user_id)
            continue
        made.append(
            Notification(
                key=notification_key(push, user_id),
                user_id=user_id,
                from_user_id=push.from_user_id,
                session_type=push.session_type,
                to_id=push.to_id,
                msg_id=push.msg_id,
                created_at=data.create_time,
                sender_name=sender_name,
                text=text,
                devices=devices.get(user_id, ()),
            )
        )
    return made, left_out
