"""MySQL/MariaDB engine adapter (asyncmy) for production.

A connection pool with autocommit off: a transaction starts implicitly with
its first statement (no BEGIN round trip) and ends with COMMIT or ROLLBACK.
Tables are InnoDB in utf8mb4 with binary collation, so names compare exactly
as they do in SQLite.

The driver is asyncmy (PyMySQL's protocol in Cython): on db_proxy's hot path
it takes a third less CPU per group-commit transaction than aiomysql and 60%
less per single-row read (benchmarks/mysql_drivers.py,
benchmarks/results/mysql_drivers.txt).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import asyncmy
from asyncmy import errors as mysql_errors
from asyncmy.constants import CLIENT

from common.config import redact_urls

from .model import InvalidValue, StoreError
from .sql_base import Dialect, Row, Step, TransientError, Tx, UniqueViolation


def _escape_bytes(value: bytes) -> str:
    return "_binary X'" + value.hex() + "'"


_OPTIONS = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
MYSQL = Dialect(
    name="mysql",
    autoinc_pk="INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY",
    blob="MEDIUMBLOB",  # BLOB stops 1 byte short of 64 KiB
    table_options=_OPTIONS,
    clustered_options=_OPTIONS,
    upsert_clause="ON DUPLICATE KEY UPDATE",
    # MariaDB's spelling; MySQL >= 8.0.20 still accepts it, with a
    # deprecation warning.
    new_value="VALUES({column})",
    signed_u64=False,
    for_update=" FOR UPDATE",
)

# Run on every new connection. Strict mode whatever the server's default, so
# an out-of-range or too-long value fails the transaction instead of being
# clipped; no notes, because "CREATE TABLE IF NOT EXISTS" on an existing table
# is a note, which the driver would turn into a Python warning.
_INIT_COMMAND = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', SESSION sql_notes = 0"
CONNECT_TIMEOUT = 10.0
POOL_RECYCLE = 3600  # seconds; well under the server's default wait_timeout of 8 h
_ER_DUP_ENTRY = frozenset({1062, 1586})
_ER_RETRY = frozenset({1205, 1213})  # lock wait timeout, deadlock
# Truncated wrong value, incorrect string value, out of range, data too long
# (most are DataError already; not every PyMySQL version classes them so).
_ER_BAD_VALUE = frozenset({1292, 1366, 1264, 1406})
_CLIENT_ERRORS = 2000  # codes from here on come from the client: the connection is broken
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_SERVER_STATUS_IN_TRANS = 1
#: SQL per multi-statement query of a script (more goes in the next round trip).
SCRIPT_PACKET = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MysqlUrl:
    """``mysql://user[:password]@host[:port]/database``."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    @classmethod
    def parse(cls, url: str) -> MysqlUrl:
        parts = urlsplit(url)
        if parts.scheme != "mysql" or not parts.hostname or not parts.username:
            raise ValueError(f"not a mysql://user[:password]@host[:port]/database URL: {redact_urls(url)!r}")
        database = unquote(parts.path.lstrip("/"))
        if not _DATABASE_NAME.fullmatch(database):
            # The name is spliced into CREATE/DROP DATABASE, which take no parameters.
            raise ValueError(f"database name must be 1-64 of [A-Za-z0-9_]: {database!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or 3306,
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            database=database,
        )

    def connect_args(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "charset": "utf8mb4",
            "init_command": _INIT_COMMAND,
            "connect_timeout": CONNECT_TIMEOUT,
        }


@lru_cache(maxsize=1024)
def _format(sql: str) -> str:
    """Shared ``?`` placeholders in pymysql's ``%s`` style."""
    return sql.replace("%", "%%").replace("?", "%s")


