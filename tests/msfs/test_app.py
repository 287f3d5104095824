"""msfs's HTTP app in-process: TeamTalk clients' uploads, downloads, and every refusal.

Requests go out as raw bytes over a real socket (tests.msfs.conftest.http),
shaped exactly as each TeamTalk client builds them (tests.msfs.clients).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from common.filestore import BlobWriter, DiskStore, StoreError
from msfs import metrics
from msfs.config import MsfsConfig
from msfs.server import Msfs
from tests.msfs import clients
from tests.msfs.conftest import get, http, read_reply


@dataclass
class Running:
    server: Msfs
    store: DiskStore
    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stored(self) -> list[Path]:
        return [p for p in (self.store.root / "msfs").rglob("*") if p.is_file()]


async def start(tmp_path: Path, **settings: Any) -> AsyncIterator[Running]:
    config = replace(MsfsConfig(store=str(tmp_path), port=0, metrics_port=-1), **settings)
    store = DiskStore(tmp_path)
    server = Msfs(config, store)
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Running(server, store, runner.addresses[0][1])
    finally:
        await runner.cleanup()


@pytest.fixture
async def msfs(tmp_path: Path) -> AsyncIterator[Running]:
    async for running in start(tmp_path):
        yield running


def refusals(reason: str) -> float:
    return metrics.REFUSALS.labels(reason)._value.get()


@pytest.mark.parametrize("client", ["android", "ios", "windows"])
async def test_teamtalk_upload_and_download(msfs: Running, client: str) -> None:
    picture = clients.png(5000) if client == "ios" else clients.jpeg(200_000)
    request = getattr(clients, client)(picture)
    reply = await http(msfs.port, request.raw(msfs.host))
    assert reply.status == 200
    # iOS/macOS (AFNetworking) accept no other type for the JSON reply.
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    answer = reply.json()
    assert answer["error_code"] == 0, answer
    assert answer["error_msg"] == "成功"
    path = answer["path"]
    assert path.startswith("g0/")
    assert answer["url"] == f"http://{msfs.host}/{path}"  # Android and iOS download this
    if client == "ios":
        assert path.endswith("_640x480.png")  # stored as what the bytes are, not image/jpeg
    if client == "windows":
        assert path.endswith("_800x600.jpg")
    # Windows downloads <msfs URL> + path: the same URL.
    download = await get(msfs.port, "/" + path)
    assert download.status == 200
    assert download.body == picture  # Android's extra CRLF is not part of the picture
    assert download.headers["content-type"] == ("image/png" if client == "ios" else "image/jpeg")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert len(msfs.stored()) == 1


async def test_names_are_unguessable_and_distinct(msfs: Running) -> None:
    picture = clients.jpeg(1000)
    paths = {
        (await http(msfs.port, clients.android(picture).raw(msfs.host))).json()["path"] for _ in range(3)
    }
    assert len(paths) == 3
    for path in paths:
        assert len(path.split("/")[1].split(".")[0]) == 32  # 128 random bits, hex


async def test_any_file_is_stored_as_octet_stream(msfs: Running) -> None:
    data = b"not a picture at all\r\n" * 10
    answer = (await http(msfs.port, clients.android(data, filename="notes.txt").raw(msfs.host))).json()
    assert answer["error_code"] == 0 and answer["path"].endswith(".txt")
    download = await get(msfs.port, "/" + answer["path"])
    assert download.body == data + b"\r\n"  # no trailer to tell Android's CRLF from the file's
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"] == "attachment"


async def refused(running: Running, raw: bytes, code: int, reason: str) -> str:
    before = refusals(reason)
    reply = await http(running.port, raw)
    assert reply.status == 200
    answer = reply.json()
    assert answer["error_code"] == code, answer
    assert answer["path"] == "" and answer["url"] == ""
    assert refusals(reason) == before + 1
    assert running.stored() == []
    assert list(running.store.tmp_dir.iterdir()) == []
    return str(answer["error_msg"])


async def test_claimed_picture_that_is_not_one(msfs: Running) -> None:
    request = clients.windows(b"<html><script>alert(1)</script></html>")
    message = await refused(msfs, request.raw(msfs.host), 6, "type_mismatch")
    assert "not a picture" in message


async def test_type_not_allowed(msfs: Running) -> None:
    raw = clients.android(clients.jpeg(100)).raw(msfs.host)
    raw = raw.replace(b"Content-Type:application/octet-stream", b"Content-Type:text/html        ")
    message = await refused(msfs, raw, 5, "type_not_allowed")
    assert "text/html" in message


async def test_octet_stream_can_be_turned_off(tmp_path: Path) -> None:
    async for running in start(tmp_path, allowed_types=("image/jpeg", "image/png")):
        ok = await http(running.port, clients.android(clients.jpeg(100)).raw(running.host))
        assert ok.json()["error_code"] == 0  # Android's octet-stream picture: a JPEG by its bytes
        raw = clients.android(b"plain text", filename="a.txt").raw(running.host)
        before = refusals("type_not_allowed")
        assert (await http(running.port, raw)).json()["error_code"] == 5
        assert refusals("type_not_allowed") == before + 1


async def test_malformed_bodies(msfs: Running) -> None:
    good = clients.android(clients.jpeg(1000))
    not_multipart = clients.Request("/", [("Content-Type", "application/json")], b'{"a": 1}')
    await refused(msfs, not_multipart.raw(msfs.host), 2, "malformed")
    no_boundary = clients.Request("/", [("Content-Type", "multipart/form-data")], good.body)
    await refused(msfs, no_boundary.raw(msfs.host), 2, "malformed")
    garbage = clients.Request("/", good.headers, b"this is not a multipart body at all")
    await refused(msfs, garbage.raw(msfs.host), 2, "malformed")
    # The closing boundary never comes: the body ends mid-file.
    truncated = clients.Request("/", good.headers, good.body[: len(good.body) // 2])
    await refused(msfs, truncated.raw(msfs.host), 2, "malformed")


async def test_no_file_part_and_empty_file(msfs: Running) -> None:
    boundary = "Boundary+0000000000000000"
    headers = [("Content-Type", f"multipart/form-data; boundary={boundary}")]
    fields_only = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\nim_image\r\n--{boundary}--\r\n'
    )
    await refused(msfs, clients.Request("/", headers, fields_only.encode()).raw(msfs.host), 3, "no_file")
    android = clients.android(b"")
    empty = clients.Request("/", android.headers, android.body.replace(b"\r\n\r\n\r\n--", b"\r\n\r\n--"))
    await refused(msfs, empty.raw(msfs.host), 4, "empty")


async def test_too_large(tmp_path: Path) -> None:
    async for running in start(tmp_path, max_upload_size=100_000):
        ok = await http(running.port, clients.android(clients.jpeg(100_000)).raw(running.host))
        assert ok.json()["error_code"] == 0  # exactly the limit (+ Android's CRLF) is fine
        running.store.root.joinpath("msfs").rename(running.store.root / "kept")
        message = await refused(
            running, clients.android(clients.jpeg(100_001)).raw(running.host), 1, "too_large"
        )
        assert "100000 bytes" in message


async def test_rate_limit_per_address(tmp_path: Path) -> None:
    async for running in start(tmp_path, uploads_per_minute=2):
        raw = clients.android(clients.jpeg(500)).raw(running.host)
        for _ in range(2):
            assert (await http(running.port, raw)).json()["error_code"] == 0
        running.store.root.joinpath("msfs").rename(running.store.root / "kept")
        before = refusals("rate_limited")
        reply = await http(running.port, raw)
        assert reply.json()["error_code"] == 7
        assert reply.headers["retry-after"] == "1"
        assert refusals("rate_limited") == before + 1


async def test_too_many_at_once(tmp_path: Path) -> None:
    async for running in start(tmp_path, max_concurrent_uploads=1):
        first = clients.android(clients.jpeg(300_000)).raw(running.host)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(first[:150_000])  # half of it: this upload holds the one slot
        await writer.drain()
        for _ in range(200):
            if running.server.active == 1:
                break
            await asyncio.sleep(0.01)
        before = refusals("busy")
        reply = await http(running.port, clients.android(clients.jpeg(500)).raw(running.host))
        assert reply.json()["error_code"] == 8 and reply.headers["retry-after"] == "1"
        assert refusals("busy") == before + 1
        writer.write(first[150_000:])  # the first one completes normally
        assert (await read_reply(reader)).json()["error_code"] == 0
        writer.close()
        assert running.server.active == 0 and len(running.stored()) == 1


class _FailingStore(DiskStore):
    async def create(self, key: str) -> BlobWriter:
        writer = await super().create(key)
        real_write = writer.write

        async def write(data: bytes) -> None:
            await real_write(data)
            if writer.size > 10_000:
                raise StoreError("disk full")

        writer.write = write  # type: ignore[method-assign]
        return writer


async def test_store_failure(msfs: Running, tmp_path: Path) -> None:
    msfs.server.store = msfs.store = _FailingStore(tmp_path)
    message = await refused(msfs, clients.android(clients.jpeg(100_000)).raw(msfs.host), 10, "store_failed")
    assert "disk full" in message


@pytest.mark.parametrize(
    "path",
    [
        "/g0/0123456789abcdef0123456789abcdef.jpg",  # well formed, never stored
        "/g0/..%2F..%2Fetc%2Fpasswd",
        "/g0/%2e%2e",
        "/g0/.tmp",
        "/g0/a%0A",
        "/g1/x.jpg",
        "/",
        "/msfs/x.jpg",
    ],
)
async def test_downloads_of_unknown_or_bad_paths_are_404(msfs: Running, path: str) -> None:
    msfs.store.tmp_dir.joinpath("secret").write_bytes(b"x")
    assert (await get(msfs.port, path)).status == 404


async def test_host_header_is_not_echoed_when_hostile(msfs: Running) -> None:
    raw = clients.android(clients.jpeg(100)).raw("evil.example/<script>")
    answer = (await http(msfs.port, raw)).json()
    assert answer["url"] == f"http://127.0.0.1:{msfs.port}/{answer['path']}"


async def test_public_url(tmp_path: Path) -> None:
    async for running in start(tmp_path, public_url="https://pics.example.com/msfs"):
        answer = (await http(running.port, clients.ios(clients.png()).raw(running.host))).json()
        assert answer["url"] == f"https://pics.example.com/msfs/{answer['path']}"


async def test_head_and_cache_headers(msfs: Running) -> None:
    answer = (await http(msfs.port, clients.android(clients.jpeg(5000)).raw(msfs.host))).json()
    raw = f"HEAD /{answer['path']} HTTP/1.1\r\nHost: {msfs.host}\r\nConnection: close\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", msfs.port)
    writer.write(raw)
    head = await reader.read()  # the server closes after the headers: no body follows
    writer.close()
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 5000" in head and b"immutable" in head


async def test_client_gone_mid_upload_leaves_nothing(msfs: Running) -> None:
    before = refusals("aborted")
    raw = clients.android(clients.jpeg(2_000_000)).raw(msfs.host)
    _reader, writer = await asyncio.open_connection("127.0.0.1", msfs.port)
    writer.write(raw[:500_000])
    await writer.drain()
    for _ in range(100):  # until the server has started writing it
        if list(msfs.store.tmp_dir.iterdir()):
            break
        await asyncio.sleep(0.01)
    writer.close()
    for _ in range(200):
        if refusals("aborted") == before + 1:
            break
        await asyncio.sleep(0.01)
    assert refusals("aborted") == before + 1
    assert list(msfs.store.tmp_dir.iterdir()) == [] and msfs.stored() == []
    assert msfs.server.active == 0


async def test_slow_upload_times_out(tmp_path: Path) -> None:
    async for running in start(tmp_path, upload_timeout=0.3):
        before = refusals("timeout")
        raw = clients.android(clients.jpeg(200_000)).raw(running.host)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(raw[:100_000])  # then nothing: a client trickling, or gone silent
        reply = await asyncio.wait_for(read_reply(reader), 5)
        writer.close()
        await writer.wait_closed()
        assert reply.json()["error_code"] == 9
        assert refusals("timeout") == before + 1
        assert list(running.store.tmp_dir.iterdir()) == [] and running.stored() == []


async def test_non_ascii_file_names(msfs: Running) -> None:
    # Android writes the file name as UTF-8 into the part header.
    request = clients.android(clients.jpeg(1000), filename="图片_100x200.jpg")
    answer = (await http(msfs.port, request.raw(msfs.host))).json()
    assert answer["error_code"] == 0 and answer["path"].endswith("_100x200.jpg")
    request = clients.android(b"%PDF-1.4 ...", filename="报告.pdf")
    assert (await http(msfs.port, request.raw(msfs.host))).json()["path"].endswith(".pdf")
