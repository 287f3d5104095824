"""Groups: creation, membership, group messages, history from joining, shield."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument, NotFound
from db_proxy.storage.model import (
    SESSION_GROUP,
    SESSION_SINGLE,
    Group,
    NotMember,
    SavedMessage,
    UnknownGroup,
    UnreadSession,
)
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import gmsg, make_users, msg

NORMAL, TEMPORARY = 1, 2


async def group_of(store: SqlStore, n: int, group_type: int = NORMAL) -> tuple[int, list[int]]:
    """A new group of ``n`` new users, the first one its creator."""
    users = await make_users(store, n)
    group = await store.create_group("team", "", users[0], group_type, users[1:])
    return group.id, users


async def visible(store: SqlStore, user: int, group_id: int) -> list[int]:
    return [m.msg_id for m in await store.message_list(user, SESSION_GROUP, group_id, 0, 1000)]


async def unread(store: SqlStore, user: int) -> dict[tuple[int, int], int]:
    return {(s.session_type, s.peer_id): s.unread_cnt for s in await store.unread_sessions(user)}


async def test_create_group(store: SqlStore) -> None:
    a, b, c = await make_users(store, 3)
    # The ids are users (the group service asks the directory: tests/services); each once.
    group = await store.create_group("Team 😀", "http://a/1.png", a, NORMAL, [c, b, c, 0, -1])
    assert group == Group(group.id, "Team 😀", "http://a/1.png", a, NORMAL, 1, (a, b, c))
    assert await store.groups_for_member(b, [group.id]) == [group]
    alone = await store.create_group("me", "", b, TEMPORARY, [])
    assert (alone.members, alone.version, alone.group_type) == ((b,), 1, TEMPORARY)
    assert alone.id > group.id
    # The creator is a member even when the list leaves it out; members from the start see everything.
    (saved,) = await store.save_messages([gmsg(b, alone.id)])
    assert await visible(store, b, alone.id) == [saved.msg_id] == [1]


async def test_invalid_groups_are_refused(store: SqlStore) -> None:
    (a,) = await make_users(store, 1)
    for name, avatar, creator, group_type, refusal in [
        ("n" * 65, "", a, NORMAL, InvalidArgument),
        ("team", "a" * 256, a, NORMAL, InvalidArgument),
        ("team", "", a, 3, InvalidArgument),
        (b"\xffteam", "", a, NORMAL, InvalidArgument),  # a name that was not UTF-8
        ("team", b"\xff", a, NORMAL, InvalidArgument),
        ("team", "", 0, NORMAL, InvalidArgument),  # no user has id 0 (others: the group service)
    ]:
        with pytest.raises(refusal):
            await store.create_group(name, avatar, creator, group_type, [a])  # type: ignore[arg-type]
    assert await store.normal_groups_of(a) == []
    group = await store.create_group("n" * 64, "a" * 255, a, NORMAL, [])
    assert await store.normal_groups_of(a) == [(group.id, 1)]


async def test_group_ids_are_per_group_and_apart_from_one_to_one(store: SqlStore) -> None:
    g1, (a, b, _) = await group_of(store, 3)
    g2 = (await store.create_group("other", "", a, TEMPORARY, [b])).id
    saved = await store.save_messages(
        [gmsg(a, g1), msg(a, b), gmsg(b, g2), gmsg(b, g1), msg(b, a), gmsg(a, g2), gmsg(a, g1)]
    )
    assert [s.msg_id for s in saved] == [1, 1, 1, 2, 2, 2, 3]
    saved = await store.save_messages([gmsg(a, g2), msg(a, b)])
    assert [s.msg_id for s in saved] == [3, 3]
    assert await visible(store, b, g1) == [3, 2, 1]
    assert await visible(store, b, g2) == [3, 2, 1]
    assert await store.latest_msg_id(a, SESSION_GROUP, g1) == 3
    assert await store.latest_msg_id(a, SESSION_SINGLE, b) == 3
    listed = await store.message_list(a, SESSION_GROUP, g1, 2, 10)
    assert [(m.msg_id, m.from_user_id, m.msg_type) for m in listed] == [(2, b, 0x11), (1, a, 0x11)]
    by_id = await store.messages_by_id(b, SESSION_GROUP, g2, [3, 1, 7])
    assert [(m.msg_id, m.from_user_id) for m in by_id] == [(1, b), (3, a)]


async def test_a_group_resend_is_stored_once(store: SqlStore) -> None:
    g, (a, b) = await group_of(store, 2)
    (first,) = await store.save_messages([gmsg(a, g, b"x", client_msg_id=5, create_time=10)])
    saved = await store.save_messages(
        [gmsg(a, g, b"x", client_msg_id=5, create_time=20), gmsg(a, g, b"y", client_msg_id=5)]
    )
    assert first == SavedMessage(1, 10, False, (a, b))
    # The resend is pushed again, to the members as they are now.
    assert saved == [SavedMessage(1, 10, True, (a, b)), SavedMessage(2, 1_700_000_000, False, (a, b))]
    # Same client id and body to a 1:1 peer is another message.
    (other,) = await store.save_messages([msg(a, b, b"x", client_msg_id=5)])
    assert (other.msg_id, other.duplicate) == (1, False)
    assert await unread(store, b) == {(SESSION_GROUP, g): 2, (SESSION_SINGLE, a): 1}


async def test_recipients(store: SqlStore) -> None:
    g, (a, b, c) = await group_of(store, 3)
    saved = await store.save_messages([gmsg(c, g), msg(b, a), msg(a, b), msg(c, c)])
    assert [s.recipients for s in saved] == [(a, b, c), (a, b), (a, b), (c,)]


async def test_a_non_member_cannot_send_and_fails_the_batch(store: SqlStore) -> None:
    g, (a, b, outsider) = await group_of(store, 3)
    await store.change_group_members(g, [], [outsider])
    good, bad = gmsg(a, g, b"good"), gmsg(outsider, g, b"bad")
    with pytest.raises(NotMember):
        await store.save_messages([good, msg(a, b), bad])
    assert await store.latest_msg_id(a, SESSION_GROUP, g) == 0
    assert await store.latest_msg_id(a, SESSION_SINGLE, b) == 0
    assert await unread(store, b) == {}
    # The caller's retry, one message at a time: only the bad one fails.
    with pytest.raises(NotMember):
        await store.save_messages([bad])
    assert [s.msg_id for s in await store.save_messages([good])] == [1]
    assert [s.msg_id for s in await store.save_messages([msg(a, b)])] == [1]
    with pytest.raises(NotMember):
        await store.save_messages([gmsg(a, 99_999)])  # no such group


async def test_unread_counts_are_exact(store: SqlStore) -> None:
    g, (a, b, c) = await group_of(store, 3)
    await store.save_messages([gmsg(a, g), gmsg(a, g)])
    await store.save_messages([gmsg(b, g), msg(c, a)])
    await store.save_messages([gmsg(c, g, b"\xfflast", msg_type=0x12)])
    assert await unread(store, a) == {(SESSION_GROUP, g): 2, (SESSION_SINGLE, c): 1}
    assert await unread(store, b) == {(SESSION_GROUP, g): 3}
    assert await unread(store, c) == {(SESSION_GROUP, g): 3}
    assert await store.unread_sessions(b) == [UnreadSession(SESSION_GROUP, g, 3, 4, 0x12, b"\xfflast", c)]
    await store.mark_read(b, SESSION_GROUP, g, 4)
    assert await unread(store, b) == {}
    assert await unread(store, c) == {(SESSION_GROUP, g): 3}
    await store.save_messages([gmsg(a, g)])
    assert await unread(store, b) == {(SESSION_GROUP, g): 1}
    assert await unread(store, a) == {(SESSION_GROUP, g): 2, (SESSION_SINGLE, c): 1}


async def test_a_late_joiner_sees_history_from_joining_on(store: SqlStore) -> None:
    g, (a, b) = await group_of(store, 2)
    (c,) = await make_users(store, 1)
    await store.save_messages([gmsg(a, g), gmsg(b, g), gmsg(a, g)])
    group, changed = await store.change_group_members(g, [c], [])
    assert (changed, group.members, group.version) == ([c], (a, b, c), 2)
    assert await visible(store, c, g) == []
    assert await store.messages_by_id(c, SESSION_GROUP, g, [1, 2, 3]) == []
    assert await store.latest_msg_id(c, SESSION_GROUP, g) == 0
    assert await unread(store, c) == {}
    (fourth,) = await store.save_messages([gmsg(b, g, b"welcome")])
    assert fourth.recipients == (a, b, c)
    assert await visible(store, c, g) == [4]
    assert [m.msg_data for m in await store.messages_by_id(c, SESSION_GROUP, g, [2, 3, 4])] == [b"welcome"]
    assert await store.latest_msg_id(c, SESSION_GROUP, g) == 4
    assert await unread(store, c) == {(SESSION_GROUP, g): 1}
    assert await visible(store, a, g) == [4, 3, 2, 1]


async def test_a_removed_member_can_neither_read_nor_send(store: SqlStore) -> None:
    g, (a, b, c) = await group_of(store, 3)
    await store.save_messages([gmsg(a, g), gmsg(b, g)])
    assert await unread(store, c) == {(SESSION_GROUP, g): 2}
    group, changed = await store.change_group_members(g, [], [c])
    assert (changed, group.members, group.version) == ([c], (a, b), 2)
    assert await visible(store, c, g) == []
    assert await store.messages_by_id(c, SESSION_GROUP, g, [1, 2]) == []
    assert await store.latest_msg_id(c, SESSION_GROUP, g) == 0
    assert await unread(store, c) == {}
    with pytest.raises(NotMember):
        await store.save_messages([gmsg(c, g)])
    (third,) = await store.save_messages([gmsg(a, g)])
    assert third.recipients == (a, b)
    assert await unread(store, c) == {}
    (session,) = await store.recent_sessions(c, 0)
    assert (session.peer_id, session.removed, session.latest_msg_id) == (g, True, 2)
    assert await store.normal_groups_of(c) == []
    assert await store.groups_for_member(c, [g]) == []


async def test_a_member_back_again_starts_from_its_new_joining(store: SqlStore) -> None:
    g, (a, b) = await group_of(store, 2)
    await store.save_messages([gmsg(a, g), gmsg(b, g)])
    await store.change_group_members(g, [], [b])
    await store.save_messages([gmsg(a, g), gmsg(a, g)])
    group, changed = await store.change_group_members(g, [b], [])
    assert (changed, group.members, group.version) == ([b], (a, b), 3)
    assert await visible(store, b, g) == []
    assert await unread(store, b) == {}
    (fifth,) = await store.save_messages([gmsg(a, g)])
    assert fifth.recipients == (a, b)
    assert await visible(store, b, g) == [5]
    assert await unread(store, b) == {(SESSION_GROUP, g): 1}
    (session,) = await store.recent_sessions(b, 0)
    assert (session.removed, session.latest_msg_id) == (False, 5)
    (saved,) = await store.save_messages([gmsg(b, g)])
    assert saved.msg_id == 6


async def test_member_changes_that_change_nothing(store: SqlStore) -> None:
    g, (a, b) = await group_of(store, 2)
    c, d = await make_users(store, 2)
    group, changed = await store.change_group_members(g, [a, b, 99_999, 0], [c, 99_999])
    assert (changed, group.members, group.version) == ([], (a, b), 1)
    group, changed = await store.change_group_members(g, [d, c, d], [b, a])  # in order, once each
    assert (changed, group.members, group.version) == ([a, b, c, d], (c, d), 2)
    group, changed = await store.change_group_members(g, [a, c], [a, c])  # in both lists: left alone
    assert (changed, group.members, group.version) == ([], (c, d), 2)
    (after,) = await store.groups_for_member(c, [g])
    assert (after.members, after.version, after.creator_id) == ((c, d), 2, a)
    with pytest.raises(UnknownGroup):
        await store.change_group_members(99_999, [a], [])
    assert issubclass(UnknownGroup, NotFound) and not issubclass(UnknownGroup, NotMember)


async def test_normal_groups_and_groups_for_member(store: SqlStore) -> None:
    a, b, c = await make_users(store, 3)
    g1 = await store.create_group("one", "", a, NORMAL, [b])
    g2 = await store.create_group("two", "", a, TEMPORARY, [b, c])
    g3 = await store.create_group("three", "", b, NORMAL, [c])
    assert await store.normal_groups_of(a) == [(g1.id, 1)]
    assert await store.normal_groups_of(b) == [(g1.id, 1), (g3.id, 1)]
    await store.change_group_members(g1.id, [c], [])
    assert await store.normal_groups_of(c) == [(g1.id, 2), (g3.id, 1)]
    ids = [g3.id, g2.id, g1.id, 99_999, g2.id]
    assert [(g.id, g.members, g.version) for g in await store.groups_for_member(a, ids)] == [
        (g1.id, (a, b, c), 2),
        (g2.id, (a, b, c), 1),
    ]
    assert [g.id for g in await store.groups_for_member(b, ids)] == [g1.id, g2.id, g3.id]
    assert await store.groups_for_member(a, []) == []


async def test_big_groups(store: SqlStore) -> None:
    # More members than one IN list takes (100) everywhere a list is split.
    g, users = await group_of(store, 230)
    (saved,) = await store.save_messages([gmsg(users[5], g)])
    assert saved.recipients == tuple(users)
    group, changed = await store.change_group_members(g, [], users[1:151])
    assert (changed, group.members) == (users[1:151], (users[0], *users[151:]))
    assert await unread(store, users[100]) == {}
    assert await unread(store, users[200]) == {(SESSION_GROUP, g): 1}
    (after,) = await store.groups_for_member(users[0], [g])
    assert after.members == group.members


async def test_shield(store: SqlStore) -> None:
    g, (a, b, c) = await group_of(store, 3)
    await store.set_group_shield(g, b, 1)
    assert [x.shield for x in await store.groups_for_member(b, [g])] == [1]
    assert [x.shield for x in await store.groups_for_member(a, [g])] == [0]
    await store.set_group_shield(g, b, 1)  # again: no error
    await store.set_group_shield(g, b, 0)
    assert [x.shield for x in await store.groups_for_member(b, [g])] == [0]
    (outsider,) = await make_users(store, 1)
    for group_id, user in [(g, outsider), (99_999, a)]:
        with pytest.raises(NotMember):
            await store.set_group_shield(group_id, user, 1)
    with pytest.raises(InvalidArgument):
        await store.set_group_shield(g, a, 2)
    # A member that leaves and comes back starts unmuted.
    await store.set_group_shield(g, c, 1)
    await store.change_group_members(g, [], [c])
    with pytest.raises(NotMember):
        await store.set_group_shield(g, c, 1)
    await store.change_group_members(g, [c], [])
    assert [x.shield for x in await store.groups_for_member(c, [g])] == [0]


async def test_member_changes_and_sends_are_serialised(store: SqlStore) -> None:
    # On MySQL these run on separate connections: a message goes to exactly
    # the members at its commit, so the recipients of the messages in id
    # order switch from with c to without c exactly once, and c's own sends
    # either commit before its removal or fail.
    g, (a, b, c) = await group_of(store, 3)

    async def send(user: int) -> SavedMessage | None:
        try:
            (saved,) = await store.save_messages([gmsg(user, g)])
        except NotMember:
            return None
        return saved

    sends = [send(c if i % 3 == 0 else a) for i in range(30)]
    results = await asyncio.gather(*sends[:15], store.change_group_members(g, [], [c]), *sends[15:])
    saved = sorted((r for r in results if isinstance(r, SavedMessage)), key=lambda s: s.msg_id)
    assert [s.msg_id for s in saved] == list(range(1, len(saved) + 1))
    with_c = [s.recipients == (a, b, c) for s in saved]
    assert with_c == sorted(with_c, reverse=True)
    assert all(s.recipients in {(a, b, c), (a, b)} for s in saved)
    stored = await store.message_list(a, SESSION_GROUP, g, 0, 100)
    assert [m.msg_id for m in stored] == list(range(len(saved), 0, -1))
    assert all(m.msg_id <= with_c.count(True) for m in stored if m.from_user_id == c)
    assert await unread(store, c) == {}


async def test_a_send_queued_behind_a_member_change_goes_to_the_members_after_it(store: SqlStore) -> None:
    # The change waits for the group's counter, then the send does (its
    # dedup lookup ran before the change committed: on InnoDB a plain read
    # of the members would still see c in that older snapshot).
    g, (a, b, c) = await group_of(store, 3)
    async with store.db.transaction() as tx:
        await tx.fetchall(
            "SELECT last_msg_id FROM conversations WHERE session_type = ? AND conv_id = ?"
            f"{store.db.dialect.for_update}",
            (SESSION_GROUP, g),
        )
        change = asyncio.create_task(store.change_group_members(g, [], [c]))
        await asyncio.sleep(0.1)
        send = asyncio.create_task(store.save_messages([gmsg(a, g, client_msg_id=1)]))
        await asyncio.sleep(0.1)
        assert not change.done() and not send.done()
    assert (await change)[1] == [c]
    (saved,) = await send
    assert saved.recipients == (a, b)
    assert await unread(store, c) == {}


# A property test: random member changes, batches of sends (with resends)
# and reads in one group, checked against a model of what the store must hold.
_user = st.integers(0, 3)
_op = st.one_of(
    st.tuples(st.just("send"), st.lists(st.tuples(_user, st.integers(0, 2)), min_size=1, max_size=3)),
    st.tuples(st.just("add"), _user),
    st.tuples(st.just("remove"), _user),
    st.tuples(st.just("read"), _user),
)


@dataclass
class GroupModel:
    members: set[int]
    last: int = 0
    joined: dict[int, int] = field(default_factory=dict)
    unread: dict[int, int] = field(default_factory=dict)
    sent: dict[tuple[int, int], int] = field(default_factory=dict)  # (sender, client id): msg id


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.sets(_user, max_size=3), ops=st.lists(_op, min_size=1, max_size=10))
async def test_groups_match_a_model(store: SqlStore, initial: set[int], ops: list) -> None:
    users = await make_users(store, 4)
    g = (await store.create_group("g", "", users[0], TEMPORARY, [users[i] for i in initial])).id
    model = GroupModel({users[0], *(users[i] for i in initial)})
    for kind, arg in ops:
        if kind == "add" and users[arg] not in model.members:
            model.members.add(users[arg])
            model.joined[users[arg]] = model.last
        elif kind == "remove" and users[arg] in model.members:
            model.members.discard(users[arg])
            model.unread[users[arg]] = 0
        elif kind == "read":
            await store.mark_read(users[arg], SESSION_GROUP, g, 0)
            model.unread[users[arg]] = 0
        if kind in ("add", "remove"):
            change = [users[arg]]
            await store.change_group_members(g, *((change, []) if kind == "add" else ([], change)))
        if kind != "send":
            continue
        batch = [gmsg(users[u], g, b"same", client_msg_id=c) for u, c in arg]
        after = replace(model, unread=dict(model.unread), sent=dict(model.sent))
        expected: list[SavedMessage] = []
        refused = False
        for m in batch:
            key = (m.from_user_id, m.client_msg_id)
            if m.client_msg_id and key in after.sent:
                members_now = tuple(sorted(after.members))  # a duplicate is pushed to them again
                expected.append(SavedMessage(after.sent[key], m.create_time, True, members_now))
                continue
            if m.from_user_id not in after.members:
                refused = True
                break
            after.last += 1
            if m.client_msg_id:
                after.sent[key] = after.last
            for member in after.members - {m.from_user_id}:
                after.unread[member] = after.unread.get(member, 0) + 1
            expected.append(SavedMessage(after.last, m.create_time, False, tuple(sorted(after.members))))
        if refused:
            with pytest.raises(NotMember):
                await store.save_messages(batch)
        else:
            assert await store.save_messages(batch) == expected
            model = after
    for user in users:
        count = model.unread.get(user, 0)
        assert await unread(store, user) == ({(SESSION_GROUP, g): count} if count else {})
        seen = list(range(model.last, model.joined.get(user, 0), -1)) if user in model.members else []
        assert await visible(store, user, g) == seen
        assert await store.latest_msg_id(user, SESSION_GROUP, g) == (seen[0] if seen else 0)
        groups = [x.members for x in await store.groups_for_member(user, [g])]
        assert groups == ([tuple(sorted(model.members))] if user in model.members else [])