def fast_literal(literal: Callable[[object], str]) -> Callable[[object], str]:
    """A driver's ``literal`` (a parameter as SQL) with the two hot types done directly.

    Integers and bodies are nearly every parameter of a message batch; the
    driver's generic path (an encoder lookup per value) was a quarter of a
    script's time. Everything else goes to the driver.
    """

    def escaped(value: object) -> str:
        kind = type(value)
        if kind is int:
            return str(value)
        if kind is bytes:
            return _escape_bytes(value)  # type: ignore[arg-type]
        return literal(value)

    return escaped


class _MysqlTx:
    def __init__(self, conn: asyncmy.Connection) -> None:
        self._conn = conn
        self.committed = False  # a script ended the transaction

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        async with self._conn.cursor() as cursor:
            return int(await cursor.execute(_format(sql), params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        # The driver turns an INSERT ... VALUES (%s, ...) into one multi-row
        # statement (split at ~1 MB), so a batch is one round trip.
        async with self._conn.cursor() as cursor:
            await cursor.executemany(_format(sql), rows)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        async with self._conn.cursor() as cursor:
            await cursor.execute(_format(sql), params)
            return list(await cursor.fetchall())

    async def insert(self, sql: str, params: Sequence[object]) -> int:
        async with self._conn.cursor() as cursor:
            await cursor.execute(_format(sql), params)
            return int(cursor.lastrowid)

    async def script(self, steps: Sequence[Step], *, commit: bool = False) -> list[list[Row]]:
        # The statements are escaped here exactly as cursor.execute would
        # (literal() per parameter) and sent ";"-joined: the connection has
        # CLIENT.MULTI_STATEMENTS. The server runs them in order and stops at
        # the first error, which the result of that statement raises.
        if self.committed:
            raise StoreError("the transaction was committed by a script")
        literal = fast_literal(self._conn.literal)
        statements = [_format(sql) % tuple(map(literal, params)) for sql, params in steps]
        if commit:
            statements.append("COMMIT")
        packets: list[list[str]] = []
        size = SCRIPT_PACKET
        for statement in statements:
            if size + len(statement) > SCRIPT_PACKET and (not packets or packets[-1]):
                packets.append([])
                size = 0
            packets[-1].append(statement)
            size += len(statement) + 1
        results: list[list[Row]] = []
        for packet in packets:
            async with self._conn.cursor() as cursor:
                await cursor.execute(";".join(packet))  # no args: already formatted
                for _ in packet:
                    results.append(list(await cursor.fetchall()) if cursor.description else [])
                    await cursor.nextset()
        if commit:
            results.pop()
            self.committed = True
            # asyncmy keeps a result's server status only when it is not 0 (a
            # COMMIT's, autocommit being off): the connection would still look
            # in a transaction, and its pool would close it on release.
            self._conn.server_status &= ~_SERVER_STATUS_IN_TRANS  # type: ignore[attr-defined]
        return results


class MysqlDatabase:
    """A MySQL/MariaDB database behind the :class:`~.sql.Database` interface."""

    engine = "mysql"
    dialect = MYSQL

    def __init__(self, url: MysqlUrl, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncmy.Pool | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncmy.create_pool(
                minsize=1,
                maxsize=self.pool_size,
                pool_recycle=POOL_RECYCLE,
                database=self.url.database,
                autocommit=False,
                # Scripts (Tx.script): several statements in one round trip.
                # Every statement's values are escaped parameters, never
                # spliced text, so this opens no injection.
                client_flag=CLIENT.MULTI_STATEMENTS,
                **self.url.connect_args(),
            )
        except (mysql_errors.MySQLError, OSError) as exc:
            raise StoreError(
                f"cannot connect to MySQL {self.url.host}:{self.url.port}/{self.url.database}: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        return self._session(commit=True)

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        # Autocommit is off, so even a read opens a transaction; it must be
        # ended or the pool would discard the connection.
        return self._session(commit=False)

    @asynccontextmanager
    async def _session(self, commit: bool) -> AsyncIterator[Tx]:
        if self._pool is None:
            raise StoreError("MySQL database is not open")
        pool = self._pool
        try:
            conn = await pool.acquire()
        except (mysql_errors.MySQLError, OSError) as exc:
            raise StoreError(f"MySQL: {exc}") from exc
        try:
            tx = _MysqlTx(conn)
            yield tx
            if tx.committed:
                pass  # a script's COMMIT ended it
            elif commit:
                await conn.commit()
            else:
                await conn.rollback()
        except BaseException as exc:
            await _abandon(conn, exc)
            _reraise(exc)
        finally:
            pool.release(conn)  # not a coroutine


async def _abandon(conn: asyncmy.Connection, exc: BaseException) -> None:
    """Roll back after ``exc``; a connection in an unknown state is closed instead.

    A server-side error leaves the connection usable. A client error or a
    cancellation may have left a reply unread, so the connection is dropped
    (the server then rolls back) and the pool opens a fresh one.
    """
    code = _code(exc)
    usable = (
        0 < code < _CLIENT_ERRORS
        if isinstance(exc, mysql_errors.MySQLError)
        else isinstance(exc, Exception) and not isinstance(exc, OSError)
    )
    if usable:
        try:
            await conn.rollback()
            return
        except (mysql_errors.MySQLError, OSError):
            pass
    conn.close()


def _code(exc: BaseException) -> int:
    args = exc.args if isinstance(exc, mysql_errors.MySQLError) else ()
    return args[0] if args and isinstance(args[0], int) else 0


def _reraise(exc: BaseException) -> NoReturn:
    """Raise a driver error as the store's taxonomy; anything else unchanged.

    A value the server refuses (strict mode: too long, out of range, not
    text for its column) is the caller's InvalidValue; a deadlock or a lock
    wait that timed out is worth running again; the rest is the database
    failing (StoreError).
    """
    if isinstance(exc, mysql_errors.MySQLError):
        code = _code(exc)
        if code in _ER_DUP_ENTRY:
            raise UniqueViolation(f"MySQL: {exc}") from exc
        if code in _ER_RETRY:
            raise TransientError(f"MySQL: {exc}") from exc
        if isinstance(exc, mysql_errors.DataError) or code in _ER_BAD_VALUE:
            raise InvalidValue(f"MySQL refused a value: {exc}") from exc
        raise StoreError(f"MySQL: {exc}") from exc
    if isinstance(exc, OSError):
        raise StoreError(f"MySQL connection: {exc}") from exc
    if isinstance(exc, UnicodeEncodeError):
        # Text with a lone surrogate: the driver cannot encode the statement.
        raise InvalidValue("a text value is not valid Unicode") from exc
    raise exc


async def _admin(url: MysqlUrl, sql: str, params: Sequence[object] = ()) -> list[Row]:
    """Run one statement on the server without selecting a database."""
    try:
        conn = await asyncmy.connect(autocommit=True, **url.connect_args())
    except (mysql_errors.MySQLError, OSError) as exc:
        raise StoreError(f"cannot connect to MySQL {url.host}:{url.port}: {exc}") from exc
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(_format(sql), params)
            return list(await cursor.fetchall())
    except mysql_errors.MySQLError as exc:
        raise StoreError(f"MySQL: {exc}") from exc
    finally:
        try:
            await conn.ensure_closed()
        except OSError:
            conn.close()


async def create_database_if_missing(url: str) -> bool:
    """Create the URL's database (utf8mb4, binary collation); True if it was missing."""
    parsed = MysqlUrl.parse(url)
    found = await _admin(
        parsed,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        (parsed.database,),
    )
    if found:
        return False
    await _admin(
        parsed,
        f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    )
    return True


async def drop_database(url: str) -> None:
    """Drop the URL's database if it exists (tests and ``imctl`` resets)."""
    parsed = MysqlUrl.parse(url)
    await _admin(parsed, f"DROP DATABASE IF EXISTS `{parsed.database}`")
