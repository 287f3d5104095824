"""Backup and restore of a database, either engine, through the engine-neutral archive.

Dump: SQLite is copied with sqlite3's online backup API (one consistent
snapshot while the cluster writes), and the copy is read table by table;
MySQL/MariaDB is read in one ``START TRANSACTION WITH CONSISTENT SNAPSHOT``
at REPEATABLE READ, each table streamed through a server-side cursor. Either
way a backup holds everything committed up to one instant, and every page
of rows is bounded (:data:`.backup_archive.PAGE_ROWS`).

Load: into an empty database (or one emptied by ``force``), the schema is
first brought to the backup's own version, the rows are inserted page by
page with their ids, the auto-increment counters are put back, the row
counts are checked, and only then are the later migrations applied.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import Conflict

from . import MYSQL_PREFIX, SQLITE_PREFIX, create_database_if_missing, open_store, schema
from .backup_archive import (
    PAGE_ROWS,
    ArchiveReader,
    ArchiveWriter,
    BadArchive,
    Row,
    from_unsigned,
    to_unsigned,
)
from .model import StoreError
from .sql import SqlStore
from .sql_base import Tx

SKIPPED_TABLES = frozenset({"schema_version"})  # made again by the migrations
#: Rows the migrations seed into a new database (migration 4's default
#: department): a database holding only these counts as empty.
SEEDED_ROWS = {"departments": 1}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class NotEmpty(Conflict):
    """The database (or file store) to restore into holds data already."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[str]
    key: list[str]  # ORDER BY of the dump: the primary key (or rowid)
    unsigned: frozenset[str] = frozenset()  # BIGINT UNSIGNED columns (SQLite stores them signed)


@dataclass
class Snapshot:
    engine: str
    schema_version: int
    tables: list[Table]
    counters: dict[str, int] = field(default_factory=dict)  # table -> last auto-increment id


def redact_url(url: str) -> str:
    """The URL without its password (for output and the manifest)."""
    return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url)


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise BadArchive(f"{name!r} is not a table or column name")
    return name


# -- dump ------------------------------------------------------------------


async def dump(url: str, writer: ArchiveWriter) -> Snapshot:
    """Every table of the database at ``url`` into ``writer``, from one snapshot."""
    if url.startswith(SQLITE_PREFIX):
        return await asyncio.to_thread(_dump_sqlite_file, url[len(SQLITE_PREFIX) :], writer)
    if url.startswith(MYSQL_PREFIX):
        return await _dump_mysql(url, writer)
    raise StoreError(f"unsupported database URL {redact_url(url)}")


def _dump_sqlite_file(path: str, writer: ArchiveWriter) -> Snapshot:
    if path == ":memory:" or not Path(path).is_file():
        raise StoreError(f"no SQLite database at {path}")
    with tempfile.TemporaryDirectory(prefix="imctl-backup-") as tmp:
        return _dump_sqlite(path, Path(tmp) / "snapshot.db", writer)


def _sqlite_tables(conn: sqlite3.Connection) -> list[Table]:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    tables = []
    for name in names:
        if name in SKIPPED_TABLES:
            continue
        info = conn.execute(f"PRAGMA table_info({_check_identifier(name)})").fetchall()
        columns = [str(c[1]) for c in info]
        key = [str(c[1]) for c in sorted(info, key=lambda c: c[5]) if c[5]] or ["rowid"]
        unsigned = frozenset(str(c[1]) for c in info if "BIGINT UNSIGNED" in str(c[2]).upper())
        tables.append(Table(name, columns, key, unsigned))
    return tables


def _dump_sqlite(path: str, copy: Path, writer: ArchiveWriter) -> Snapshot:
    # The backup API copies every page at once under a read lock: the copy is
    # one consistent state of the live file (WAL included) while db_proxy writes.
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite backup of {path}: {exc}") from exc
    finally:
        source.close()
    try:
        snapshot = Snapshot("sqlite", _sqlite_version(target), _sqlite_tables(target))
        if target.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            snapshot.counters = {
                str(n): int(s) for n, s in target.execute("SELECT name, seq FROM sqlite_sequence")
            }
        for table in snapshot.tables:
            dump_file = writer.table(table.name, table.columns)
            cursor = target.execute(
                f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {', '.join(table.key)}"
            )
            positions = [i for i, c in enumerate(table.columns) if c in table.unsigned]
            while page := cursor.fetchmany(PAGE_ROWS):
                if positions:
                    page = [_unsigned_row(row, positions) for row in page]
                dump_file.write(page)
            writer.add_table(dump_file)
        return snapshot
    finally:
        target.close()


