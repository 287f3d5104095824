"""Facts about sessions that gateways and db_proxy must agree on."""

from __future__ import annotations

import zlib

from common.pb import base_pb2

ShardKey = int | str | tuple[int, ...]

SINGLE_MSG_TYPES = frozenset({base_pb2.MSG_TYPE_SINGLE_TEXT, base_pb2.MSG_TYPE_SINGLE_AUDIO})
GROUP_MSG_TYPES = frozenset({base_pb2.MSG_TYPE_GROUP_TEXT, base_pb2.MSG_TYPE_GROUP_AUDIO})


def conversation_key(session_type: int, from_user_id: int, to_id: int) -> tuple[int, int, int]:
    """One key per conversation: a 1:1 conversation is the unordered pair."""
    if session_type == base_pb2.SESSION_TYPE_SINGLE:
        return (session_type, min(from_user_id, to_id), max(from_user_id, to_id))
    return (session_type, to_id, 0)


def session_type_of(msg_type: int) -> int | None:
    if msg_type in SINGLE_MSG_TYPES:
        return base_pb2.SESSION_TYPE_SINGLE
    if msg_type in GROUP_MSG_TYPES:
        return base_pb2.SESSION_TYPE_GROUP
    return None


def is_mobile(client_type: int) -> bool:
    """TeamTalk's device classes: 0x0_ desktop, 0x1_ mobile."""
    return client_type & 0xF0 == 0x10


def shard_of(key: ShardKey, shards: int) -> int:
    """Which of ``shards`` serves ``key`` (a conversation key, a user id, a login name).

    CRC-32 of a canonical encoding: the same on every process, interpreter
    and version, unlike the builtin ``hash()`` (salted per process for str),
    so every gateway sends a conversation to the same db_proxy, and every
    db_proxy pushes it through the same route server, while they are up.
    """
    if isinstance(key, str):
        data = b"s" + key.encode("utf-8", "surrogatepass")
    elif isinstance(key, int):
        data = b"i%d" % key
    else:
        data = b"t" + b",".join(b"%d" % part for part in key)
    return zlib.crc32(data) % shards
