"""Databases for tests: a throwaway MySQL database or a SQLite file.

The MySQL server is the one named by IMCLUSTER_TEST_MYSQL (default
``mysql://root@127.0.0.1:3306/test``); only its host, port and credentials
are used, each test database gets a unique name of its own.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from db_proxy.storage import create_database_if_missing
from db_proxy.storage.mysql import drop_database

DEFAULT_TEST_MYSQL = "mysql://root@127.0.0.1:3306/test"


def mysql_test_server() -> str:
    return os.environ.get("IMCLUSTER_TEST_MYSQL", DEFAULT_TEST_MYSQL)


class FreshMysqlDatabase:
    """A new, empty database ``imtest_<hex>``, dropped on exit.

    ``async with`` inside a running event loop, plain ``with`` outside one
    (it runs its own loop).
    """

    def __init__(self) -> None:
        parts = urlsplit(mysql_test_server())
        self.url = parts._replace(path=f"/imtest_{secrets.token_hex(6)}").geturl()

    async def __aenter__(self) -> str:
        await create_database_if_missing(self.url)
        return self.url

    async def __aexit__(self, *exc_info: object) -> None:
        await drop_database(self.url)

    def __enter__(self) -> str:
        return asyncio.run(self.__aenter__())

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run(self.__aexit__())


def fresh_mysql_url() -> FreshMysqlDatabase:
    """``async with fresh_mysql_url() as url:`` (or ``with``) a database of its own."""
    return FreshMysqlDatabase()


def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'im.db'}"
