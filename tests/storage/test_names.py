"""Names and departments as TeamTalk clients need them: every user has a
search key (``domain``) and is in a department that exists, on a new
database and on one upgraded by migration 4."""

from __future__ import annotations

import pytest

from db_proxy.handlers.replies import user_info
from db_proxy.names import search_key
from db_proxy.storage import open_store, schema
from db_proxy.storage.model import DefaultDepartmentFixed, DepartmentNotEmpty
from db_proxy.storage.schema import LATEST_VERSION
from db_proxy.storage.sql import SqlStore
from tests.storage.test_schema import migrate_to


def test_search_keys() -> None:
    assert search_key("zhangsan", "张三") == "zhangsan"  # the nick people see, as pinyin
    assert search_key("张三") == "zhangsan"
    assert search_key("wang", "王 小明") == "wangxiaoming"  # whitespace dropped
    assert search_key("cq", "重庆") == "chongqing"  # a polyphonic character read in its phrase
    assert search_key("li", "李Lee") == "lilee"
    assert search_key("alice", "Alice Smith") == "alice"  # a Latin nick: the login name
    assert search_key("Bob") == "Bob"
    assert len(search_key("x", "张" * 40)) == schema.USER_TEXT_LIMITS["domain"]


async def test_new_users_get_a_key_and_the_default_department(store: SqlStore) -> None:
    default = await store.default_department()
    assert (default.name, default.parent_id) == (schema.DEFAULT_DEPARTMENT, 0)
    assert [d.id for d in await store.departments()] == [default.id]  # migrate made it
    sales = await store.create_department("Sales")
    alice = await store.create_user("alice", "h")
    zhang = await store.create_user("zhangsan", "h", nick="张三", department_id=0)
    chosen = await store.create_user("chosen", "h", nick="李四", domain="ls", department_id=sales)
    batch = await store.create_users([("wu", "h", {"nick": "吴"}), ("vic", "h", {"department_id": sales})])
    users = {u.name: u for u in await store.users_by_id([alice, zhang, chosen, *filter(None, batch)])}
    assert {n: (u.domain, u.department_id) for n, u in users.items()} == {
        "alice": ("alice", default.id),
        "zhangsan": ("zhangsan", default.id),
        "chosen": ("ls", sales),
        "wu": ("wu", default.id),
        "vic": ("vic", sales),
    }
    info = user_info(users["zhangsan"])
    assert (info.user_real_name, info.user_nick_name, info.user_domain) == ("zhangsan", "张三", "zhangsan")

    # A computed key follows the nick; a chosen one stays; "" asks for the computed one.
    renamed = await store.update_user_profile(alice, nick="艾丽斯")
    assert renamed is not None and renamed.domain == "ailisi"
    kept = await store.update_user_profile(chosen, nick="王五")
    assert kept is not None and kept.domain == "ls"
    reset = await store.update_user_profile(chosen, domain="")
    assert reset is not None and reset.domain == "wangwu"
    # Department 0 is the default one.
    moved = await store.update_user_profile(users["vic"].id, department_id=0)
    assert moved is not None and moved.department_id == default.id


async def test_departments_never_lose_their_users(store: SqlStore) -> None:
    default = await store.default_department()
    for change in ({"name": "renamed"}, {"parent_id": await store.create_department("Top")}):
        with pytest.raises(DefaultDepartmentFixed):
            await store.update_department(default.id, **change)
    with pytest.raises(DefaultDepartmentFixed):
        await store.delete_department(default.id)
    assert (await store.update_department(default.id, priority=5)).priority == 5

    temp = await store.create_department("Temp")
    stays = await store.create_user("stays", "h", department_id=temp)
    with pytest.raises(DepartmentNotEmpty):
        await store.delete_department(temp)
    # A deleted user (still shown to clients) moves to the default department.
    await store.delete_user(stays)
    await store.delete_department(temp)
    (gone,) = await store.users_by_id([stays])
    assert gone.department_id == default.id


async def test_migration_4_moves_users_out_of_missing_departments(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(store_url) as store:
        await migrate_to(store, 3, monkeypatch)
        async with store.db.transaction() as tx:
            live = await tx.insert("INSERT INTO departments (name, updated) VALUES ('Live', 1)", ())
            dead = await tx.insert("INSERT INTO departments (name, deleted, updated) VALUES ('x', 1, 1)", ())
            rows = [
                ("in_zero", "", 0),
                ("in_dead", "死", dead),
                ("in_missing", "", 4242),
                ("in_live", "", live),
            ]
            await tx.executemany(
                "INSERT INTO users (name, password_hash, nick, department_id, updated) "
                "VALUES (?, 'h', ?, ?, 10)",
                rows,
            )
    async with open_store(store_url) as store:
        assert await store.migrate() == LATEST_VERSION
        default = await store.default_department()
        assert [d.id for d in await store.departments()] == [live, default.id]
        users = {u.name: u for u in await store.users_updated_since(0)}
        assert {n: u.department_id for n, u in users.items()} == {
            "in_zero": default.id,
            "in_dead": default.id,
            "in_missing": default.id,
            "in_live": live,
        }
        assert {n: u.domain for n, u in users.items()} == {
            "in_zero": "in_zero",
            "in_dead": "si",
            "in_missing": "in_missing",
            "in_live": "in_live",
        }
        assert all(u.updated > 10 for u in users.values())  # clients that synced before see it
        assert default.updated > 10
        # Again: nothing moves, no second default department.
        assert await store.migrate() == LATEST_VERSION
        assert [d.id for d in await store.departments()] == [live, default.id]


async def test_a_default_department_removed_by_hand_comes_back(store: SqlStore) -> None:
    async with store.db.transaction() as tx:
        await tx.execute("UPDATE departments SET name = 'gone', deleted = 1")
    user_id = await store.create_user("late", "h")
    default = await store.default_department()
    (user,) = await store.users_by_id([user_id])
    assert user.department_id == default.id and default.name == schema.DEFAULT_DEPARTMENT
