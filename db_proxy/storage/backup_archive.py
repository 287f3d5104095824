"""The backup archive: one tar file (gzip if named .gz/.tgz) of engine-neutral rows.

Members: ``db/<table>.jsonl`` (one JSON array per row, in the order of the
table's columns; bytes as ``{"b64": ...}``), ``files/...`` (the file store of
pictures and offline files) and ``manifest.json``, written last because it
holds the sha256 and the row count of every other member. Rows are written
and read in bounded pages, so no table is ever held whole in memory.

The format names no engine: a SQLite backup restores into MariaDB and back.
Unsigned 64-bit values are stored unsigned (SQLite keeps their upper half
as negative numbers: :func:`to_unsigned` and :func:`from_unsigned`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from common.errors import InvalidArgument

FORMAT = "imcluster-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DB_DIR = "db"
FILES_DIR = "files"
PAGE_ROWS = 1000  # rows per page read from a database or from the archive
PAGE_BYTES = 1 << 20  # and at most this much row data, whatever the count
COPY_CHUNK = 1 << 16
U64 = 1 << 64
I64_MAX = (1 << 63) - 1

Row = tuple[Any, ...]


class BadArchive(InvalidArgument):
    """Not a backup, a damaged one (checksum, row count), or a format this code does not read."""


def _default(value: object) -> object:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"cannot back up a {type(value).__name__} value")


def _decode(obj: dict[str, Any]) -> object:
    if obj.keys() == {"b64"}:
        return base64.b64decode(obj["b64"])
    raise ValueError(f"unexpected object in a row: {sorted(obj)}")


def encode_row(row: Row) -> bytes:
    return json.dumps(list(row), ensure_ascii=False, separators=(",", ":"), default=_default).encode() + b"\n"


def decode_row(line: bytes) -> Row:
    values = json.loads(line, object_hook=_decode)
    if not isinstance(values, list):
        raise ValueError("a row is not a JSON array")
    return tuple(values)


def to_unsigned(value: object) -> object:
    """An unsigned 64-bit column's value as read from SQLite, in its true (unsigned) form."""
    return value + U64 if isinstance(value, int) and value < 0 else value


def from_unsigned(value: object) -> object:
    """The inverse, for writing into SQLite."""
    return value - U64 if isinstance(value, int) and value > I64_MAX else value


def row_size(row: Row) -> int:
    return sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in row)


def pages(rows: Iterable[Row]) -> Iterator[list[Row]]:
    """``rows`` in pages of at most PAGE_ROWS rows and about PAGE_BYTES."""
    page: list[Row] = []
    size = 0
    for row in rows:
        page.append(row)
        size += row_size(row)
        if len(page) >= PAGE_ROWS or size >= PAGE_BYTES:
            yield page
            page, size = [], 0
    if page:
        yield page


@dataclass
class TableDump:
    """One table being written: rows go to a temporary file, hashed and counted on the way."""

    name: str
    columns: list[str]
    file: IO[bytes]
    rows: int = 0

    def __post_init__(self) -> None:
        self.sha = hashlib.sha256()

    def write(self, page: Iterable[Row]) -> None:
        for row in page:
            data = encode_row(row)
            self.sha.update(data)
            self.file.write(data)
            self.rows += 1


