"""Recent-session rows and unread counts: exact for any sequence of sends and reads."""

from __future__ import annotations

import itertools
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, RecentSession, UnreadSession
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import gmsg, make_users, msg


async def unread(store: SqlStore, user: int) -> dict[int, int]:
    return {s.peer_id: s.unread_cnt for s in await store.unread_sessions(user)}


async def session_rows(store: SqlStore, user: int) -> list[tuple[int, ...]]:
    async with store.db.reading() as tx:
        return await tx.fetchall(
            "SELECT peer_id, latest_msg_id, unread_cnt, removed, updated FROM sessions "
            "WHERE user_id = ? ORDER BY peer_id",
            (user,),
        )


async def test_unread_counts_follow_sends_and_reads(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2), msg(1, 2)])
    await store.save_messages([msg(1, 2), msg(3, 2), msg(2, 1)])
    assert await unread(store, 2) == {1: 3, 3: 1}
    assert await unread(store, 1) == {2: 1}
    assert await unread(store, 3) == {}

    await store.mark_read(2, SESSION_SINGLE, 1, 3)
    assert await unread(store, 2) == {3: 1}
    await store.save_messages([msg(1, 2)])
    assert await unread(store, 2) == {1: 1, 3: 1}
    await store.mark_read(2, SESSION_SINGLE, 1, 5)
    await store.mark_read(2, SESSION_SINGLE, 1, 5)  # twice is harmless
    await store.mark_read(2, SESSION_SINGLE, 3, 1)
    assert await unread(store, 2) == {}
    assert await unread(store, 1) == {2: 1}  # reading one side leaves the other


async def test_unread_session_carries_the_latest_message(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2, b"first", create_time=10), msg(2, 1, b"reply", create_time=20)])
    await store.save_messages([msg(1, 2, b"\xfflatest", create_time=30, msg_type=2)])
    await store.save_messages([msg(4, 2, b"other", create_time=25)])
    assert await store.unread_sessions(2) == [
        UnreadSession(SESSION_SINGLE, 1, 2, 3, 2, b"\xfflatest", 1),
        UnreadSession(SESSION_SINGLE, 4, 1, 1, 1, b"other", 4),
    ]
    assert await store.unread_sessions(1) == [UnreadSession(SESSION_SINGLE, 2, 1, 3, 2, b"\xfflatest", 1)]


async def test_every_send_touches_both_sides(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2, create_time=100)])
    await store.save_messages([msg(2, 1, create_time=200), msg(1, 3, create_time=300)])
    assert await session_rows(store, 1) == [(2, 2, 1, 0, 200), (3, 1, 0, 0, 300)]
    assert await session_rows(store, 2) == [(1, 2, 1, 0, 200)]
    assert await session_rows(store, 3) == [(1, 1, 1, 0, 300)]


async def test_mark_read_never_creates_a_session(store: SqlStore) -> None:
    await store.mark_read(5, SESSION_SINGLE, 6, 1)
    assert await session_rows(store, 5) == []
    await store.save_messages([msg(6, 5)])
    assert await unread(store, 5) == {6: 1}


async def test_a_message_to_oneself_is_not_unread(store: SqlStore) -> None:
    (saved,) = await store.save_messages([msg(7, 7, b"note to self")])
    assert saved.msg_id == 1
    assert await unread(store, 7) == {}
    assert await session_rows(store, 7) == [(7, 1, 0, 0, 1_700_000_000)]
    assert [m.msg_data for m in await store.message_list(7, SESSION_SINGLE, 7, 0, 5)] == [b"note to self"]


async def test_recent_sessions_newest_first_with_their_latest_message(store: SqlStore) -> None:
    a, b, c = await make_users(store, 3)
    g = (await store.create_group("g", "", b, 2, [a])).id
    await store.save_messages([msg(a, b, b"to b", create_time=100)])
    await store.save_messages([msg(c, a, b"\x00from c", create_time=200, msg_type=2)])
    await store.save_messages([gmsg(b, g, b"group", create_time=300)])
    assert await store.recent_sessions(a, 0) == [
        RecentSession(SESSION_GROUP, g, 300, False, 1, 0x11, b"group", b),
        RecentSession(SESSION_SINGLE, c, 200, False, 1, 2, b"\x00from c", c),
        RecentSession(SESSION_SINGLE, b, 100, False, 1, 1, b"to b", a),
    ]
    assert [s.peer_id for s in await store.recent_sessions(a, 199)] == [g, c]
    assert await store.recent_sessions(a, 300) == []
    assert [s.peer_id for s in await store.recent_sessions(b, 0)] == [g, a]


