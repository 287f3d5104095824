"""The directory: profile changes and incremental sync, departments, devices."""

from __future__ import annotations

import time
from typing import Any

import pytest

from common.errors import InvalidArgument
from db_proxy.storage.model import Department, DuplicateName, User
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import make_users

CHANGES: dict[str, Any] = {
    "nick": "Zoë 😀",
    "gender": 2,
    "avatar": "http://avatars/2.png",
    "department_id": 7,
    "email": "zoe@example.com",
    "real_name": "张三",
    "tel": "+86 10 1234",
    "domain": "zoe",
    "status": 1,
    "sign_info": "it's ok; DROP TABLE users",
    "disabled": True,
    "password_hash": "scrypt$new",
}


async def set_updated(store: SqlStore, user_id: int, updated: int) -> None:
    async with store.db.transaction() as tx:
        await tx.execute("UPDATE users SET updated = ? WHERE id = ?", (updated, user_id))


async def test_update_user_profile(store: SqlStore) -> None:
    user_id = await store.create_user("zoe", "scrypt$old", nick="z")
    (before,) = await store.users_by_id([user_id])
    changed = await store.update_user_profile(user_id, **CHANGES)
    assert changed == User(id=user_id, name="zoe", updated=changed.updated if changed else 0, **CHANGES)
    assert changed.updated > before.updated - 1 and changed.updated >= int(time.time()) - 1
    assert await store.user_by_name("zoe") == changed
    one = await store.update_user_profile(user_id, sign_info="")
    assert one is not None and (one.sign_info, one.nick, one.disabled) == ("", "Zoë 😀", True)
    assert await store.update_user_profile(99_999, nick="ghost") is None


async def test_bad_profile_changes_change_nothing(store: SqlStore) -> None:
    user_id = await store.create_user("zoe", "h", nick="z")
    await set_updated(store, user_id, 100)
    for bad in ({"name": ""}, {"id": 5}, {"shoe_size": 44}, {"nick": "n" * 65}, {"tel": "9" * 33}):
        with pytest.raises(InvalidArgument):
            await store.update_user_profile(user_id, sign_info="ok", **bad)
    for wrong_type in ({"gender": "2"}, {"nick": 3}, {"disabled": 1}):
        with pytest.raises(InvalidArgument):
            await store.update_user_profile(user_id, **wrong_type)
    (user,) = await store.users_by_id([user_id])
    assert (user.name, user.nick, user.sign_info, user.updated) == ("zoe", "z", "", 100)


async def test_updated_always_moves_on(store: SqlStore) -> None:
    (user_id,) = await make_users(store, 1)
    now = int(time.time())
    await set_updated(store, user_id, 100)  # long ago: becomes now
    first = await store.update_user_profile(user_id, nick="a")
    assert first is not None and now <= first.updated <= int(time.time())
    # Two changes in the same second (and a clock behind): each one later.
    second = await store.update_user_profile(user_id, nick="b")
    third = await store.update_user_profile(user_id, nick="c")
    assert second is not None and third is not None
    assert first.updated < second.updated < third.updated
    await set_updated(store, user_id, now + 1000)
    ahead = await store.update_user_profile(user_id, nick="d")
    assert ahead is not None and ahead.updated == now + 1001


async def test_users_updated_since(store: SqlStore) -> None:
    a, b, c = await make_users(store, 3)
    for user_id, updated in ((a, 300), (b, 100), (c, 200)):
        await set_updated(store, user_id, updated)
    assert [u.id for u in await store.users_updated_since(0)] == [b, c, a]
    assert [u.id for u in await store.users_updated_since(100)] == [c, a]
    assert await store.users_updated_since(300) == []
    # A client that synced up to what it saw last gets each later change,
    # disabled users included, even two changes in one second.
    changed = await store.update_user_profile(b, disabled=True)
    assert changed is not None
    assert await store.users_updated_since(300) == [changed]
    again = await store.update_user_profile(b, nick="again")
    assert await store.users_updated_since(changed.updated) == [again]


async def test_departments(store: SqlStore) -> None:
    before = int(time.time())
    eng = await store.create_department("Engineering")
    web = await store.create_department("Web", parent_id=eng, priority=2)
    other = await store.create_department("Web", parent_id=eng + 1000)  # same name, other parent
    with pytest.raises(DuplicateName):
        await store.create_department("Web", parent_id=eng)
    for bad in ("", "n" * 65):
        with pytest.raises(InvalidArgument):
            await store.create_department(bad)
    for parent_id, priority in ((-1, 0), (0, 2**31)):
        with pytest.raises(InvalidArgument):
            await store.create_department("x", parent_id, priority)
    default = await store.default_department()  # made by migrate
    found = [d for d in await store.departments_updated_since(0) if d.id != default.id]
    assert [(d.id, d.name, d.parent_id, d.priority, d.deleted) for d in found] == [
        (eng, "Engineering", 0, 0, False),
        (web, "Web", eng, 2, False),
        (other, "Web", eng + 1000, 0, False),
    ]
    assert all(before <= d.updated <= int(time.time()) for d in found)
    assert await store.departments_updated_since(max(d.updated for d in found)) == []
    async with store.db.transaction() as tx:
        await tx.execute("UPDATE departments SET updated = ?, deleted = 1 WHERE id = ?", (2**40, web))
    assert await store.departments_updated_since(2**40 - 1) == [
        Department(web, "Web", eng, 2, deleted=True, updated=2**40)
    ]


async def device_rows(store: SqlStore) -> list[tuple[int, ...]]:
    async with store.db.reading() as tx:
        return await tx.fetchall(
            "SELECT user_id, client_type, token FROM devices ORDER BY user_id, client_type"
        )


async def test_device_tokens(store: SqlStore) -> None:
    await store.set_device_token(1, 0x11, "ios-token-1")
    await store.set_device_token(1, 0x12, "android-token")
    await store.set_device_token(2, 0x11, "ios-token-2")
    await store.set_device_token(1, 0x11, "ios-token-1b")  # replaces the one before
    assert await device_rows(store) == [
        (1, 0x11, "ios-token-1b"),
        (1, 0x12, "android-token"),
        (2, 0x11, "ios-token-2"),
    ]
    with pytest.raises(InvalidArgument):
        await store.set_device_token(1, 0x11, "t" * 256)
    with pytest.raises(InvalidArgument):
        await store.set_device_token(1, -1, "t")
    await store.set_device_token(1, 0x11, "t" * 255)
    assert (await device_rows(store))[0] == (1, 0x11, "t" * 255)


async def test_push_shield(store: SqlStore) -> None:
    assert await store.push_shield(1) == 0
    await store.set_push_shield(1, 1)
    assert (await store.push_shield(1), await store.push_shield(2)) == (1, 0)
    await store.set_push_shield(1, 1)
    await store.set_push_shield(2, 0)
    await store.set_push_shield(1, 0)
    assert (await store.push_shield(1), await store.push_shield(2)) == (0, 0)
    with pytest.raises(InvalidArgument):
        await store.set_push_shield(1, 2)
