"""``imctl db check``: what the database at a URL is, without changing it.

A check must not create what it checks: a SQLite file is opened read-only
(``file:PATH?mode=ro``), so a wrong path reports "does not exist" instead
of leaving an empty database (and its directories) behind, and nothing is
written beside it; a MySQL database is only connected to. Every URL shown has its password redacted.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.config import redact_urls
from db_proxy.storage import MYSQL_PREFIX, SQLITE_PREFIX
from db_proxy.storage.schema import LATEST_VERSION

MYSQL_UNKNOWN_DATABASE = 1049  # ER_BAD_DB_ERROR


@dataclass
class Check:
    name: str  # reachable, exists, schema
    ok: bool
    detail: str


@dataclass
class Report:
    database_url: str  # redacted
    checks: list[Check] = field(default_factory=list)
    version: int | None = None  # the schema version found; None if it could not be read
    expected: int = LATEST_VERSION

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def reachable(self) -> bool:
        return all(c.ok for c in self.checks if c.name == "reachable")

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, redact_urls(detail)))

    def as_json(self) -> dict[str, Any]:
        checks = [asdict(c) for c in self.checks]
        return {"database_url": self.database_url, "ok": self.ok, **self._versions(), "checks": checks}

    def _versions(self) -> dict[str, Any]:
        return {"version": self.version, "expected": self.expected}


def check_database(url: str) -> Report:
    report = Report(redact_urls(url))
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        _check_sqlite(url[len(SQLITE_PREFIX) :], report)
    elif url.startswith(MYSQL_PREFIX):
        _check_mysql(url, report)
    else:
        report.add("reachable", False, "unsupported URL: use sqlite:///path.db or mysql://...")
        return report
    if report.version is not None:
        _check_schema(report)
    return report


def _check_schema(report: Report) -> None:
    version, expected = report.version, LATEST_VERSION
    if version == expected:
        report.add("schema", True, f"schema version {version} (current)")
        return
    advice = "run: imctl db migrate" if (version or 0) < expected else "this imctl is older than the database"
    report.add("schema", False, f"schema version {version}, expected {expected}; {advice}")


def _check_sqlite(path: str, report: Report) -> None:
    if path == ":memory:":
        report.add("exists", False, "an in-memory database exists only inside its process")
        return
    file = Path(path)
    if not file.is_file():
        report.add("exists", False, f"{file} does not exist (imctl db init creates it)")
        return
    report.add("exists", True, str(file))
    # Read-only; and with no write-ahead log beside it (no db_proxy has it
    # open) immutable too, else SQLite would leave a -wal and -shm behind.
    live = Path(f"{file}-wal").exists()
    uri = f"file:{urllib.parse.quote(str(file.resolve()))}?mode=ro{'' if live else '&immutable=1'}"
    try:
        with sqlite3.connect(uri, uri=True, timeout=5.0) as conn:
            report.add("reachable", True, "opened read-only")
            report.version = _sqlite_version(conn)
    except sqlite3.Error as exc:
        report.add("reachable", False, f"cannot read {file}: {exc}")


def _sqlite_version(conn: sqlite3.Connection) -> int:
    try:
        rows = conn.execute("SELECT MAX(version) FROM schema_version").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0  # a database nothing was applied to yet
        raise
    return int(rows[0][0] or 0)


def _check_mysql(url: str, report: Report) -> None:
    try:
        report.version = asyncio.run(_mysql_version(url))
    except Exception as exc:
        code = exc.args[0] if exc.args else None
        if code == MYSQL_UNKNOWN_DATABASE:
            report.add("reachable", True, "the server answered")
            report.add("exists", False, f"the database does not exist (imctl db init creates it): {exc}")
            return
        report.add("reachable", False, f"cannot connect: {exc}")
        return
    report.add("reachable", True, "the server answered")
    report.add("exists", True, "the database exists")


async def _mysql_version(url: str) -> int:
    import asyncmy

    from db_proxy.storage.mysql import MysqlUrl

    parsed = MysqlUrl.parse(url)
    conn = await asyncmy.connect(**parsed.connect_args(), database=parsed.database)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s "
                "AND table_name = 'schema_version'",
                (parsed.database,),
            )
            (count,) = await cursor.fetchone()
            if not count:
                return 0
            await cursor.execute("SELECT MAX(version) FROM schema_version")
            (version,) = await cursor.fetchone()
            return int(version or 0)
    finally:
        conn.close()