async def test_session_updated_never_goes_back(store: SqlStore) -> None:
    # create_time comes from the gateways' clocks, which may disagree.
    await store.save_messages([msg(1, 2, b"new", create_time=300)])
    await store.save_messages([msg(2, 1, b"late", create_time=250)])
    assert await session_rows(store, 1) == [(2, 2, 1, 0, 300)]
    assert [(s.updated, s.latest_msg_data) for s in await store.recent_sessions(1, 0)] == [(300, b"late")]


async def test_a_removed_session_is_flagged_and_comes_back_with_the_next_message(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2, create_time=100), msg(1, 3, create_time=100)])
    before = int(time.time())
    assert await store.remove_session(1, SESSION_SINGLE, 2)
    (removed,) = await store.recent_sessions(1, 100)
    assert (removed.peer_id, removed.removed, removed.latest_msg_id) == (2, True, 1)
    assert before <= removed.updated <= int(time.time())
    assert [(s.peer_id, s.removed) for s in await store.recent_sessions(2, 0)] == [(1, False)]
    assert not await store.remove_session(1, SESSION_SINGLE, 4)
    assert not await store.remove_session(4, SESSION_SINGLE, 1)
    assert not await store.remove_session(1, SESSION_GROUP, 2)

    # The next message brings it back, and a sync from the removal sees that,
    # even with a create_time from before the removal.
    await store.save_messages([msg(2, 1, b"back", create_time=150)])
    (back,) = await store.recent_sessions(1, removed.updated)
    assert (back.peer_id, back.removed, back.latest_msg_data) == (2, False, b"back")
    assert back.updated == removed.updated + 1
    assert await unread(store, 1) == {2: 1}

    # Every removal moves updated on, several in one second too.
    seen = [back.updated]
    for _ in range(3):
        assert await store.remove_session(1, SESSION_SINGLE, 2)
        (row,) = await store.recent_sessions(1, seen[-1])
        assert row.removed
        seen.append(row.updated)
    assert seen == sorted(set(seen))


# A property test: random batches of sends (with resends) and reads among a
# few users, checked against a model of what the store must hold.
_fresh_users = itertools.count(1000, 10)
_send = st.tuples(
    st.just("send"),
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.sampled_from([b"a", b"\xff"])),
        min_size=1,
        max_size=5,
    ),
)
_read = st.tuples(st.just("read"), st.tuples(st.integers(0, 2), st.integers(0, 2)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(_send, _read), min_size=1, max_size=8))
async def test_unread_and_ids_match_a_model(store: SqlStore, ops: list) -> None:
    base = next(_fresh_users)  # users of their own: the store is shared by all examples
    last_id: dict[frozenset[int], int] = {}
    first_send: dict[tuple[int, int, int, bytes], int] = {}
    counts: dict[tuple[int, int], int] = {}
    for kind, args in ops:
        if kind == "read":
            user, peer = base + args[0], base + args[1]
            await store.mark_read(user, SESSION_SINGLE, peer, 0)
            if (user, peer) in counts:
                counts[user, peer] = 0
            continue
        batch = [msg(base + f, base + t, body, client_msg_id=c) for f, t, c, body in args]
        saved = await store.save_messages(batch)
        for m, s in zip(batch, saved, strict=True):
            key = (m.from_user_id, m.to_id, m.client_msg_id, m.msg_data)
            if m.client_msg_id and key in first_send:
                assert (s.msg_id, s.duplicate) == (first_send[key], True)
                continue
            pair = frozenset((m.from_user_id, m.to_id))
            last_id[pair] = last_id.get(pair, 0) + 1
            assert (s.msg_id, s.duplicate) == (last_id[pair], False)
            if m.client_msg_id:
                first_send[key] = s.msg_id
            counts.setdefault((m.from_user_id, m.to_id), 0)
            if m.to_id != m.from_user_id:
                counts[m.to_id, m.from_user_id] = counts.get((m.to_id, m.from_user_id), 0) + 1
    for user in range(base, base + 3):
        expected = {peer: n for (u, peer), n in counts.items() if u == user and n}
        assert await unread(store, user) == expected
        for peer in range(base, base + 3):
            latest = last_id.get(frozenset((user, peer)), 0)
            assert await store.latest_msg_id(user, SESSION_SINGLE, peer) == latest
            listed = await store.message_list(user, SESSION_SINGLE, peer, 0, 100)
            assert [m.msg_id for m in listed] == list(range(latest, 0, -1))
