"""Storage for db_proxy: the only place that knows SQL.

:mod:`db_proxy.storage.model` defines the records and the :class:`Store`
interface the handlers call; ``open_store(url)`` picks the engine.
"""

from __future__ import annotations

from .sql import SqlStore

SQLITE_PREFIX = "sqlite:///"
MYSQL_PREFIX = "mysql://"


def open_store(url: str) -> SqlStore:
    """The store at ``url``, not yet opened: ``await store.open()``, or ``async with``.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (the
    directory is created on open), ``sqlite:///:memory:``, or
    ``mysql://user[:password]@host[:port]/database`` (port 3306 by default;
    the database must exist, see :func:`create_database_if_missing`).
    """
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        from .sqlite import SqliteDatabase

        return SqlStore(SqliteDatabase(url[len(SQLITE_PREFIX) :]))
    if url.startswith(MYSQL_PREFIX):
        from .mysql import MysqlDatabase, MysqlUrl

        return SqlStore(MysqlDatabase(MysqlUrl.parse(url)))
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///path.db or mysql://...")


async def create_database_if_missing(url: str) -> bool:
    """Create a MySQL URL's database if it does not exist; True if it was created.

    For SQLite there is nothing to do (open creates the file): False.
    """
    if url.startswith(MYSQL_PREFIX):
        from .mysql import create_database_if_missing as create

        return await create(url)
    return False
