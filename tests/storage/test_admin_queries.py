"""What the admin API needs of the store: user lists and deletion, bulk
creation, department changes and deletion, group listing and dismissal,
trusted (system) messages; and migration 3 on a version-2 database."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.errors import InvalidArgument
from db_proxy.storage import open_store
from db_proxy.storage.model import (
    SESSION_GROUP,
    DepartmentCycle,
    DepartmentNotEmpty,
    DuplicateName,
    NotMember,
    UnknownDepartment,
    UnknownGroup,
)
from db_proxy.storage.schema import DEFAULT_DEPARTMENT, LATEST_VERSION
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import gmsg, make_users
from tests.storage.test_schema import migrate_to

NORMAL, TEMPORARY = 1, 2


async def test_list_users_pages_and_searches(store: SqlStore) -> None:
    ids = {
        n: await store.create_user(n, "h", nick=nick)
        for n, nick in [("ann", "Annie"), ("BOB", "x_y"), ("cy", "")]
    }
    users, total = await store.list_users(0, 10)
    assert [u.id for u in users] == list(ids.values()) and total == 3
    page, total = await store.list_users(1, 1)
    assert ([u.name for u in page], total) == (["BOB"], 3)
    assert [u.name for u in (await store.list_users(0, 10, "AN"))[0]] == ["ann"]
    assert [u.name for u in (await store.list_users(0, 10, "bob"))[0]] == ["BOB"]
    assert [u.name for u in (await store.list_users(0, 10, "x_y"))[0]] == ["BOB"]
    for literal in ("x%", "!", "'"):  # no wildcards, no quoting trouble
        assert await store.list_users(0, 10, literal) == ([], 0)
    assert [u.name for u in (await store.list_users(0, 10, "_"))[0]] == ["BOB"]
    await store.delete_user(ids["ann"])
    assert [u.name for u in (await store.list_users(0, 10))[0]] == ["BOB", "cy"]


async def test_delete_user(store: SqlStore) -> None:
    a, b = await make_users(store, 2)
    (before,) = await store.users_by_id([a])
    group = await store.create_group("g", "", b, NORMAL, [a])
    deleted = await store.delete_user(a)
    assert deleted == before
    (after,) = await store.users_by_id([a])  # kept: old messages name it
    assert (after.deleted, after.disabled) == (True, True)
    assert after.name == f"{before.name} (deleted #{a})" and after.updated >= before.updated
    assert await store.user_by_name(before.name) is None
    assert await store.delete_user(a) is None
    assert await store.delete_user(99_999) is None
    # Its groups are the caller's to leave (the user service; joining none any more is
    # the group service's check: tests/services).
    assert await store.group_ids_of(a) == [group.id]
    after_change, changed = await store.change_group_members(group.id, [], [a])
    assert (after_change.members, changed) == ((b,), [a])
    assert await store.group_ids_of(a) == []
    # The name is free again, and a long one still fits its column.
    assert await store.create_user(before.name, "h") > a
    long_id = await store.create_user("n" * 64, "h")
    await store.delete_user(long_id)
    (long,) = await store.users_by_id([long_id])
    assert len(long.name) == 64 and long.name.endswith(f" (deleted #{long_id})")


async def test_create_users_in_one_go(store: SqlStore) -> None:
    default = (await store.default_department()).id
    await store.create_user("taken", "h")
    ids = await store.create_users(
        [
            ("n1", "h1", {"nick": "N1"}),
            ("taken", "h", {}),
            ("n2", "h2", {"department_id": 3}),
            ("n1", "h", {}),
        ]
    )
    assert ids[1] is None and ids[3] is None and ids[0] and ids[2]
    users = await store.users_by_name(["n1", "n2", "nobody"])
    assert [(u.id, u.name, u.password_hash, u.nick, u.department_id) for u in users] == [
        (ids[0], "n1", "h1", "N1", default),
        (ids[2], "n2", "h2", "", 3),
    ]
    with pytest.raises(InvalidArgument):
        await store.create_users([("n3", "h", {}), ("n4", "h", {"nick": "n" * 65})])
    assert await store.users_by_name(["n3"]) == []
    assert await store.create_users([]) == []


async def test_departments(store: SqlStore) -> None:
    top = await store.create_department("Top")
    sub = await store.create_department("Sub", top)
    leaf = await store.create_department("Leaf", sub)
    assert [d.name for d in await store.departments()] == [DEFAULT_DEPARTMENT, "Top", "Sub", "Leaf"]
    before = await store.department_by_id(leaf)
    moved = await store.update_department(leaf, parent_id=top, priority=4)
    assert before is not None and (moved.parent_id, moved.priority, moved.name) == (top, 4, "Leaf")
    assert moved.updated >= before.updated
    for parent in (top, sub, leaf):
        with pytest.raises(DepartmentCycle):
            await store.update_department(top, parent_id=parent)
    with pytest.raises(UnknownDepartment):
        await store.update_department(top, parent_id=4242)
    with pytest.raises(UnknownDepartment):
        await store.update_department(4242, name="x")
    with pytest.raises(DuplicateName):
        await store.update_department(leaf, name="Sub")
    with pytest.raises(InvalidArgument):
        await store.update_department(leaf, name="")
    user = await store.create_user("in_sub", "h", department_id=sub)
    with pytest.raises(DepartmentNotEmpty):
        await store.delete_department(top)  # sub-departments
    with pytest.raises(DepartmentNotEmpty):
        await store.delete_department(sub)  # a user
    await store.update_user_profile(user, department_id=0)  # to the default department
    sub_before = await store.department_by_id(sub)
    assert await store.delete_department(sub) == sub_before
    gone = await store.department_by_id(sub)
    assert gone is not None and gone.deleted and gone.name == f"Sub (deleted #{sub})"
    with pytest.raises(UnknownDepartment):
        await store.delete_department(sub)
    assert [d.name for d in await store.departments()] == [DEFAULT_DEPARTMENT, "Top", "Leaf"]
    assert any(d.id == sub and d.deleted for d in await store.departments_updated_since(0))
    assert await store.create_department("Sub", top) > leaf  # the name is free again


async def test_group_admin(store: SqlStore) -> None:
    a, b, c = await make_users(store, 3)
    g1 = await store.create_group("one", "", a, NORMAL, [b])
    g2 = await store.create_group("two", "x", b, TEMPORARY, [c])
    assert await store.group_by_id(g1.id) == g1
    assert await store.list_groups(0, 10) == ([g1, g2], 2)
    assert await store.list_groups(1, 10) == ([g2], 2)
    assert await store.group_by_id(4242) is None
    await store.save_messages([gmsg(a, g1.id)])
    after, removed = await store.dismiss_group(g1.id)
    assert (after.members, after.version, after.dismissed, removed) == ((), 2, True, [a, b])
    assert await store.group_by_id(g1.id) == after
    assert await store.list_groups(0, 10) == ([g2], 1)
    assert await store.unread_sessions(b) == []
    for change in (store.dismiss_group(g1.id), store.change_group_members(g1.id, [a], [])):
        with pytest.raises(UnknownGroup):
            await change
    with pytest.raises(NotMember):
        await store.save_messages([gmsg(a, g1.id)])


async def test_trusted_messages_reach_members_without_the_sender_joining(store: SqlStore) -> None:
    system, a, b = await make_users(store, 3)
    group = await store.create_group("g", "", a, NORMAL, [b])
    with pytest.raises(NotMember):
        await store.save_messages([gmsg(system, group.id)])
    (saved,) = await store.save_messages([replace(gmsg(system, group.id), trusted=True)])
    assert saved.recipients == (a, b)
    assert {s.peer_id: s.unread_cnt for s in await store.unread_sessions(a)} == {group.id: 1}
    assert await store.unread_sessions(system) == []
    (stored,) = await store.message_list(b, SESSION_GROUP, group.id, 0, 10)
    assert stored.from_user_id == system
    await store.dismiss_group(group.id)
    (empty,) = await store.save_messages([replace(gmsg(system, group.id), trusted=True)])
    assert (empty.msg_id, empty.recipients) == (2, ())


async def test_a_version_2_database_gets_deleted_users(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(store_url) as store:
        await migrate_to(store, 2, monkeypatch)
        async with store.db.transaction() as tx:
            await tx.insert("INSERT INTO users (name, password_hash) VALUES (?, ?)", ("old", "h"))
    async with open_store(store_url) as store:
        assert await store.migrate() == LATEST_VERSION
        (users, total) = await store.list_users(0, 10)
        assert ([u.name for u in users], total, users[0].deleted) == (["old"], 1, False)
