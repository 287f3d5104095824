"""Users: creation, unique names, lookups."""

from __future__ import annotations

import time
from typing import Any

import pytest

from common.errors import InvalidArgument
from db_proxy.storage.model import DuplicateName, User
from db_proxy.storage.sql import SqlStore

PROFILE: dict[str, Any] = {
    "nick": "Zoë 😀",
    "gender": 2,
    "avatar": "http://avatars/1.png",
    "department_id": 7,
    "email": "zoe@example.com",
    "real_name": "张三",
    "tel": "+86 10 1234",
    "domain": "zoe",
    "status": 1,
    "sign_info": "it's ok; DROP TABLE users",
    "disabled": True,
}


async def test_create_and_find_a_user(store: SqlStore) -> None:
    before = int(time.time())
    user_id = await store.create_user("zoe", "scrypt$abc", **PROFILE)
    found = await store.user_by_name("zoe")
    assert found is not None
    assert found == User(id=user_id, name="zoe", password_hash="scrypt$abc", updated=found.updated, **PROFILE)
    assert before <= found.updated <= int(time.time())
    assert await store.user_by_name("nobody") is None


async def test_defaults_and_increasing_ids(store: SqlStore) -> None:
    first = await store.create_user("a", "h")
    second = await store.create_user("b", "h")
    assert 0 < first < second
    (user,) = await store.users_by_id([first])
    default = await store.default_department()
    assert (user.nick, user.gender, user.department_id, user.disabled) == ("", 0, default.id, False)
    assert user.domain == "a"  # the search key: the login name


async def test_names_are_unique_and_case_sensitive(store: SqlStore) -> None:
    await store.create_user("alice", "h1")
    with pytest.raises(DuplicateName):
        await store.create_user("alice", "h2")
    other = await store.create_user("Alice", "h3")  # same on both engines: exact comparison
    found = await store.user_by_name("alice")
    assert found is not None and found.password_hash == "h1"
    assert [u.name for u in await store.users_by_id([other])] == ["Alice"]


async def test_users_by_id(store: SqlStore) -> None:
    ids = [await store.create_user(f"user{i}", "h") for i in range(5)]
    found = await store.users_by_id([ids[3], 999_999, ids[1], ids[3], 0, -4, 2**40])
    assert [(u.id, u.name) for u in found] == [(ids[1], "user1"), (ids[3], "user3")]
    assert await store.users_by_id([]) == []
    many = await store.users_by_id(list(range(1, 400)))
    assert [u.id for u in many] == sorted(ids)


async def test_bad_profiles_are_refused_and_nothing_is_stored(store: SqlStore) -> None:
    with pytest.raises(InvalidArgument):
        await store.create_user("x", "h", shoe_size=44)
    with pytest.raises(InvalidArgument):
        await store.create_user("x", "h", gender="2")
    with pytest.raises(InvalidArgument):
        await store.create_user("x", "h", nick=3)
    for bad in ({"nick": "n" * 65}, {"department_id": -1}, {"status": 2**31}):
        with pytest.raises(InvalidArgument):
            await store.create_user("x", "h", **bad)
    with pytest.raises(InvalidArgument):
        await store.create_user("n" * 65, "h")
    with pytest.raises(InvalidArgument):
        await store.create_user("", "h")
    assert await store.user_by_name("x") is None
    assert await store.create_user("n" * 64, "h", nick="n" * 64) > 0
