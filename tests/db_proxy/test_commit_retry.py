"""A batch whose COMMIT was applied but whose answer was lost is retried one
by one without storing anything twice, client msg id 0 included, and every
message of it is still pushed (issue 8: id-0 messages were stored more times
than sent, and a duplicate was never pushed).

The failure is injected after the commit: a store wrapper that commits the
batch, then raises as a lost connection would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.pb import internal_pb2, message_pb2
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, NewMessage, SavedMessage, StoreError
from db_proxy.workers import SERVER_KEY_BIT
from tests.db_proxy.conftest import ENGINES, DbProxy, database_url, db_proxy_on

ORIGIN = internal_pb2.Origin(gateway_id="gw-1", conn_id=7)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_batch_committed_but_unanswered_is_retried_without_storing_twice(
    engine: str, tmp_path: Path
) -> None:
    async with database_url(engine, tmp_path) as url, db_proxy_on(url) as db:
        lost_answers = await _commit_then_fail_once(db)
        sends = [
            NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"zero-a", 1),  # client msg id 0
            NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"own-id", 1, client_msg_id=41),
            NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"zero-b", 1),
            NewMessage(db.alice, SESSION_GROUP, db.group, 17, b"zero-group", 1),
            NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"zero-a", 1),  # the same body again, id 0
        ]
        # Queued in one tick, as the link dispatches them: one batch.
        futures = [db.workers.save(m, ORIGIN) for m in sends]
        saved: list[SavedMessage] = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert lost_answers == [len(sends)]  # the whole batch was committed, then "failed"

        # Every send is stored once: 4 in the 1:1 conversation, 1 in the group.
        single = await db.store.message_list(db.alice, SESSION_SINGLE, db.bob, 0, 100)
        assert [m.msg_data for m in reversed(single)] == [b"zero-a", b"own-id", b"zero-b", b"zero-a"]
        group = await db.store.message_list(db.alice, SESSION_GROUP, db.group, 0, 100)
        assert [m.msg_data for m in group] == [b"zero-group"]
        # Each retry recognised what the lost commit stored: the first ids, as duplicates.
        assert [(s.msg_id, s.duplicate) for s in saved] == [
            (1, True),
            (2, True),
            (3, True),
            (1, True),
            (4, True),
        ]
        (unread,) = [s for s in await db.store.unread_sessions(db.bob) if s.session_type == SESSION_SINGLE]
        assert unread.unread_cnt == 4  # counted once each

        # Pushed all the same, in order within each conversation (a worker serves
        # conversations round-robin), to the pair or the members, with the origin.
        pushes = await db.pushes()
        assert len(pushes) == len(sends)
        assert all(sorted(p.user_ids) == sorted({db.alice, db.bob}) for p in pushes)
        assert all(p.origin == ORIGIN and p.committed_at_us > 0 for p in pushes)
        by_session: dict[int, list[tuple[int, bytes]]] = {}
        for p in pushes:
            body = message_pb2.IMMsgData.FromString(p.body)
            assert body.msg_id == p.msg_id
            by_session.setdefault(p.session_type, []).append((p.msg_id, body.msg_data))
        assert by_session == {
            SESSION_SINGLE: [(1, b"zero-a"), (2, b"own-id"), (3, b"zero-b"), (4, b"zero-a")],
            SESSION_GROUP: [(1, b"zero-group")],
        }


async def _commit_then_fail_once(db: DbProxy) -> list[int]:
    """Make the next batch of more than one message commit, then raise."""
    save = db.store.save_messages
    lost: list[int] = []

    async def commit_then_fail(batch: list[NewMessage]) -> list[SavedMessage]:
        result: list[SavedMessage] = await save(batch)
        if len(batch) > 1 and not lost:
            lost.append(len(batch))
            raise StoreError("connection lost while the COMMIT was answered")
        return result

    db.store.save_messages = commit_then_fail  # type: ignore[method-assign]
    return lost


async def test_a_message_without_a_client_id_gets_a_server_key(db: DbProxy) -> None:
    keys: list[int] = []
    save = db.store.save_messages

    async def record(batch: list[NewMessage]) -> list[SavedMessage]:
        keys.extend(m.client_msg_id for m in batch)
        result: list[SavedMessage] = await save(batch)
        return result

    db.store.save_messages = record  # type: ignore[method-assign]
    await db.workers.save(NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"a", 1), ORIGIN)
    await db.workers.save(NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"a", 1), ORIGIN)
    await db.workers.save(NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"b", 1, client_msg_id=9), ORIGIN)
    assert keys[0] & SERVER_KEY_BIT and keys[1] & SERVER_KEY_BIT and keys[0] != keys[1]
    assert keys[2] == 9  # a client's own id is kept
    # Two id-0 sends of one body are two messages, as before.
    listed = await db.store.message_list(db.alice, SESSION_SINGLE, db.bob, 0, 10)
    assert [m.msg_id for m in listed] == [3, 2, 1]
