"""Messages of one connection are stored in the order it sent them (issue 8).

On main, save_message awaited a lookup of an uncached recipient before
queueing, so a later message of the same connection could overtake an
earlier one: ids in reverse send order in 10 of 20 rounds on SQLite, 18 of
20 on MariaDB. Here the first recipient lookup is made slow on purpose; the
messages are dispatched in send order in one tick, as the link does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.commands import Rpcs
from common.errors import NotFound
from common.pb import base_pb2, internal_pb2, message_pb2
from db_proxy.storage.model import User
from tests.db_proxy.conftest import DbProxy

ORIGIN = internal_pb2.Origin(gateway_id="test", conn_id=1)


def send(db: DbProxy, to: int, data: bytes, client_msg_id: int) -> internal_pb2.DbSaveMsgReq:
    msg = message_pb2.IMMsgData(
        from_user_id=db.alice,
        to_session_id=to,
        msg_id=client_msg_id,
        create_time=0,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=data,
    )
    return internal_pb2.DbSaveMsgReq(msg=msg, session_type=base_pb2.SESSION_TYPE_SINGLE, origin=ORIGIN)


async def test_a_slow_recipient_lookup_does_not_let_a_later_message_overtake(
    db: DbProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookup = db.store.users_by_id
    calls = 0

    async def slow_first(ids: list[int]) -> list[User]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.2)  # the first lookup is the slow one (a cold cache, a busy pool)
        result: list[User] = await lookup(ids)
        return result

    monkeypatch.setattr(db.store, "users_by_id", slow_first)
    carol = await db.store.create_user("carol", "h")
    tasks = [
        asyncio.create_task(db.call(Rpcs.DB_SAVE_MSG, send(db, carol, f"m{i}".encode(), i + 1)))
        for i in range(6)
    ]
    acks: list[Any] = await asyncio.gather(*tasks)
    ids = [ack.msg_id for ack in acks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    stored = await db.store.message_list(db.alice, base_pb2.SESSION_TYPE_SINGLE, carol, 0, 10)
    assert [m.msg_data for m in sorted(stored, key=lambda m: m.msg_id)] == [
        f"m{i}".encode() for i in range(6)
    ]


async def test_a_message_to_nobody_is_refused_in_its_place(db: DbProxy) -> None:
    ghost = 4_000_000
    first = asyncio.create_task(db.call(Rpcs.DB_SAVE_MSG, send(db, db.bob, b"before", 1)))
    lost = asyncio.create_task(db.call(Rpcs.DB_SAVE_MSG, send(db, ghost, b"nobody", 2)))
    after = asyncio.create_task(db.call(Rpcs.DB_SAVE_MSG, send(db, db.bob, b"after", 3)))
    with pytest.raises(NotFound):
        await lost
    assert (await first).msg_id < (await after).msg_id
