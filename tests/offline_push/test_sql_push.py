"""The offline push's storage reads (db_proxy/storage/sql_push.py) on both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.pb import base_pb2
from db_proxy.storage import open_store
from db_proxy.storage.model import DeviceToken
from db_proxy.storage.sql import SqlStore
from tests.support.databases import fresh_mysql_url, sqlite_url

IOS, ANDROID = base_pb2.CLIENT_TYPE_IOS, base_pb2.CLIENT_TYPE_ANDROID


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        async with open_store(sqlite_url(tmp_path)) as opened:
            await opened.migrate()
            yield opened
        return
    async with fresh_mysql_url() as url, open_store(url) as opened:
        await opened.migrate()
        yield opened


async def test_device_tokens_in_one_batch(store: SqlStore) -> None:
    await store.set_device_token(1, IOS, "ios-1")
    await store.set_device_token(1, ANDROID, "android-1")
    await store.set_device_token(2, IOS, "ios-2")
    await store.set_device_token(3, IOS, "")  # unregistered: not listed
    await store.set_device_token(2, IOS, "ios-2b")  # replaces the one before
    got = await store.device_tokens([1, 2, 3, 4, 0, 2**33])
    assert got == [
        DeviceToken(1, IOS, "ios-1"),
        DeviceToken(1, ANDROID, "android-1"),
        DeviceToken(2, IOS, "ios-2b"),
    ]
    assert await store.device_tokens([]) == []
    # Only the stale token goes: one replaced meanwhile stays.
    removed = await store.remove_device_tokens([DeviceToken(1, IOS, "ios-1"), DeviceToken(2, IOS, "ios-2")])
    assert removed == 1
    assert [d.token for d in await store.device_tokens([1, 2])] == ["android-1", "ios-2b"]


async def test_push_and_group_shields(store: SqlStore) -> None:
    users = [await store.create_user(name, "x") for name in ("ann", "ben", "cid")]
    a, b, c = users
    await store.set_push_shield(a, 1)
    await store.set_push_shield(b, 1)
    await store.set_push_shield(b, 0)
    assert await store.push_shielded([a, b, c, 999]) == {a}
    group = await store.create_group("g", "", a, base_pb2.GROUP_TYPE_NORMAL, [b, c])
    other = await store.create_group("h", "", a, base_pb2.GROUP_TYPE_NORMAL, [b, c])
    await store.set_group_shield(group.id, b, 1)
    await store.set_group_shield(other.id, c, 1)
    assert await store.group_shielded(group.id, users) == {b}
    assert await store.group_shielded(other.id, users) == {c}
    assert await store.group_shielded(group.id, []) == set()
