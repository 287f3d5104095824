"""``imctl backup FILE`` and ``imctl restore FILE``: the database and the file store in one archive.

Both work on this machine, from the cluster config like ``imctl db
migrate`` (``--config``, ``--database-url``) plus the file store that msfs
and file_server share (``--store``, default the config's ``[msfs] store``).
A backup may be taken while the cluster runs; a restore is made with it
stopped. The archive's format: :mod:`db_proxy.storage.backup_archive`.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from common.errors import Conflict, InvalidArgument
from db_proxy.storage.model import StoreError
from imctl.client import BadUsage, CliError, Unreachable
from imctl.commands.local import _load, config_option, db_config
from imctl.context import config_path as config_path_of
from imctl.context import wants_json
from imctl.output import echo_json, key_values

database_option = click.option("--database-url", default=None, help="Override db_proxy.database_url.")
store_option = click.option(
    "--store",
    "store_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The file store of pictures and offline files. Default: the config's [msfs] store (var/files).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


def _store_dir(config: Path | None, given: Path | None) -> Path:
    from msfs.config import MsfsConfig

    return given if given is not None else Path(_load(MsfsConfig, "msfs", config).store)


def _run(what: str, work: Callable[[], Any]) -> Any:
    """``work()``, its failures as one line and the documented exit code."""
    try:
        return asyncio.run(work())
    except Conflict as exc:
        raise CliError(exc.message) from None
    except InvalidArgument as exc:  # a damaged or unsupported archive
        raise BadUsage(exc.message) from None
    except StoreError as exc:
        raise Unreachable(f"{what}: {exc.message}") from None
    except OSError as exc:
        raise CliError(f"{what}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


def _show(summary: dict[str, Any], as_json: bool, human: Callable[[], None]) -> None:
    if as_json or wants_json():
        echo_json(summary)
    else:
        human()


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@config_option
@database_option
@store_option
@click.option("--no-files", is_flag=True, help="Leave the file store out (the database only).")
@json_option
def backup(
    file: Path,
    config_path: str | None,
    database_url: str | None,
    store_dir: Path | None,
    no_files: bool,
    as_json: bool,
) -> None:
    """Write the database and the file store to FILE (a tar archive; .tar.gz to compress).

    Safe while the cluster runs: the database is read in one consistent
    snapshot (SQLite's online backup, MySQL's consistent-snapshot
    transaction), so the backup holds everything committed up to that
    instant. The archive is engine-neutral: a SQLite backup restores into
    MariaDB and back.
    """
    from db_proxy.storage.backup import dump, redact_url
    from db_proxy.storage.backup_archive import ArchiveWriter

    config = config_path_of(config_path)
    url = db_config(config, database_url).database_url
    store = _store_dir(config, store_dir)
    if file.exists():
        raise BadUsage(f"{file} exists; give a new file name")
    started = time.monotonic()

    async def work() -> dict[str, Any]:
        created = datetime.now(UTC)
        writer = ArchiveWriter(
            file, {"created": created.isoformat(timespec="seconds"), "source": redact_url(url)}
        )
        try:
            snapshot = await dump(url, writer)
            writer.manifest.update(
                engine=snapshot.engine, schema_version=snapshot.schema_version, counters=snapshot.counters
            )
            if not no_files:
                writer.add_store(store)
            return writer.finish()
        except BaseException:
            writer.abort()
            raise

    manifest = _run(f"cannot back up {redact_url(url)}", work)
    tables = manifest["tables"]
    summary = {
        "file": str(file),
        "bytes": file.stat().st_size,
        "engine": manifest["engine"],
        "schema_version": manifest["schema_version"],
        "source": manifest["source"],
        "rows": {name: entry["rows"] for name, entry in tables.items()},
        "files": manifest["files"],
        "store": None if no_files else str(store),
        "seconds": round(time.monotonic() - started, 2),
    }

    def human() -> None:
        rows = sum(summary["rows"].values())
        click.echo(
            f"{file}: {rows} rows in {len(tables)} tables from {summary['source']} "
            f"(schema version {summary['schema_version']}), "
            f"{manifest['files']['count']} files ({manifest['files']['bytes']} bytes)"
            + (f" from {store}" if not no_files else "")
            + f"; {summary['bytes']} bytes in {summary['seconds']} s"
        )

    _show(summary, as_json, human)


def _empty_store(store: Path, force: bool) -> None:
    if not store.is_dir() or not any(store.iterdir()):
        return
    if not force:
        raise CliError(
            f"the file store {store} is not empty; restore into an empty one, or --force to empty it"
        )
    for entry in store.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@config_option
@database_option
@store_option
@click.option(
    "--force", is_flag=True, help="Empty a database and file store that hold data first (all of it is lost)."
)
@json_option
def restore(
    file: Path,
    config_path: str | None,
    database_url: str | None,
    store_dir: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Restore a backup into an empty database and file store (stop the cluster first).

    The archive is checked first (every member's sha256, the schema version:
    not newer than this imctl's; an older one is restored, then migrated),
    then the rows are loaded with their ids, the row counts checked, and the
    files written. A database or file store that holds data is refused
    unless --force, which empties it.
    """
    from db_proxy.storage.backup import load, redact_url, refuse_occupied
    from db_proxy.storage.backup_archive import ArchiveReader

    config = config_path_of(config_path)
    url = db_config(config, database_url).database_url
    store = _store_dir(config, store_dir)
    started = time.monotonic()

    async def work() -> dict[str, Any]:
        with ArchiveReader(file) as archive:
            archive.verify()
            if not force:  # refuse before anything is written
                await refuse_occupied(url)
            _empty_store(store, force)
            loaded = await load(url, archive, force)
            count = size = 0
            for relative, mode, contents in archive.files():
                target = store / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    shutil.copyfileobj(contents, out)
                    size += out.tell()
                target.chmod(mode or 0o644)
                count += 1
            manifest = archive.manifest
        return {
            "file": str(file),
            "database": redact_url(url),
            "engine": manifest.get("engine"),
            "created": manifest.get("created"),
            "schema_version": loaded.schema_version,
            "migrated_to": loaded.migrated_to,
            "rows": loaded.rows,
            "files": {"count": count, "bytes": size},
            "store": str(store),
            "seconds": round(time.monotonic() - started, 2),
        }

    summary = _run(f"cannot restore into {redact_url(url)}", work)

    def human() -> None:
        click.echo(
            f"restored {file} (taken {summary['created']} on {summary['engine']}) "
            f"into {summary['database']}: "
            f"{sum(summary['rows'].values())} rows, {summary['files']['count']} files into {store}"
        )
        versions = f"{summary['schema_version']}"
        if summary["migrated_to"] != summary["schema_version"]:
            versions += f", migrated to {summary['migrated_to']}"
        click.echo(key_values({"schema version": versions, **summary["rows"]}))

    _show(summary, as_json, human)
