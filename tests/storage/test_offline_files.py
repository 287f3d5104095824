"""The offline-file list on both engines: add (idempotent), list (receiver, unexpired, newest
first, bounded), delete (receiver or sender only)."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from db_proxy.storage.model import InvalidValue, OfflineFile
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import make_users

NOW = 1_800_000_000


def offline(
    from_user: int, to_user: int, name: str = "report.pdf", expires_at: int = NOW + 3600
) -> OfflineFile:
    key = secrets.token_hex(16)
    return OfflineFile(
        from_user_id=from_user,
        to_user_id=to_user,
        task_key=key,
        receiver_task_id=f"{key}-{'ab' * 12}",
        file_name=name,
        file_size=12345,
        created=NOW - 10,
        expires_at=expires_at,
    )


async def test_added_files_are_listed_for_their_receiver_only(store: SqlStore) -> None:
    a, b, c = await make_users(store, 3)
    first = offline(a, b, "一.txt")
    second = offline(c, b, "two.bin")
    assert await store.add_offline_file(first)
    assert await store.add_offline_file(second)
    assert await store.offline_files(b, NOW, 100) == [second, first]  # newest first
    assert await store.offline_files(a, NOW, 100) == []
    assert await store.offline_files(b, NOW, 1) == [second]


async def test_adding_twice_keeps_the_first_row(store: SqlStore) -> None:
    a, b = await make_users(store, 2)
    file = offline(a, b)
    assert await store.add_offline_file(file)
    assert not await store.add_offline_file(dataclasses.replace(file, file_name="other"))
    assert await store.offline_files(b, NOW, 100) == [file]


async def test_expired_files_are_not_listed(store: SqlStore) -> None:
    a, b = await make_users(store, 2)
    file = offline(a, b, expires_at=NOW + 5)
    await store.add_offline_file(file)
    assert await store.offline_files(b, NOW + 4, 100) == [file]
    assert await store.offline_files(b, NOW + 5, 100) == []


async def test_adding_removes_the_expired_rows(store: SqlStore) -> None:
    a, b = await make_users(store, 2)
    old = offline(a, b, expires_at=NOW - 100)
    await store.add_offline_file(old)
    assert await store.offline_files(b, 0, 100) == [old]
    new = offline(a, b)
    await store.add_offline_file(new)  # created NOW - 10: old has expired by then
    assert await store.offline_files(b, 0, 100) == [new]


async def test_only_the_receiver_or_the_sender_deletes(store: SqlStore) -> None:
    a, b, c = await make_users(store, 3)
    mine, theirs = offline(a, b), offline(a, b)
    await store.add_offline_file(mine)
    await store.add_offline_file(theirs)
    assert await store.delete_offline_file(c, mine.task_key) is None
    assert await store.delete_offline_file(b, mine.task_key) == mine
    assert await store.delete_offline_file(b, mine.task_key) is None  # gone
    assert await store.delete_offline_file(a, theirs.task_key) == theirs  # the sender may too
    assert await store.offline_files(b, NOW, 100) == []
    assert await store.delete_offline_file(b, "not a key") is None


@pytest.mark.parametrize(
    "change",
    [
        {"task_key": "XYZ"},
        {"task_key": "A" * 32},
        {"file_name": ""},
        {"file_name": "x" * 256},
        {"file_name": b"\xff"},
        {"file_size": 0},
        {"to_user_id": 0},
        {"receiver_task_id": "t" * 65},
    ],
)
async def test_values_that_do_not_fit_are_refused(store: SqlStore, change: dict[str, object]) -> None:
    a, b = await make_users(store, 2)
    with pytest.raises(InvalidValue):
        await store.add_offline_file(dataclasses.replace(offline(a, b), **change))  # type: ignore[arg-type]
    assert await store.offline_files(b, NOW, 100) == []
