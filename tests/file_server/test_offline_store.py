"""The offline-file store (file_server.offline) on a real disk store."""

from __future__ import annotations

import time
from pathlib import Path

from common.filestore import DiskStore
from file_server.offline import OfflineStore, data_key, meta_key
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
