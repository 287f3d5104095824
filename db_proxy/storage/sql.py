"""The SQL store: every business query, written once for both engines.

The queries live in one module per area (:mod:`.sql_messages`,
:mod:`.sql_groups`, :mod:`.sql_directory`, :mod:`.sql_files`, :mod:`.sql_push`,
:mod:`.sql_audit`, :mod:`.sql_export`, :mod:`.sql_retention`), each a mixin
over the engine's :class:`~.sql_base.Database`; :class:`SqlStore` puts them together.
"""

from __future__ import annotations

from . import schema
from .model import StoreError
from .sql_audit import AuditQueries
from .sql_base import Database, Dialect, Row, TransientError, Tx, UniqueViolation
from .sql_directory import DirectoryQueries
from .sql_export import ExportQueries
from .sql_files import FileQueries
from .sql_groups import GroupQueries
from .sql_messages import MessageQueries
from .sql_push import PushQueries
from .sql_retention import RetentionQueries

__all__ = ["Database", "Dialect", "Row", "SqlStore", "TransientError", "Tx", "UniqueViolation"]


class SqlStore(
    DirectoryQueries,
    MessageQueries,
    GroupQueries,
    FileQueries,
    PushQueries,
    AuditQueries,
    ExportQueries,
    RetentionQueries,
):
    """The :class:`~db_proxy.storage.model.Store` over any :class:`Database`.

    Usable as ``async with open_store(url) as store:`` (opens and closes).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine

    async def __aenter__(self) -> SqlStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def migrate(self) -> int:
        version = await schema.migrate(self.db)
        # Databases from before search keys were computed (migration 4 is SQL; pinyin is not).
        await self.fill_search_keys()
        return version

    async def ping(self) -> bool:
        try:
            async with self.db.reading() as tx:
                await tx.fetchall("SELECT 1")
        except StoreError:
            return False
        return True
