"""Blobs on a local disk, in sharded directories.

``<root>/<namespace>/<aa>/<bb>/<name>``, where ``aa/bb`` are the first hex
digits of the name's SHA-256: no directory grows past a few thousand entries
however many pictures there are. A blob is written to ``<root>/.tmp`` and
renamed into place on commit (after an fsync), so a reader never sees half
a file and a crash leaves only a temporary file, removed at the next start.
Disk calls run in a thread: a slow disk never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from common.filestore.base import (
    BlobInfo,
    BlobReader,
    BlobStore,
    BlobWriter,
    StoreError,
    check_key,
    check_namespace,
)

STALE_AFTER = 6 * 3600.0  # seconds; far longer than any upload may take


class DiskStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str], now: float | None = None) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {self.root}: {exc.strerror}") from exc
        self.swept = sweep_stale(self._tmp, time.time() if now is None else now)

    @property
    def tmp_dir(self) -> Path:
        """Where blobs being written are (tests check it is empty after a refusal)."""
        return self._tmp

    def path_of(self, key: str) -> Path:
        namespace, name = check_key(key).split("/", 1)
        digest = hashlib.sha256(name.encode()).hexdigest()
        return self.root / namespace / digest[:2] / digest[2:4] / name

    async def create(self, key: str) -> BlobWriter:
        final = self.path_of(key)
        tmp = self._tmp / f"{secrets.token_hex(8)}.part"
        try:
            handle = await asyncio.to_thread(tmp.open, "wb")
        except OSError as exc:
            raise StoreError(f"cannot write {key}: {exc.strerror}") from exc
        return _DiskWriter(key, handle, tmp, final)

    async def open(self, key: str) -> BlobReader | None:
        path = self.path_of(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {key}: {exc.strerror}") from exc
        return _DiskReader(handle, os.fstat(handle.fileno()).st_size)

    async def stat(self, key: str) -> BlobInfo | None:
        path = self.path_of(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot stat {key}: {exc.strerror}") from exc
        return BlobInfo(key, st.st_size, st.st_mtime)

    async def delete(self, key: str) -> bool:
        path = self.path_of(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot delete {key}: {exc.strerror}") from exc
        return True

    async def keys(self, namespace: str) -> AsyncIterator[BlobInfo]:
        base = self.root / check_namespace(namespace)
        found = await asyncio.to_thread(_walk, base)
        for name, size, mtime in found:
            yield BlobInfo(f"{namespace}/{name}", size, mtime)


def sweep_stale(tmp: Path, now: float) -> int:
    """Remove temporary files a crash left (older than :data:`STALE_AFTER`); how many."""
    removed = 0
    for stale in tmp.iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
            if now - stale.stat().st_mtime > STALE_AFTER:
                stale.unlink()
                removed += 1
    return removed


def _walk(base: Path) -> list[tuple[str, int, float]]:
    result: list[tuple[str, int, float]] = []
    if not base.is_dir():
        return result
    for shard in base.iterdir():
        for sub in shard.iterdir() if shard.is_dir() else ():
            for blob in sub.iterdir() if sub.is_dir() else ():
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    st = blob.stat()
                    result.append((blob.name, st.st_size, st.st_mtime))
    return result


class _DiskWriter(BlobWriter):
    def __init__(self, key: str, handle: BinaryIO, tmp: Path, final: Path) -> None:
        self.key = key
        self.size = 0
        self._handle = handle
        self._tmp = tmp
        self._final = final
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StoreError(f"{self.key}: write after commit or abort")
        try:
            await asyncio.to_thread(self._handle.write, data)
        except OSError as exc:
            await self.abort()
            raise StoreError(f"cannot write {self.key}: {exc.strerror}") from exc
        self.size += len(data)

    async def commit(self) -> BlobInfo:
        if self._done:
            raise StoreError(f"{self.key}: committed or aborted already")
        try:
            mtime = await asyncio.to_thread(self._commit)
        except OSError as exc:
            await self.abort()
            raise StoreError(f"cannot store {self.key}: {exc.strerror}") from exc
        self._done = True
        return BlobInfo(self.key, self.size, mtime)

    def _commit(self) -> float:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)
        _fsync_dir(self._final.parent)  # the rename itself survives a power cut
        return self._final.stat().st_mtime

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._tmp.unlink)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DiskReader(BlobReader):
    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self.size = size

    async def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StoreError(f"bad range: offset {offset}, length {length}")
        if length == 0 or offset >= self.size:
            return b""
        try:
            return await asyncio.to_thread(os.pread, self._handle.fileno(), length, offset)
        except OSError as exc:
            raise StoreError(f"cannot read: {exc.strerror}") from exc

    async def close(self) -> None:
        self._handle.close()
