"""Offline files in the blob store: ``offline/<task key>`` and its ``.meta``.

The meta (JSON: from, to, name, size, created, expires, complete) is
written when the task is made, so an upload can start again after a
restart, and rewritten with ``complete`` once the data is committed: a
download needs a complete meta, so it never sees half a file. The data is
streamed into a blob writer and committed after the last byte. Deleting
removes both; a deleted file is gone. Expired files are swept.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace

from common.filestore import BlobReader, BlobStore, BlobWriter, StoreError
from file_server.tasks import Offline

log = logging.getLogger("file.offline")

NAMESPACE = "offline"
META = ".meta"


def data_key(key: str) -> str:
    return f"{NAMESPACE}/{key}"


def meta_key(key: str) -> str:
    return f"{NAMESPACE}/{key}{META}"


#: Readers kept open between the chunks of downloads (file descriptors on a disk store).
OPEN_READERS = 64


@dataclass(slots=True)
class _OpenReader:
    reader: BlobReader
    users: int = 0  # reads in progress: an open reader is closed only when none is


class OfflineStore:
    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.uploads: dict[str, BlobWriter] = {}  # task key -> the upload being written
        self._readers: OrderedDict[str, _OpenReader] = OrderedDict()  # task key -> its open reader

    async def save_meta(self, offline: Offline) -> None:
        writer = await self.store.create(meta_key(offline.key))
        try:
            await writer.write(json.dumps(asdict(offline)).encode())
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def meta(self, key: str) -> Offline | None:
        """The meta of an offline file, or None (never made, deleted, expired, unreadable)."""
        reader = await self.store.open(meta_key(key))
        if reader is None:
            return None
        try:
            raw = await reader.read(0, 64 * 1024)
        finally:
            await reader.close()
        try:
            offline = Offline(**json.loads(raw))
        except (ValueError, TypeError) as exc:
            log.warning("offline file %s: unreadable meta (%s)", key, exc)
            return None
        if offline.key != key or offline.expires <= time.time():
            return None
        return offline

    async def write(self, key: str, data: bytes) -> None:
        writer = self.uploads.get(key)
        if writer is None:
            writer = self.uploads[key] = await self.store.create(data_key(key))
        await writer.write(data)

    async def abort(self, key: str) -> None:
        writer = self.uploads.pop(key, None)
        if writer is not None:
            await writer.abort()

    async def commit(self, offline: Offline) -> Offline:
        writer = self.uploads.pop(offline.key, None)
        if writer is None:
            raise StoreError(f"no upload of {offline.key} to commit")
        await self._forget_reader(offline.key)
        if writer.size != offline.size:
            await writer.abort()
            raise StoreError(f"upload of {offline.key}: {writer.size} bytes, expected {offline.size}")
        try:
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        complete = replace(offline, complete=True)
        await self.save_meta(complete)
        return complete

    async def read(self, key: str, offset: int, length: int) -> bytes:
        """A chunk of a committed file. Its reader stays open for the next chunk (a download
        pulls thousands; on an object store an open is a request of its own)."""
        open_reader = self._readers.pop(key, None)
        if open_reader is None:
            reader = await self.store.open(data_key(key))
            if reader is None:
                raise StoreError(f"offline file {key} is gone")
            open_reader = _OpenReader(reader)
        self._readers[key] = open_reader  # the most recently used last
        open_reader.users += 1
        try:
            return await open_reader.reader.read(offset, length)
        except BaseException:
            if self._readers.get(key) is open_reader:  # broken: the next read opens afresh
                del self._readers[key]
            raise
        finally:
            open_reader.users -= 1
            if open_reader.users == 0 and self._readers.get(key) is not open_reader:
                await open_reader.reader.close()  # forgotten meanwhile (deleted, broken)
            await self._close_idle_readers()

    async def close(self) -> None:
        """Shutting down: close the open readers, then the store."""
        readers, self._readers = list(self._readers.values()), OrderedDict()
        for open_reader in readers:
            await open_reader.reader.close()
        await self.store.close()

    async def _close_idle_readers(self) -> None:
        """Past OPEN_READERS, close the least recently used readers no read is using."""
        excess = len(self._readers) - OPEN_READERS
        if excess > 0:
            for key in [k for k, r in self._readers.items() if r.users == 0][:excess]:
                await self._readers.pop(key).reader.close()

    async def _forget_reader(self, key: str) -> None:
        """The data changes or goes: a reader open on it must not serve it again (one that a
        read is using is closed when that read ends)."""
        open_reader = self._readers.pop(key, None)
        if open_reader is not None and open_reader.users == 0:
            await open_reader.reader.close()

    async def delete(self, key: str) -> bool:
        """Remove an offline file (meta first: from then on no login finds it)."""
        await self._forget_reader(key)
        await self.abort(key)
        had_meta = await self.store.delete(meta_key(key))
        had_data = await self.store.delete(data_key(key))
        return had_meta or had_data

    async def sweep(self, now: float) -> int:
        """Delete every offline file past its expiry; how many."""
        expired: list[str] = []
        async for info in self.store.keys(NAMESPACE):
            name = info.key.removeprefix(f"{NAMESPACE}/")
            if not name.endswith(META):
                continue
            key = name.removesuffix(META)
            try:
                reader = await self.store.open(info.key)
                if reader is None:
                    continue
                try:
                    expires = float(json.loads(await reader.read(0, 64 * 1024))["expires"])
                finally:
                    await reader.close()
            except (ValueError, KeyError, TypeError):
                expires = 0.0  # unreadable: nobody can download it
            if expires <= now:
                expired.append(key)
        for key in expired:
            await self.delete(key)
        # Data without a meta (a crash between the two deletes) is swept as well.
        async for info in self.store.keys(NAMESPACE):
            name = info.key.removeprefix(f"{NAMESPACE}/")
            if (
                not name.endswith(META)
                and info.mtime < now - 3600
                and await self.store.stat(meta_key(name)) is None
            ):
                await self.store.delete(info.key)
                expired.append(name)
        return len(expired)