def _unsigned_row(row: Row, positions: Sequence[int]) -> Row:
    values = list(row)
    for i in positions:
        values[i] = to_unsigned(values[i])
    return tuple(values)


def _sqlite_version(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
    except sqlite3.Error:
        return 0


async def _dump_mysql(url: str, writer: ArchiveWriter) -> Snapshot:
    import asyncmy
    from asyncmy import errors as mysql_errors
    from asyncmy.cursors import SSCursor

    from .mysql import MysqlUrl

    parsed = MysqlUrl.parse(url)
    try:
        conn = await asyncmy.connect(database=parsed.database, autocommit=False, **parsed.connect_args())
    except (mysql_errors.MySQLError, OSError) as exc:
        raise StoreError(
            f"cannot connect to MySQL {parsed.host}:{parsed.port}/{parsed.database}: {exc}"
        ) from exc
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            snapshot = Snapshot("mysql", await _mysql_version(cursor), await _mysql_tables(cursor))
            await cursor.execute(
                "SELECT table_name, auto_increment FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND auto_increment IS NOT NULL"
            )
            snapshot.counters = {str(n): int(a) - 1 for n, a in await cursor.fetchall()}
        for table in snapshot.tables:
            dump_file = writer.table(table.name, table.columns)
            # A server-side cursor: the rows come as they are fetched, a page at a time.
            async with conn.cursor(SSCursor) as stream:
                await stream.execute(
                    f"SELECT {', '.join(f'`{c}`' for c in table.columns)} FROM `{table.name}` "
                    f"ORDER BY {', '.join(f'`{c}`' for c in table.key)}"
                )
                while page := await stream.fetchmany(PAGE_ROWS):
                    dump_file.write(page)
            writer.add_table(dump_file)
        await conn.rollback()
        return snapshot
    except mysql_errors.MySQLError as exc:
        raise StoreError(f"MySQL backup: {exc}") from exc
    finally:
        conn.close()


async def _mysql_version(cursor: Any) -> int:
    await cursor.execute(
        "SELECT COUNT(*) FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = 'schema_version'"
    )
    if not (await cursor.fetchone())[0]:
        return 0
    await cursor.execute("SELECT MAX(version) FROM schema_version")
    return int((await cursor.fetchone())[0] or 0)


async def _mysql_tables(cursor: Any) -> list[Table]:
    await cursor.execute(
        "SELECT table_name, column_name, column_key FROM information_schema.columns "
        "WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position"
    )
    columns: dict[str, list[str]] = {}
    for table, column, _ in await cursor.fetchall():
        columns.setdefault(str(table), []).append(str(column))
    await cursor.execute(
        "SELECT table_name, column_name FROM information_schema.key_column_usage "
        "WHERE table_schema = DATABASE() AND constraint_name = 'PRIMARY' "
        "ORDER BY table_name, ordinal_position"
    )
    keys: dict[str, list[str]] = {}
    for table, column in await cursor.fetchall():
        keys.setdefault(str(table), []).append(str(column))
    return [
        Table(_check_identifier(name), [_check_identifier(c) for c in cols], keys.get(name) or cols)
        for name, cols in sorted(columns.items())
        if name not in SKIPPED_TABLES
    ]


# -- load ------------------------------------------------------------------


@dataclass
class Loaded:
    schema_version: int  # the backup's
    migrated_to: int
    rows: dict[str, int]


async def _our_tables(store: SqlStore) -> list[str]:
    if store.engine == "mysql":
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    async with store.db.reading() as tx:
        return sorted(str(r[0]) for r in await tx.fetchall(sql))


async def _count(tx: Tx, table: str) -> int:
    rows = await tx.fetchall(f"SELECT COUNT(*) FROM {_check_identifier(table)}")
    return int(rows[0][0])


async def occupied(store: SqlStore) -> list[str]:
    """The tables holding more than a new database's seeded rows."""
    found = []
    async with store.db.reading() as tx:
        for table in await _our_tables(store):
            if table not in SKIPPED_TABLES and await _count(tx, table) > SEEDED_ROWS.get(table, 0):
                found.append(table)
    return found


async def refuse_occupied(url: str) -> None:
    """NotEmpty if the database at ``url`` holds data; creates nothing (a missing one is empty)."""
    if url.startswith(MYSQL_PREFIX):
        from .mysql import MysqlUrl, _admin

        parsed = MysqlUrl.parse(url)
        sql = "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?"
        if not await _admin(parsed, sql, (parsed.database,)):
            return
    elif url.startswith(SQLITE_PREFIX) and not await asyncio.to_thread(
        Path(url[len(SQLITE_PREFIX) :]).exists
    ):
        return
    store = open_store(url)
    await store.open()
    try:
        full = await occupied(store)
    finally:
        await store.close()
    if full:
        raise _not_empty(url, full)


def _not_empty(url: str, tables: list[str]) -> NotEmpty:
    return NotEmpty(
        f"{redact_url(url)} is not empty (tables {', '.join(tables)} hold rows); "
        "restore into an empty database, or --force to empty it first"
    )


async def load(url: str, archive: ArchiveReader, force: bool = False) -> Loaded:
    """The archive's rows into the database at ``url`` (created if missing)."""
    manifest = archive.manifest
    version = int(manifest["schema_version"])
    if version > schema.LATEST_VERSION:
        raise BadArchive(
            f"the backup has schema version {version}, newer than this imctl's {schema.LATEST_VERSION}; "
            "upgrade imcluster first"
        )
    if url.startswith(MYSQL_PREFIX):
        await create_database_if_missing(url)
    store = open_store(url)
    await store.open()
    try:
        full = await occupied(store)
        if full and not force:
            raise _not_empty(url, full)
        if force:
            for table in await _our_tables(store):
                async with store.db.transaction() as tx:
                    await tx.execute(f"DROP TABLE {_check_identifier(table)}")
        await schema.migrate(store.db, upto=version)
        tables: dict[str, Any] = manifest["tables"]
        present = set(await _our_tables(store))
        missing = sorted(set(tables) - present)
        if missing:
            raise BadArchive(f"the backup has table {missing[0]}, which schema version {version} lacks")
        async with store.db.transaction() as tx:
            for table in tables:
                await tx.execute(f"DELETE FROM {_check_identifier(table)}")  # the seeded rows
        unsigned = await _unsigned_columns(store)
        for table, entry in tables.items():
            await _load_table(store, archive, table, entry["columns"], unsigned.get(table, frozenset()))
        await _restore_counters(store, manifest.get("counters") or {})
        rows: dict[str, int] = {}
        async with store.db.reading() as tx:
            for table, entry in tables.items():
                rows[table] = await _count(tx, table)
                if rows[table] != entry["rows"]:
                    raise StoreError(f"{table}: {rows[table]} rows restored, the backup has {entry['rows']}")
        migrated = await store.migrate()  # the migrations after the backup's version, and search keys
        return Loaded(version, migrated, rows)
    finally:
        await store.close()


async def _unsigned_columns(store: SqlStore) -> dict[str, frozenset[str]]:
    """SQLite's BIGINT UNSIGNED columns (MySQL stores the values as they are)."""
    if store.engine == "mysql":
        return {}
    result: dict[str, frozenset[str]] = {}
    async with store.db.reading() as tx:
        for table in await _our_tables(store):
            info = await tx.fetchall("SELECT name, type FROM pragma_table_info(?)", (table,))
            result[table] = frozenset(str(n) for n, t in info if "BIGINT UNSIGNED" in str(t).upper())
    return result


async def _load_table(
    store: SqlStore, archive: ArchiveReader, table: str, columns: list[str], unsigned: frozenset[str]
) -> None:
    names = [_check_identifier(c) for c in columns]
    sql = (
        f"INSERT INTO {_check_identifier(table)} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    )
    positions = [i for i, c in enumerate(names) if c in unsigned]
    for page in archive.rows(table):
        if positions:
            page = [_signed_row(row, positions) for row in page]
        # A transaction per page: bounded undo on MySQL; a failed restore is run again with --force.
        async with store.db.transaction() as tx:
            await tx.executemany(sql, page)


def _signed_row(row: Row, positions: Sequence[int]) -> Row:
    values = list(row)
    for i in positions:
        values[i] = from_unsigned(values[i])
    return tuple(values)


async def _restore_counters(store: SqlStore, counters: dict[str, Any]) -> None:
    """Ids are never reused: each auto-increment counter goes back to at least the backup's."""
    async with store.db.transaction() as tx:
        for table, last in counters.items():
            if not isinstance(last, int) or last <= 0:
                continue
            name = _check_identifier(str(table))
            if store.engine == "mysql":
                await tx.execute(f"ALTER TABLE `{name}` AUTO_INCREMENT = {int(last) + 1}")
            else:
                changed = await tx.execute(
                    "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (last, name)
                )
                if not changed:
                    await tx.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, last))


__all__ = ["Loaded", "NotEmpty", "Snapshot", "dump", "load", "occupied", "redact_url", "refuse_occupied"]