class _HashingReader(io.RawIOBase):
    """A file read through sha256 (what tarfile copies into the archive is what is hashed)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data


def _compressed(path: Path) -> bool:
    return path.name.endswith((".gz", ".tgz"))


class ArchiveWriter:
    """Writes ``path`` (via ``path.partial``, renamed at :meth:`finish`: a failed backup
    leaves no archive that looks whole)."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        # Open across calls (a table, then the next): closed by finish() or abort().
        self.tar = tarfile.open(self.partial, "w:gz" if _compressed(path) else "w")  # noqa: SIM115
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **header,
            "tables": {},
            "files": {"count": 0, "bytes": 0},
            "members": {},
        }

    def table(self, name: str, columns: list[str]) -> TableDump:
        return TableDump(name, columns, tempfile.TemporaryFile())

    def add_table(self, dump: TableDump) -> None:
        member = f"{DB_DIR}/{dump.name}.jsonl"
        dump.file.flush()
        info = tarfile.TarInfo(member)
        info.size = dump.file.tell()
        info.mtime = int(time.time())
        dump.file.seek(0)
        self.tar.addfile(info, dump.file)
        dump.file.close()
        self.manifest["tables"][dump.name] = {"columns": dump.columns, "rows": dump.rows, "member": member}
        self.manifest["members"][member] = dump.sha.hexdigest()

    def add_store(self, store: Path) -> None:
        """Every regular file under ``store``, as ``files/<its path under store>``."""
        if not store.is_dir():
            return
        for directory, dirs, names in os.walk(store):
            dirs.sort()
            for name in sorted(names):
                path = Path(directory, name)
                if path.is_symlink() or not path.is_file():
                    continue
                try:
                    raw = path.open("rb")
                except FileNotFoundError:
                    continue  # deleted (expired) since it was listed
                with raw:
                    stat = os.fstat(raw.fileno())
                    member = f"{FILES_DIR}/{path.relative_to(store).as_posix()}"
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), stat.st_mode & 0o777
                    reader = _HashingReader(raw)
                    self.tar.addfile(info, reader)
                self.manifest["members"][member] = reader.sha.hexdigest()
                self.manifest["files"]["count"] += 1
                self.manifest["files"]["bytes"] += stat.st_size

    def finish(self) -> dict[str, Any]:
        data = json.dumps(self.manifest, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mtime = int(time.time())
        self.tar.addfile(info, io.BytesIO(data))
        self.tar.close()
        self.partial.replace(self.path)
        return self.manifest

    def abort(self) -> None:
        self.tar.close()
        self.partial.unlink(missing_ok=True)


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and bool(path.parts)


class ArchiveReader:
    """A backup opened for restore: :meth:`verify` first, then :meth:`rows` and :meth:`files`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close() / __exit__
            self.members = {m.name: m for m in self.tar.getmembers()}
        except (OSError, tarfile.TarError, EOFError, _zlib_error()) as exc:
            if hasattr(self, "tar"):
                self.tar.close()
            raise BadArchive(f"{path} is not a readable backup archive: {exc}") from None
        try:
            self.manifest = self._manifest()
        except BaseException:
            self.tar.close()
            raise

    def close(self) -> None:
        self.tar.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        fh = self.tar.extractfile(member) if member is not None and member.isfile() else None
        if fh is None:
            raise BadArchive(f"{self.path}: member {name} is missing")
        return fh

    def _manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self._open(MANIFEST).read())
        except (ValueError, OSError, tarfile.TarError, EOFError) as exc:
            raise BadArchive(f"{self.path}: unreadable {MANIFEST}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BadArchive(f"{self.path} is not an imcluster backup (no {FORMAT} manifest)")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BadArchive(
                f"{self.path}: backup format {manifest.get('format_version')}, "
                f"this imctl reads {FORMAT_VERSION}"
            )
        for key in ("tables", "members", "files"):
            if not isinstance(manifest.get(key), dict):
                raise BadArchive(f"{self.path}: the manifest has no {key}")
        if not isinstance(manifest.get("schema_version"), int):
            raise BadArchive(f"{self.path}: the manifest has no schema_version")
        return manifest

    def verify(self) -> None:
        """Every member listed, present, safe to extract and matching its sha256; nothing extra."""
        listed: dict[str, str] = self.manifest["members"]
        extra = sorted(set(self.members) - set(listed) - {MANIFEST})
        if extra:
            raise BadArchive(f"{self.path}: member {extra[0]} is not in the manifest")
        for table, entry in self.manifest["tables"].items():
            if entry.get("member") not in listed or not str(table).isidentifier():
                raise BadArchive(f"{self.path}: the manifest's table {table!r} is malformed")
        for name, expected in listed.items():
            if not _safe_member(name) or not name.startswith((f"{DB_DIR}/", f"{FILES_DIR}/")):
                raise BadArchive(f"{self.path}: unsafe member name {name!r}")
            sha = hashlib.sha256()
            try:
                with self._open(name) as fh:
                    for chunk in iter(lambda fh=fh: fh.read(COPY_CHUNK), b""):  # type: ignore[misc]
                        sha.update(chunk)
            except (OSError, tarfile.TarError, EOFError, _zlib_error()) as exc:
                raise BadArchive(f"{self.path}: member {name} is damaged: {exc}") from None
            if sha.hexdigest() != expected:
                raise BadArchive(f"{self.path}: checksum mismatch in {name}: the archive is damaged")

    def rows(self, table: str) -> Iterator[list[Row]]:
        """The table's rows in pages; BadArchive if a row does not parse or the count is off."""
        entry = self.manifest["tables"][table]
        width = len(entry["columns"])
        count = 0

        def parsed() -> Iterator[Row]:
            nonlocal count
            with self._open(entry["member"]) as fh:
                for line in fh:
                    count += 1
                    try:
                        row = decode_row(line)
                    except ValueError as exc:
                        raise BadArchive(f"{self.path}: {table} row {count}: {exc}") from None
                    if len(row) != width:
                        raise BadArchive(f"{self.path}: {table} row {count} has {len(row)} values")
                    yield row

        yield from pages(parsed())
        if count != entry["rows"]:
            raise BadArchive(f"{self.path}: {table} has {count} rows, the manifest says {entry['rows']}")

    def files(self) -> Iterator[tuple[str, int, IO[bytes]]]:
        """(path under the store, mode, contents) of each stored file."""
        for name in self.manifest["members"]:
            if name.startswith(f"{FILES_DIR}/"):
                member = self.members[name]
                with self._open(name) as fh:
                    yield name[len(FILES_DIR) + 1 :], member.mode & 0o777, fh


def _zlib_error() -> type[Exception]:
    import zlib

    return zlib.error
