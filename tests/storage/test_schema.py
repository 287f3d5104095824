"""Migrations, persistence across restarts, store URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_proxy.storage import create_database_if_missing, open_store, schema
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, DuplicateName, StoreError
from db_proxy.storage.mysql import MysqlUrl
from db_proxy.storage.schema import LATEST_VERSION, MIGRATIONS
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import gmsg, msg
from tests.support.databases import fresh_mysql_url, sqlite_url


async def test_migrate_is_idempotent(store: SqlStore) -> None:
    assert [v for v, _, _ in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    await store.save_messages([msg(1, 2)])
    assert await store.migrate() == LATEST_VERSION
    assert await store.migrate() == LATEST_VERSION
    async with store.db.reading() as tx:
        rows = await tx.fetchall("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [v for v, _, _ in MIGRATIONS]
    assert await store.latest_msg_id(1, SESSION_SINGLE, 2) == 1
    assert await store.ping()


async def test_a_reopened_store_keeps_everything(store_url: str) -> None:
    async with open_store(store_url) as store:
        await store.migrate()
        user_id = await store.create_user("kept", "h")
        await store.save_messages([msg(1, 2, b"\x00one", client_msg_id=3), msg(2, 1), msg(1, 2)])
    async with open_store(store_url) as store:
        assert await store.migrate() == LATEST_VERSION
        (again, new) = await store.save_messages([msg(1, 2, b"\x00one", client_msg_id=3), msg(2, 1)])
        assert (again.msg_id, again.duplicate, new.msg_id) == (1, True, 4)
        assert {s.peer_id: s.unread_cnt for s in await store.unread_sessions(2)} == {1: 2}
        assert [m.msg_data for m in await store.messages_by_id(1, SESSION_SINGLE, 2, [1])] == [b"\x00one"]
        assert [u.name for u in await store.users_by_id([user_id])] == ["kept"]
        with pytest.raises(DuplicateName):
            await store.create_user("kept", "h")


async def migrate_to(store: SqlStore, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrate as a release that knew only the migrations up to ``version`` did."""
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", MIGRATIONS[:version])
        patch.setattr(schema, "LATEST_VERSION", version)
        assert await store.migrate() == version


async def test_a_version_1_database_is_upgraded_in_place(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(store_url) as store:
        await migrate_to(store, 1, monkeypatch)
        a, b = await store.create_user("a", "h"), await store.create_user("b", "h")
        await store.save_messages([msg(a, b)])
        # A group as migration 1 could hold it (no shield column yet).
        async with store.db.transaction() as tx:
            group_id = await tx.insert(
                "INSERT INTO chat_groups (name, creator_id, group_type) VALUES (?, ?, ?)", ("old", a, 1)
            )
            await tx.executemany(
                "INSERT INTO group_members (group_id, user_id) VALUES (?, ?)", [(group_id, a), (group_id, b)]
            )
        with pytest.raises(StoreError):
            await store.set_group_shield(group_id, a, 1)
    async with open_store(store_url) as store:
        assert await store.migrate() == LATEST_VERSION
        (group,) = await store.groups_for_member(b, [group_id])
        assert (group.name, group.members, group.shield) == ("old", (a, b), 0)
        await store.set_group_shield(group_id, b, 1)
        (saved,) = await store.save_messages([gmsg(a, group_id)])
        assert (saved.msg_id, saved.recipients) == (1, (a, b))
        assert [s.unread_cnt for s in await store.unread_sessions(b)] == [1, 1]
        assert await store.latest_msg_id(a, SESSION_SINGLE, b) == 1
        assert await store.latest_msg_id(b, SESSION_GROUP, group_id) == 1
        await store.set_push_shield(a, 1)
        await store.set_device_token(a, 1, "token")


async def test_a_half_applied_migration_runs_again(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # MySQL commits each DDL statement: a migration that stopped half-way
    # leaves some of its steps applied and the version unrecorded.
    async with open_store(store_url) as store:
        await migrate_to(store, 1, monkeypatch)
        async with store.db.transaction() as tx:
            await tx.execute("ALTER TABLE group_members ADD COLUMN shield TINYINT NOT NULL DEFAULT 0")
            for statement in [s for s in MIGRATIONS[1][2](store.db.dialect) if isinstance(s, str)][:1]:
                await tx.execute(statement)
        assert await store.migrate() == LATEST_VERSION
        await store.set_push_shield(1, 1)
        assert await store.push_shield(1) == 1


async def test_a_newer_schema_is_refused(store: SqlStore) -> None:
    async with store.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)",
            (LATEST_VERSION + 1, "from the future", 0),
        )
    with pytest.raises(StoreError, match="newer"):
        await store.migrate()


@pytest.mark.mysql
async def test_both_engines_have_the_same_tables_and_columns(tmp_path: Path) -> None:
    async with open_store(sqlite_url(tmp_path)) as lite:
        await lite.migrate()
        async with lite.db.reading() as tx:
            tables = [r[0] for r in await tx.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")]
            lite_columns = {
                (table, row[1])
                for table in tables
                if table != "sqlite_sequence"
                for row in await tx.fetchall(f"PRAGMA table_info({table})")
            }
    async with fresh_mysql_url() as url, open_store(url) as my:
        await my.migrate()
        async with my.db.reading() as tx:
            rows = await tx.fetchall(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?",
                (MysqlUrl.parse(url).database,),
            )
    assert {(t, c) for t, c in rows} == lite_columns
    assert ("messages", "msg_data") in lite_columns


async def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///var/deep/im.db") as relative:
        assert relative.engine == "sqlite"
        await relative.migrate()
    assert (tmp_path / "var" / "deep" / "im.db").is_file()
    async with open_store("sqlite:///:memory:") as memory:
        await memory.migrate()
        (saved,) = await memory.save_messages([msg(1, 2)])
        assert [m.msg_id for m in await memory.message_list(2, SESSION_SINGLE, 1, 0, 5)] == [saved.msg_id]
    assert not await create_database_if_missing("sqlite:///var/other.db")


def test_mysql_urls() -> None:
    parsed = MysqlUrl.parse("mysql://im%40user:p%3Ass@db.local/imcluster")
    assert parsed == MysqlUrl("db.local", 3306, "im@user", "p:ss", "imcluster")
    assert MysqlUrl.parse("mysql://root@127.0.0.1:3307/x_1").port == 3307
    for bad in ("mysql://root@host/", "mysql://host/db", "mysql://root@host/db;drop", "postgres://u@h/d"):
        with pytest.raises(ValueError):
            MysqlUrl.parse(bad)
    for bad in ("sqlite:///", "sqlite://relative.db", "redis://x", ""):
        with pytest.raises(ValueError):
            open_store(bad)


@pytest.mark.mysql
async def test_mysql_helpers() -> None:
    async with fresh_mysql_url() as url:
        assert not await create_database_if_missing(url)  # the helper made it already
        async with open_store(url) as store:
            assert store.engine == "mysql"
    unreachable = open_store("mysql://root@127.0.0.1:1/nowhere")
    with pytest.raises(StoreError):
        await unreachable.open()
    assert not await unreachable.ping()  # never opened: reports down instead of raising
