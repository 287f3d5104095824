"""The offline-file store (file_server.offline) on a real disk store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.filestore import BlobReader, DiskStore, StoreError
from file_server.offline import OPEN_READERS, OfflineStore, data_key, meta_key
from file_server.tasks import Offline


def offline(key: str, expires: float, size: int = 6) -> Offline:
    return Offline(key, 11, 12, "a.txt", size, time.time(), expires, complete=False)


async def test_commit_delete_and_sweep(tmp_path: Path) -> None:
    store = OfflineStore(DiskStore(tmp_path))
    now = time.time()
    live, stale = "a" * 32, "b" * 32
    for key, expires in ((live, now + 100), (stale, now - 1)):
        meta = offline(key, expires)
        await store.save_meta(meta)
        await store.write(key, b"abc")
        await store.write(key, b"def")
        assert (await store.commit(meta)).complete
    found = await store.meta(live)
    assert found is not None and found.complete and await store.read(live, 2, 10) == b"cdef"
    assert await store.meta(stale) is None  # expired: no login finds it, even before the sweep
    assert await store.sweep(now) == 1
    assert await store.store.stat(data_key(stale)) is None and await store.store.stat(meta_key(stale)) is None
    assert await store.delete(live)
    assert await store.meta(live) is None and await store.store.stat(data_key(live)) is None
    assert not await store.delete(live)


async def test_a_short_upload_is_not_committed(tmp_path: Path) -> None:
    store = OfflineStore(DiskStore(tmp_path))
    key = "c" * 32
    meta = offline(key, time.time() + 100, size=10)
    await store.save_meta(meta)
    await store.write(key, b"abc")
    try:
        await store.commit(meta)
    except Exception as exc:
        assert "expected 10" in str(exc)
    else:
        raise AssertionError("a short upload was committed")
    assert await store.store.stat(data_key(key)) is None
    found = await store.meta(key)
    assert found is not None and not found.complete


class CountingStore(DiskStore):
    """A disk store that counts opens and the readers left open."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opens = 0
        self.open_now = 0

    async def open(self, key: str) -> BlobReader | None:
        reader = await super().open(key)
        if reader is not None and not key.endswith(".meta"):
            self.opens += 1
            self.open_now += 1
            close = reader.close

            async def counted_close() -> None:
                self.open_now -= 1
                await close()

            reader.close = counted_close  # type: ignore[method-assign]
        return reader


async def test_a_download_opens_its_file_once_and_a_delete_closes_it(tmp_path: Path) -> None:
    disk = CountingStore(tmp_path)
    store = OfflineStore(disk)
    key = "d" * 32
    data = bytes(range(256)) * 1024  # 256 KiB
    meta = offline(key, time.time() + 100, size=len(data))
    await store.save_meta(meta)
    await store.write(key, data)
    await store.commit(meta)
    chunks = [await store.read(key, offset, 32 * 1024) for offset in range(0, len(data), 32 * 1024)]
    await store.read(key, 0, 1)
    assert b"".join(chunks) == data
    assert disk.opens == 1 and disk.open_now == 1  # one reader for the eight chunks
    assert await store.delete(key)
    assert disk.open_now == 0
    with pytest.raises(StoreError, match="gone"):
        await store.read(key, 0, 10)
    await store.close()


async def test_open_readers_are_bounded(tmp_path: Path) -> None:
    disk = CountingStore(tmp_path)
    store = OfflineStore(disk)
    for i in range(OPEN_READERS + 10):
        key = f"{i:032x}"
        meta = offline(key, time.time() + 100)
        await store.save_meta(meta)
        await store.write(key, b"abcdef")
        await store.commit(meta)
        assert await store.read(key, 0, 6) == b"abcdef"
    assert disk.open_now == OPEN_READERS
    await store.close()
    assert disk.open_now == 0
