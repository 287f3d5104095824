"""Every storage test runs on both engines: SQLite and the test MariaDB/MySQL."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator

import pytest

from db_proxy.storage import open_store
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, NewMessage
from db_proxy.storage.sql import SqlStore
from tests.support.databases import fresh_mysql_url, sqlite_url

ENGINES = [pytest.param("sqlite", id="sqlite"), pytest.param("mysql", id="mysql", marks=pytest.mark.mysql)]


@pytest.fixture(params=ENGINES)
async def store_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """A URL to an empty database of the test's own."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        async with fresh_mysql_url() as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """An open, migrated store."""
    async with open_store(store_url) as opened:
        await opened.migrate()
        yield opened


def msg(
    from_user_id: int,
    to_id: int,
    data: bytes = b"hello",
    client_msg_id: int = 0,
    create_time: int = 1_700_000_000,
    msg_type: int = 1,
) -> NewMessage:
    """A 1:1 message."""
    return NewMessage(from_user_id, SESSION_SINGLE, to_id, msg_type, data, create_time, client_msg_id)


def gmsg(
    from_user_id: int,
    group_id: int,
    data: bytes = b"hi all",
    client_msg_id: int = 0,
    create_time: int = 1_700_000_000,
    msg_type: int = 0x11,
) -> NewMessage:
    """A group message."""
    return NewMessage(from_user_id, SESSION_GROUP, group_id, msg_type, data, create_time, client_msg_id)


_names = itertools.count()


async def make_users(store: SqlStore, n: int) -> list[int]:
    """``n`` new users (names of their own: a store may be shared by examples), ascending ids."""
    return [await store.create_user(f"user{next(_names)}", "h") for _ in range(n)]


def conv_id(a: int, b: int) -> int:
    low, high = sorted((a, b))
    return low << 32 | high


def body_hash(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
