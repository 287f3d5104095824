"""SQLite engine adapter (aiosqlite): the embedded default.

One writer connection, shared by every coroutine, so write transactions are
serialised by an asyncio.Lock: without it a second coroutine's statements
would land inside the first one's transaction. File databases get a second,
read-only connection; under WAL it reads the last commit while a write (and
its fsync) is in progress. ``:memory:`` has only the one connection, because
a second would open a different, empty database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import aiosqlite

from .model import InvalidValue, StoreError
from .sql_base import Dialect, Row, Step, Tx, UniqueViolation

SQLITE = Dialect(
    name="sqlite",
    autoinc_pk="INTEGER PRIMARY KEY AUTOINCREMENT",  # AUTOINCREMENT: ids never reused
    blob="BLOB",
    table_options="",
    clustered_options=" WITHOUT ROWID",
    upsert_clause="ON CONFLICT ({keys}) DO UPDATE SET",
    new_value="excluded.{column}",
    signed_u64=True,
    for_update="",  # the writer connection holds the database's write lock
)

BUSY_TIMEOUT_MS = 5000  # another process holding the write lock (imctl on a live file)


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return [tuple(row) for row in await self._conn.execute_fetchall(sql, params)]

    async def insert(self, sql: str, params: Sequence[object]) -> int:
        cursor = await self._conn.execute(sql, params)
        if cursor.lastrowid is None:
            raise StoreError("the insert assigned no id")
        return cursor.lastrowid

    async def script(self, steps: Sequence[Step], *, commit: bool = False) -> list[list[Row]]:
        # In process: no round trips to save; the transaction commits as the block ends.
        return [
            [tuple(row) for row in await self._conn.execute_fetchall(sql, params)] for sql, params in steps
        ]


class SqliteDatabase:
    """A SQLite file (or ``:memory:``) behind the :class:`~.sql.Database` interface."""

    engine = "sqlite"
    dialect = SQLITE

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._writer is not None:
            return
        memory = self.path == ":memory:"
        try:
            if not memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = await self._connect()
            if not memory:
                await self._writer.execute("PRAGMA journal_mode = WAL")
                # FULL: a commit is on disk before the sender's ack goes out.
                await self._writer.execute("PRAGMA synchronous = FULL")
                self._reader = await self._connect()
                await self._reader.execute("PRAGMA query_only = ON")
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: the sqlite3 module must not open transactions
        # behind our back; transaction() issues BEGIN IMMEDIATE itself.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            conn = self._connection(self._writer)
            try:
                if conn.in_transaction:
                    # Left open by a rollback that was itself cancelled.
                    await conn.rollback()
                # IMMEDIATE takes the write lock now: a deferred transaction
                # that reads first can fail to upgrade if another process wrote.
                await conn.execute("BEGIN IMMEDIATE")
                yield _SqliteTx(conn)
                await conn.commit()
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.rollback()
                _reraise(exc)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Tx]:
        if self._reader is None:
            async with self.transaction() as tx:
                yield tx
            return
        try:
            yield _SqliteTx(self._connection(self._reader))
        except BaseException as exc:
            _reraise(exc)

    def _connection(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StoreError(f"SQLite database {self.path} is not open")
        return conn


def _reraise(exc: BaseException) -> NoReturn:
    """Raise a driver error as the store's taxonomy; anything else unchanged."""
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        raise UniqueViolation(str(exc)) from exc
    # Values sqlite3 refuses before they reach the database: an integer
    # beyond SQLite's 64 bits, text with a lone surrogate (not encodable).
    if isinstance(exc, OverflowError):
        raise InvalidValue(f"SQLite: {exc}") from exc
    if isinstance(exc, UnicodeEncodeError):
        raise InvalidValue("a text value is not valid Unicode") from exc
    # ValueError: aiosqlite's closed connection.
    closed = isinstance(exc, ValueError) and "closed" in str(exc)
    if isinstance(exc, sqlite3.Error) or closed:
        raise StoreError(f"SQLite: {exc}") from exc
    raise exc
