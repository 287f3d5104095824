"""A db_proxy whose directory (users) and messages (groups, messages) are two
databases: groups, 1:1 and group messages and their history all work, and
the messages database never gets a user row (nothing joins on users there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.commands import Rpcs
from common.errors import NotFound
from common.pb import base_pb2, group_pb2, internal_pb2, message_pb2
from tests.services.conftest import ORIGIN, Node, database_url, node_on

SINGLE, GROUP = base_pb2.SESSION_TYPE_SINGLE, base_pb2.SESSION_TYPE_GROUP


async def save(
    node: Node,
    sender: int,
    session_type: base_pb2.SessionType.ValueType,
    to_id: int,
    text: bytes,
    client_id: int,
) -> int:
    msg_type = base_pb2.MSG_TYPE_SINGLE_TEXT if session_type == SINGLE else base_pb2.MSG_TYPE_GROUP_TEXT
    msg = message_pb2.IMMsgData(
        from_user_id=sender,
        to_session_id=to_id,
        msg_id=client_id,
        create_time=0,
        msg_type=msg_type,
        msg_data=text,
    )
    res = await node.client(
        Rpcs.DB_SAVE_MSG, internal_pb2.DbSaveMsgReq(msg=msg, session_type=session_type, origin=ORIGIN)
    )
    return res.msg_id


async def history(
    node: Node, user: int, session_type: base_pb2.SessionType.ValueType, peer: int
) -> list[bytes]:
    req = message_pb2.IMGetMsgListReq(
        user_id=user, session_type=session_type, session_id=peer, msg_id_begin=0, msg_cnt=20
    )
    res = await node.client(Rpcs.MSG_LIST, req)
    return sorted(m.msg_data for m in res.msg_list)


async def rows(node: Node, table: str, store_is_messages: bool) -> int:
    store = node.store if store_is_messages else node.directory
    async with store.db.reading() as tx:
        found = await tx.fetchall(f"SELECT COUNT(*) FROM {table}")
    return int(found[0][0])


async def test_groups_and_messages_with_users_in_another_database(engine: str, tmp_path: Path) -> None:
    async with (
        database_url(engine, tmp_path, "directory") as directory_url,
        database_url(engine, tmp_path, "messages") as messages_url,
        node_on(directory_url, messages_url) as node,
    ):
        assert node.store is not node.directory
        alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
        create = group_pb2.IMGroupCreateReq(
            user_id=alice,
            group_type=base_pb2.GROUP_TYPE_NORMAL,
            group_name="team",
            group_avatar="",
            member_id_list=[bob, carol, 99_999],
        )
        created = await node.wrapped(Rpcs.DB_GROUP_CREATE, internal_pb2.DbGroupCreateReq, create)
        assert (created.result_code, sorted(created.user_id_list)) == (0, sorted([alice, bob, carol]))
        assert await save(node, alice, SINGLE, bob, b"hi bob", 1) == 1
        assert await save(node, bob, SINGLE, alice, b"hi alice", 1) == 2
        assert await save(node, carol, GROUP, created.group_id, b"hi all", 1) == 1
        sent = await node.call(
            "send", **{"from": "alice", "to_group": created.group_id, "text": "from admin"}
        )
        assert sent["msg_id"] == 2
        assert await history(node, bob, SINGLE, alice) == [b"hi alice", b"hi bob"]
        group_history = await history(node, bob, GROUP, created.group_id)
        assert b"hi all" in group_history and len(group_history) == 2
        # A message to nobody is refused by the cache over the directory.
        with pytest.raises(NotFound):
            await save(node, alice, SINGLE, 99_999, b"to nobody", 2)
        assert await rows(node, "users", store_is_messages=True) == 0
        assert await rows(node, "users", store_is_messages=False) == 3
        assert await rows(node, "chat_groups", store_is_messages=False) == 0
        assert await rows(node, "chat_groups", store_is_messages=True) == 1
