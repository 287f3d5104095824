"""``imctl backup`` / ``imctl restore`` refusals and versions, on SQLite and MariaDB: a
database or file store that holds data is refused unless --force, a damaged archive or one
from a newer schema is refused (exit 2) with nothing written, an older one is restored then
migrated, and no password is ever printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from db_proxy.storage import create_database_if_missing, open_store, schema
from db_proxy.storage.backup import occupied
from imctl.cli import main
from tests.backup.test_archive import _rewrite
from tests.support.databases import fresh_mysql_url

ENGINES = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]


def imctl(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@contextlib.contextmanager
def database(engine: str, tmp_path: Path, name: str) -> Iterator[str]:
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / name}"
    else:
        with fresh_mysql_url() as url:
            yield url


async def seed(url: str, names: list[str], upto: int = schema.LATEST_VERSION) -> None:
    await create_database_if_missing(url)
    async with open_store(url) as store:
        await schema.migrate(store.db, upto=upto)
        async with store.db.transaction() as tx:
            for name in names:
                await tx.execute(
                    "INSERT INTO users (name, password_hash, nick, department_id) VALUES (?, '!', ?, 1)",
                    (name, name),
                )


async def user_names(url: str) -> list[str]:
    async with open_store(url) as store, store.db.reading() as tx:
        return sorted(str(r[0]) for r in await tx.fetchall("SELECT name FROM users"))


def backed_up(url: str, tmp_path: Path, store: Path, name: str = "b.tar") -> Path:
    archive = tmp_path / name
    result = imctl("backup", str(archive), "--database-url", url, "--store", str(store))
    assert result.exit_code == 0, result.output
    return archive


@pytest.mark.parametrize("engine", ENGINES)
def test_a_database_or_store_with_data_is_refused_unless_forced(engine: str, tmp_path: Path) -> None:
    store = tmp_path / "files"
    (store / "x").mkdir(parents=True)
    (store / "x" / "picture").write_bytes(b"picture")
    with database(engine, tmp_path, "a.db") as source, database(engine, tmp_path, "b.db") as target:
        asyncio.run(seed(source, ["alice", "bob"]))
        archive = backed_up(source, tmp_path, store)
        asyncio.run(seed(target, ["zoe"]))
        other_store = tmp_path / "other"
        result = imctl("restore", str(archive), "--database-url", target, "--store", str(other_store))
        assert result.exit_code == 1
        assert "is not empty (tables users hold rows)" in result.output and "--force" in result.output
        assert asyncio.run(user_names(target)) == ["zoe"]  # nothing was written
        assert not other_store.exists()
        # The store is checked too, before the database is touched.
        result = imctl("restore", str(archive), "--database-url", target, "--store", str(store))
        assert result.exit_code == 1
        result = imctl(
            "restore", str(archive), "--database-url", target, "--store", str(store), "--force", "--json"
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["rows"]["users"] == 2 and summary["files"] == {"count": 1, "bytes": 7}
        assert asyncio.run(user_names(target)) == ["alice", "bob"]
        assert (store / "x" / "picture").read_bytes() == b"picture"


def test_a_damaged_archive_is_refused_with_nothing_written(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "b.db"
    asyncio.run(seed(source, ["alice"]))
    archive = backed_up(source, tmp_path, tmp_path / "files")
    with tarfile.open(archive) as tar:
        offset = tar.getmember("db/users.jsonl").offset_data
    data = bytearray(archive.read_bytes())
    data[offset + 3] ^= 0x20
    archive.write_bytes(bytes(data))
    result = imctl(
        "restore", str(archive), "--database-url", f"sqlite:///{target}", "--store", str(tmp_path / "s")
    )
    assert result.exit_code == 2
    assert "checksum mismatch in db/users.jsonl" in result.output
    assert not target.exists() and not (tmp_path / "s").exists()


def test_a_backup_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    asyncio.run(seed(source, ["alice"]))
    archive = backed_up(source, tmp_path, tmp_path / "files")
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    manifest["schema_version"] = schema.LATEST_VERSION + 1
    _rewrite(archive, tmp_path / "newer.tar", {"manifest.json": json.dumps(manifest).encode()})
    target = tmp_path / "b.db"
    result = imctl(
        "restore",
        str(tmp_path / "newer.tar"),
        "--database-url",
        f"sqlite:///{target}",
        "--store",
        str(tmp_path / "s"),
    )
    assert result.exit_code == 2
    assert f"schema version {schema.LATEST_VERSION + 1}, newer than this imctl's" in result.output


@pytest.mark.parametrize("engine", ENGINES)
def test_an_older_backup_is_restored_then_migrated(engine: str, tmp_path: Path) -> None:
    with database(engine, tmp_path, "a.db") as source, database(engine, tmp_path, "b.db") as target:
        asyncio.run(seed(source, ["alice"], upto=5))
        archive = backed_up(source, tmp_path, tmp_path / "files", "old.tar.gz")
        result = imctl(
            "restore", str(archive), "--database-url", target, "--store", str(tmp_path / "s"), "--json"
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert (summary["schema_version"], summary["migrated_to"]) == (5, schema.LATEST_VERSION)
        assert "admin_audit" not in summary["rows"]  # made by migration 6, after the load

        async def check() -> None:
            async with open_store(target) as store:
                user = await store.user_by_name("alice")
                assert user is not None and user.id == 1
                assert await occupied(store) == ["users"]

        asyncio.run(check())


def test_passwords_are_not_printed(tmp_path: Path) -> None:
    result = imctl(
        "backup",
        str(tmp_path / "b.tar"),
        "--database-url",
        "mysql://root:hunter2@127.0.0.1:1/nothere",
        "--no-files",
    )
    assert result.exit_code == 3
    assert "hunter2" not in result.output and "root:***@" in result.output
    assert not (tmp_path / "b.tar").exists() and not (tmp_path / "b.tar.partial").exists()


def test_an_existing_archive_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "b.tar").write_text("keep")
    result = imctl("backup", str(tmp_path / "b.tar"), "--database-url", f"sqlite:///{tmp_path / 'a.db'}")
    assert result.exit_code == 2 and (tmp_path / "b.tar").read_text() == "keep"
