"""Saving and reading 1:1 messages: ids, dedup, byte-exact bodies, paging, atomic batches."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import InvalidArgument
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, NewMessage, SavedMessage, StoreError
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import conv_id, msg


async def ids_of(store: SqlStore, user: int, peer: int) -> list[int]:
    return [m.msg_id for m in await store.message_list(user, SESSION_SINGLE, peer, 0, 1000)]


async def test_ids_count_from_one_per_conversation(store: SqlStore) -> None:
    saved = await store.save_messages([msg(1, 2), msg(1, 3), msg(1, 2), msg(4, 5)])
    assert [s.msg_id for s in saved] == [1, 1, 2, 1]
    for _ in range(3):
        (again,) = await store.save_messages([msg(1, 2)])
    assert again.msg_id == 5
    assert await ids_of(store, 1, 2) == [5, 4, 3, 2, 1]
    assert await ids_of(store, 1, 3) == [1]
    assert await store.latest_msg_id(1, SESSION_SINGLE, 2) == 5
    assert await store.latest_msg_id(4, SESSION_SINGLE, 5) == 1
    assert await store.latest_msg_id(2, SESSION_SINGLE, 3) == 0


async def test_both_directions_share_one_id_space(store: SqlStore) -> None:
    saved = await store.save_messages([msg(7, 9, b"a"), msg(9, 7, b"b")])
    saved += await store.save_messages([msg(9, 7, b"c"), msg(7, 9, b"d")])
    assert [s.msg_id for s in saved] == [1, 2, 3, 4]
    from_seven = await store.message_list(7, SESSION_SINGLE, 9, 0, 10)
    from_nine = await store.message_list(9, SESSION_SINGLE, 7, 0, 10)
    assert from_seven == from_nine
    assert [(m.msg_id, m.from_user_id, m.msg_data) for m in from_seven] == [
        (4, 7, b"d"),
        (3, 9, b"c"),
        (2, 9, b"b"),
        (1, 7, b"a"),
    ]
    assert await store.latest_msg_id(9, SESSION_SINGLE, 7) == 4


async def test_a_resend_across_batches_returns_the_original(store: SqlStore) -> None:
    (first,) = await store.save_messages([msg(1, 2, b"hi", client_msg_id=77, create_time=100)])
    await store.save_messages([msg(2, 1, b"other")])
    (again,) = await store.save_messages([msg(1, 2, b"hi", client_msg_id=77, create_time=200)])
    assert first == SavedMessage(1, 100, duplicate=False, recipients=(1, 2))
    assert again == SavedMessage(1, 100, duplicate=True, recipients=(1, 2))  # pushed again
    assert await ids_of(store, 1, 2) == [2, 1]
    (unread,) = await store.unread_sessions(2)
    assert unread.unread_cnt == 1  # the resend is not counted again


async def test_a_resend_inside_one_batch_is_stored_once(store: SqlStore) -> None:
    saved = await store.save_messages(
        [
            msg(1, 2, b"x", client_msg_id=5, create_time=10),
            msg(1, 2, b"y", create_time=11),
            msg(1, 2, b"x", client_msg_id=5, create_time=12),
        ]
    )
    assert saved == [
        SavedMessage(1, 10, False, (1, 2)),
        SavedMessage(2, 11, False, (1, 2)),
        SavedMessage(1, 10, True, (1, 2)),
    ]
    assert await ids_of(store, 1, 2) == [2, 1]
    (unread,) = await store.unread_sessions(2)
    assert (unread.unread_cnt, unread.latest_msg_id) == (2, 2)


async def test_what_makes_a_send_new(store: SqlStore) -> None:
    base = msg(1, 2, b"body", client_msg_id=9)
    (first,) = await store.save_messages([base])
    variants = [
        msg(1, 2, b"other body", client_msg_id=9),  # same client id, different body
        msg(1, 2, b"body", client_msg_id=10),  # same body, different client id
        msg(1, 3, b"body", client_msg_id=9),  # another recipient
        msg(2, 1, b"body", client_msg_id=9),  # another sender
        msg(1, 2, b"body", client_msg_id=0),  # no client id: never a duplicate
        msg(1, 2, b"body", client_msg_id=0),
    ]
    saved = await store.save_messages(variants)
    assert not any(s.duplicate for s in saved)
    assert [s.msg_id for s in saved] == [2, 3, 1, 4, 5, 6]
    assert first.msg_id == 1


async def test_client_msg_ids_use_all_64_bits(store: SqlStore) -> None:
    huge = 2**64 - 1
    (first,) = await store.save_messages([msg(1, 2, b"\x80", client_msg_id=huge)])
    (again,) = await store.save_messages([msg(1, 2, b"\x80", client_msg_id=huge)])
    (other,) = await store.save_messages([msg(1, 2, b"\x80", client_msg_id=huge - 1)])
    assert (first.msg_id, again.msg_id, again.duplicate, other.duplicate) == (1, 1, True, False)


async def test_bodies_are_stored_byte_exact(store: SqlStore) -> None:
    bodies = [
        bytes(range(256)),  # every byte value, NUL and invalid UTF-8 included
        b"\xff\xfe\x00\x00",
        b"",
        "日本語 😀".encode(),
        b"\xc3\x28 '; DROP TABLE messages; --",
        bytes(range(256)) * 256,  # 64 KiB
    ]
    saved = await store.save_messages([msg(1, 2, body) for body in bodies])
    listed = await store.message_list(1, SESSION_SINGLE, 2, 0, 10)
    assert [m.msg_data for m in reversed(listed)] == bodies
    by_id = await store.messages_by_id(2, SESSION_SINGLE, 1, [s.msg_id for s in saved])
    assert [m.msg_data for m in by_id] == bodies
    assert all(type(m.msg_data) is bytes for m in by_id)


async def test_message_list_pages_newest_first(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2, str(i).encode(), create_time=1000 + i) for i in range(1, 26)])
    first = await store.message_list(2, SESSION_SINGLE, 1, 0, 10)
    assert [m.msg_id for m in first] == list(range(25, 15, -1))
    assert first[0].msg_data == b"25" and first[0].create_time == 1025 and first[0].msg_type == 1
    pages, begin = [], 0
    while True:
        page = await store.message_list(2, SESSION_SINGLE, 1, begin, 7)
        if not page:
            break
        pages.append([m.msg_id for m in page])
        begin = page[-1].msg_id - 1
        if begin == 0:
            break
    assert pages == [list(range(25, 18, -1)), list(range(18, 11, -1)), list(range(11, 4, -1)), [4, 3, 2, 1]]
    assert [m.msg_id for m in await store.message_list(1, SESSION_SINGLE, 2, 3, 10)] == [3, 2, 1]
    assert [m.msg_id for m in await store.message_list(1, SESSION_SINGLE, 2, 10**6, 2)] == [25, 24]
    assert await store.message_list(1, SESSION_SINGLE, 2, 0, 0) == []


async def test_reads_stay_inside_the_conversation(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2, b"private"), msg(3, 4, b"elsewhere")])
    assert await store.message_list(3, SESSION_SINGLE, 1, 0, 10) == []
    assert await store.message_list(3, SESSION_SINGLE, 2, 0, 10) == []
    assert await store.messages_by_id(3, SESSION_SINGLE, 1, [1]) == []
    (only,) = await store.messages_by_id(3, SESSION_SINGLE, 4, [1])
    assert only.msg_data == b"elsewhere"


async def test_messages_by_id(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2, bytes([i])) for i in range(1, 6)])
    found = await store.messages_by_id(1, SESSION_SINGLE, 2, [4, 2, 99, 4, 0, -1])
    assert [(m.msg_id, m.msg_data) for m in found] == [(2, b"\x02"), (4, b"\x04")]
    assert await store.messages_by_id(1, SESSION_SINGLE, 2, []) == []
    many = await store.messages_by_id(1, SESSION_SINGLE, 2, list(range(1, 300)))
    assert [m.msg_id for m in many] == [1, 2, 3, 4, 5]


async def test_a_failing_batch_stores_nothing(store: SqlStore) -> None:
    await store.save_messages([msg(5, 6)])
    # A row already sitting where the batch's third message of (1, 2) goes
    # makes its INSERT fail on the primary key, after the first two of the
    # batch and the id counter were written inside the same transaction.
    async with store.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO messages (session_type, conv_id, msg_id, from_user_id, to_id, msg_type, "
            "msg_data, create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (SESSION_SINGLE, conv_id(1, 2), 3, 1, 2, 1, b"squatter", 1),
        )
    batch = [msg(1, 2, b"a", client_msg_id=1), msg(5, 6), msg(2, 1, b"b"), msg(1, 2, b"c", client_msg_id=3)]
    with pytest.raises(StoreError):
        await store.save_messages(batch)

    assert await store.latest_msg_id(1, SESSION_SINGLE, 2) == 0
    assert await store.latest_msg_id(5, SESSION_SINGLE, 6) == 1
    assert [m.msg_data for m in await store.message_list(1, SESSION_SINGLE, 2, 0, 10)] == [b"squatter"]
    assert await store.unread_sessions(1) == []
    assert [s.unread_cnt for s in await store.unread_sessions(6)] == [1]

    async with store.db.transaction() as tx:
        await tx.execute("DELETE FROM messages WHERE msg_data = ?", (b"squatter",))
    saved = await store.save_messages(batch)
    assert [(s.msg_id, s.duplicate) for s in saved] == [(1, False), (2, False), (2, False), (3, False)]


async def test_invalid_messages_are_refused_before_anything_is_written(store: SqlStore) -> None:
    bad = [
        msg(0, 2),
        msg(1, 2**32),
        msg(1, 2, client_msg_id=2**64),
        msg(1, 2, msg_type=-1),
        NewMessage(1, SESSION_GROUP, 2**32, 0x11, b"no such group id", 1),
        NewMessage(1, 9, 2, 1, b"unknown session type", 1),
    ]
    for message in bad:
        with pytest.raises(InvalidArgument):
            await store.save_messages([msg(1, 2), message])
    assert await store.latest_msg_id(1, SESSION_SINGLE, 2) == 0
    assert await store.save_messages([]) == []
    with pytest.raises(InvalidArgument):
        await store.message_list(1, 9, 2, 0, 10)
    with pytest.raises(InvalidArgument):
        await store.message_list(1, SESSION_GROUP, 0, 0, 10)


async def test_concurrent_batches_get_distinct_consecutive_ids(store: SqlStore) -> None:
    batches = [[msg(1, 2, bytes([i]))] if i % 2 else [msg(2, 1, bytes([i])), msg(1, 3)] for i in range(40)]
    results = await asyncio.gather(*(store.save_messages(b) for b in batches))
    pair_ids = sorted(r[0].msg_id for r in results)
    assert pair_ids == list(range(1, 41))
    assert sorted(r[1].msg_id for r in results if len(r) == 2) == list(range(1, 21))
    assert await ids_of(store, 1, 2) == list(range(40, 0, -1))


async def test_concurrent_identical_sends_are_stored_once(store: SqlStore) -> None:
    # On MySQL these race for real (one pool connection each): all but one
    # lose on the dedup key, roll back and find the winner on their retry.
    sends = [store.save_messages([msg(1, 2, b"same", client_msg_id=42)]) for _ in range(8)]
    results = [r for (r,) in await asyncio.gather(*sends)]
    assert {r.msg_id for r in results} == {1}
    assert sorted(r.duplicate for r in results) == [False] + [True] * 7
    assert await ids_of(store, 1, 2) == [1]


async def test_a_cancelled_save_leaves_the_store_consistent(store: SqlStore) -> None:
    for delay in (0, 0.0005, 0.001, 0.003):
        task = asyncio.create_task(store.save_messages([msg(1, 2), msg(2, 1)]))
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (saved,) = await store.save_messages([msg(1, 2)])
    latest = await store.latest_msg_id(1, SESSION_SINGLE, 2)
    assert saved.msg_id == latest
    assert await ids_of(store, 1, 2) == list(range(latest, 0, -1))


async def test_a_resend_racing_the_original_returns_the_original(store: SqlStore) -> None:
    # The original's transaction is still open when the resend starts: on
    # MySQL the resend finds no dedup row, waits on the conversation's
    # counter, then hits the dedup key and is retried; on SQLite it waits for
    # the write lock. Either way it must come back as the duplicate.
    original = msg(1, 2, b"race", client_msg_id=8)
    async with store.db.transaction() as tx:
        (first,) = await store._save(tx, [store._pending(original)])
        resend = asyncio.create_task(store.save_messages([original]))
        await asyncio.sleep(0.1)
        assert not resend.done()
    (again,) = await resend
    assert (first.msg_id, again.msg_id, again.duplicate) == (1, 1, True)
    assert await ids_of(store, 1, 2) == [1]
