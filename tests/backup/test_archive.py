"""The archive and its manifest, without a database: rows round-trip, pages stay bounded,
and a damaged, extended, unsafe or unknown archive is refused before anything is restored."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from db_proxy.storage import backup_archive as ba
from db_proxy.storage.backup import redact_url

Rows = Sequence[tuple[object, ...]]


def write_archive(path: Path, rows: Rows, store: Path | None = None) -> dict[str, object]:
    writer = ba.ArchiveWriter(path, {"engine": "sqlite", "schema_version": 6, "created": "now"})
    dump = writer.table("messages", ["a", "b", "c"])
    for page in ba.pages(rows):
        dump.write(page)
    writer.add_table(dump)
    if store is not None:
        writer.add_store(store)
    return writer.finish()


def test_rows_round_trip_with_bytes_text_and_unsigned_values() -> None:
    row = (1, "\u4f60\u597d \U0001f600", b"\x00\xff{}", None, 2**64 - 1, -(2**63))
    assert ba.decode_row(ba.encode_row(row)) == row
    assert ba.to_unsigned(-1) == 2**64 - 1 and ba.from_unsigned(2**64 - 1) == -1
    assert ba.to_unsigned(5) == 5 and ba.from_unsigned(5) == 5


def test_pages_are_bounded_by_rows_and_bytes() -> None:
    many = [(i,) for i in range(2500)]
    assert [len(p) for p in ba.pages(many)] == [1000, 1000, 500]
    big = [(b"x" * 300_000,) for _ in range(10)]
    assert max(len(p) for p in ba.pages(big)) <= 4


@pytest.mark.parametrize("name", ["b.tar", "b.tar.gz"])
def test_archive_round_trip_with_the_file_store(tmp_path: Path, name: str) -> None:
    store = tmp_path / "files"
    (store / "ab" / "cd").mkdir(parents=True)
    (store / "ab" / "cd" / "picture").write_bytes(b"\xff\xd8 jpeg")
    (store / ".ticket-key").write_bytes(b"k" * 32)
    (store / ".ticket-key").chmod(0o600)
    rows = [(i, f"text {i}", bytes([i % 256]) * 3) for i in range(2345)]
    manifest = write_archive(tmp_path / name, rows, store)
    assert not (tmp_path / f"{name}.partial").exists()
    assert manifest["files"] == {"count": 2, "bytes": 39}
    with ba.ArchiveReader(tmp_path / name) as archive:
        archive.verify()
        assert archive.manifest["tables"]["messages"]["rows"] == 2345
        read = [row for page in archive.rows("messages") for row in page]
        assert read == rows
        files = {path: (mode, fh.read()) for path, mode, fh in archive.files()}
    assert files == {"ab/cd/picture": (0o644, b"\xff\xd8 jpeg"), ".ticket-key": (0o600, b"k" * 32)}


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """A copy of the tar with members replaced (bytes), removed (None) or added."""
    with tarfile.open(src) as old, tarfile.open(dst, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read()  # type: ignore[union-attr]
            if member.name in change:
                replaced = change.pop(member.name)
                if replaced is None:
                    continue
                data = replaced
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
        for name, data in change.items():
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            new.addfile(info, io.BytesIO(data or b""))


def test_a_damaged_member_is_refused_by_its_checksum(tmp_path: Path) -> None:
    write_archive(tmp_path / "b.tar", [(1, "one", b"1"), (2, "two", b"2")])
    # Same size, one byte changed: only the sha256 can tell.
    with tarfile.open(tmp_path / "b.tar") as tar:
        member = tar.getmember("db/messages.jsonl")
        offset = member.offset_data
    data = bytearray((tmp_path / "b.tar").read_bytes())
    data[offset + 1] ^= 0x01
    (tmp_path / "b.tar").write_bytes(bytes(data))
    with (
        ba.ArchiveReader(tmp_path / "b.tar") as archive,
        pytest.raises(ba.BadArchive, match="checksum mismatch"),
    ):
        archive.verify()


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    write_archive(tmp_path / "b.tar.gz", [(i, "x" * 50, b"") for i in range(5000)])
    data = (tmp_path / "b.tar.gz").read_bytes()
    (tmp_path / "b.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ba.BadArchive), ba.ArchiveReader(tmp_path / "b.tar.gz") as archive:
        archive.verify()


def test_row_count_off_from_the_manifest_is_refused(tmp_path: Path) -> None:
    write_archive(tmp_path / "b.tar", [(1, "one", b"1")])
    with tarfile.open(tmp_path / "b.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    manifest["tables"]["messages"]["rows"] = 2
    _rewrite(tmp_path / "b.tar", tmp_path / "c.tar", {"manifest.json": json.dumps(manifest).encode()})
    with ba.ArchiveReader(tmp_path / "c.tar") as archive:
        archive.verify()  # the members are intact
        with pytest.raises(ba.BadArchive, match="1 rows, the manifest says 2"):
            list(archive.rows("messages"))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"files/../../etc/passwd": b"x"}, "not in the manifest"),
        ({"manifest.json": None}, "manifest.json is missing"),
        ({"manifest.json": b'{"format": "something else"}'}, "not an imcluster backup"),
        ({"manifest.json": b'{"format": "imcluster-backup", "format_version": 99}'}, "format 99"),
        ({"db/messages.jsonl": None}, "missing"),
    ],
)
def test_extended_or_foreign_archives_are_refused(
    tmp_path: Path, change: dict[str, bytes | None], error: str
) -> None:
    write_archive(tmp_path / "b.tar", [(1, "one", b"1")])
    _rewrite(tmp_path / "b.tar", tmp_path / "c.tar", dict(change))
    with pytest.raises(ba.BadArchive, match=error), ba.ArchiveReader(tmp_path / "c.tar") as archive:
        archive.verify()


def test_not_a_tar_file(tmp_path: Path) -> None:
    (tmp_path / "b.tar").write_text("hello")
    with pytest.raises(ba.BadArchive, match="not a readable backup archive"):
        ba.ArchiveReader(tmp_path / "b.tar")


def test_urls_are_redacted() -> None:
    assert redact_url("mysql://root:s3cret@db:3306/im") == "mysql://root:***@db:3306/im"
    assert redact_url("mysql://root@db/im") == "mysql://root@db/im"
    assert redact_url("sqlite:///var/im.db") == "sqlite:///var/im.db"
