"""DiskStore, the default BlobStore: atomic commit, abort leaves nothing, sharded keys, ranges."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from common.config import ConfigError
from common.filestore import DiskStore, StoreError, check_key, check_namespace, open_store
from common.filestore.disk import STALE_AFTER


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path)


async def test_nothing_is_visible_before_commit(store: DiskStore) -> None:
    writer = await store.create("msfs/a.jpg")
    await writer.write(b"hello ")
    await writer.write(b"world")
    assert writer.size == 11
    assert await store.stat("msfs/a.jpg") is None
    assert await store.open("msfs/a.jpg") is None
    assert len(list(store.tmp_dir.iterdir())) == 1
    info = await writer.commit()
    assert (info.key, info.size) == ("msfs/a.jpg", 11)
    assert list(store.tmp_dir.iterdir()) == []
    stat = await store.stat("msfs/a.jpg")
    assert stat is not None and stat.size == 11
    reader = await store.open("msfs/a.jpg")
    assert reader is not None and reader.size == 11
    assert await reader.read(0, 100) == b"hello world"
    await reader.close()


async def test_commit_replaces_atomically(store: DiskStore) -> None:
    first = await store.create("offline/k")
    await first.write(b"old")
    await first.commit()
    reader = await store.open("offline/k")  # a reader of the old blob keeps it whole
    second = await store.create("offline/k")
    await second.write(b"new content")
    stat = await store.stat("offline/k")
    assert stat is not None and stat.size == 3  # still the old one until commit
    await second.commit()
    assert reader is not None and await reader.read(0, 10) == b"old"
    await reader.close()
    again = await store.open("offline/k")
    assert again is not None and await again.read(0, 100) == b"new content"
    await again.close()


async def test_abort_leaves_nothing(store: DiskStore) -> None:
    writer = await store.create("msfs/b.png")
    await writer.write(b"x" * 100_000)
    await writer.abort()
    await writer.abort()  # twice is fine
    assert await store.stat("msfs/b.png") is None
    assert list(store.tmp_dir.iterdir()) == []
    assert not (store.root / "msfs").exists() or not any(
        p.is_file() for p in (store.root / "msfs").rglob("*")
    )
    with pytest.raises(StoreError):
        await writer.write(b"more")
    with pytest.raises(StoreError):
        await writer.commit()


async def test_abort_after_commit_keeps_the_blob(store: DiskStore) -> None:
    writer = await store.create("msfs/c")
    await writer.write(b"kept")
    await writer.commit()
    await writer.abort()
    assert await store.stat("msfs/c") is not None


async def test_keys_are_sharded(store: DiskStore) -> None:
    names = [f"pic{i}.jpg" for i in range(50)]
    for name in names:
        writer = await store.create(f"msfs/{name}")
        await writer.write(name.encode())
        await writer.commit()
    path = store.path_of("msfs/pic0.jpg")
    relative = path.relative_to(store.root).parts
    assert relative[0] == "msfs" and len(relative) == 4 and relative[3] == "pic0.jpg"
    assert all(len(part) == 2 for part in relative[1:3])
    shards = {store.path_of(f"msfs/{n}").parent for n in names}
    assert len(shards) > 40  # spread out, not one directory
    listed = sorted([info.key async for info in store.keys("msfs")])
    assert listed == sorted(f"msfs/{n}" for n in names)
    assert [info async for info in store.keys("offline")] == []


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "msfs/../x",
        "msfs/..",
        "msfs/.tmp",
        "msfs/a/b",
        "/msfs/a",
        "msfs/",
        "msfs",
        "MSFS/a",
        ".tmp/a",
        "msfs/a\n",
        "msfs/a b",
        "msfs/-a",
        "msfs/" + "a" * 200,
        "msfs/a\x00",
    ],
)
async def test_bad_keys_are_refused(store: DiskStore, key: str) -> None:
    with pytest.raises(StoreError):
        check_key(key)
    with pytest.raises(StoreError):
        await store.create(key)
    with pytest.raises(StoreError):
        await store.open(key)
    with pytest.raises(StoreError):
        await store.stat(key)
    with pytest.raises(StoreError):
        await store.delete(key)


async def test_bad_namespaces_are_refused(store: DiskStore) -> None:
    assert check_namespace("offline") == "offline"
    for namespace in ("..", ".tmp", "a/b", ""):
        with pytest.raises(StoreError):
            [info async for info in store.keys(namespace)]


async def test_read_ranges(store: DiskStore) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    writer = await store.create("offline/r")
    await writer.write(data)
    await writer.commit()
    reader = await store.open("offline/r")
    assert reader is not None and reader.size == len(data)
    assert await reader.read(0, 10) == data[:10]
    assert await reader.read(1000, 4096) == data[1000:5096]
    assert await reader.read(10_000, 4096) == data[10_000:]  # short only at the end
    assert await reader.read(len(data), 10) == b""
    assert await reader.read(50_000, 10) == b""
    assert await reader.read(5, 0) == b""
    for offset, length in ((-1, 10), (0, -1)):
        with pytest.raises(StoreError):
            await reader.read(offset, length)
    await reader.close()


async def test_delete(store: DiskStore) -> None:
    writer = await store.create("offline/d")
    await writer.write(b"x")
    await writer.commit()
    assert await store.delete("offline/d") is True
    assert await store.delete("offline/d") is False
    assert await store.open("offline/d") is None


def test_only_stale_temporary_files_are_swept(tmp_path: Path) -> None:
    tmp = tmp_path / ".tmp"
    tmp.mkdir()
    stale, live = tmp / "old.part", tmp / "live.part"
    stale.write_bytes(b"crashed mid-write")
    live.write_bytes(b"another server is writing this")
    old = time.time() - STALE_AFTER - 10
    os.utime(stale, (old, old))
    store = DiskStore(tmp_path)
    assert store.swept == 1
    assert not stale.exists() and live.exists()  # msfs and file_server share the root


def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path / "a")), DiskStore)
    by_url = open_store(f"file://{tmp_path}/b")
    assert isinstance(by_url, DiskStore) and by_url.root == tmp_path / "b"
    with pytest.raises(ConfigError, match="s3://"):
        open_store("s3://bucket/prefix")
