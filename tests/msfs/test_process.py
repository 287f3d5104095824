"""msfs as a real process (``python -m imctl run msfs``): the upload path end to end,
streamed refusals, and memory that stays flat while 10 MiB stream through."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imctl.cluster import ServerProcess
from tests.msfs import clients
from tests.msfs.conftest import Reply, get, http, read_reply

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def msfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    run = tmp_path_factory.mktemp("msfs")
    server = ServerProcess(
        "msfs",
        "msfs-1",
        {
            "host": "127.0.0.1",
            "port": "0",
            "metrics_port": "0",
            "store": str(run / "files"),
            "uploads_per_minute": "1000",
        },
        run / "ready.json",
        run / "msfs.log",
    )
    server.start(None)
    try:
        if not server.wait_ready(20):
            sys.stderr.write(server.log_file.read_text())
            pytest.fail("msfs did not start")
        yield server
    finally:
        server.stop(10)
    assert server.process is not None and server.process.returncode == 0  # SIGTERM: a clean stop


def port_of(server: ServerProcess) -> int:
    return int(str(server.info["port"]))


def store_of(server: ServerProcess) -> Path:
    return Path(server.overrides["store"])


def peak_rss(server: ServerProcess) -> int:
    """The process's high-water resident set, in bytes (VmHWM)."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert match
    return int(match[1]) * 1024


async def metric(server: ServerProcess, line_start: str) -> float:
    text = (await get(int(str(server.info["metrics_port"])), "/metrics")).body.decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in /metrics")


async def test_android_upload_then_download(msfs: ServerProcess) -> None:
    port = port_of(msfs)
    picture = clients.jpeg(300_000)
    reply = await http(port, clients.android(picture).raw(f"127.0.0.1:{port}"), chunks=4096)
    answer = reply.json()
    assert answer["error_code"] == 0, answer
    assert answer["url"] == f"http://127.0.0.1:{port}/{answer['path']}"
    download = await get(port, "/" + answer["path"])
    assert download.status == 200 and download.body == picture
    health = (await get(int(str(msfs.info["metrics_port"])), "/healthz")).json()
    assert health["ok"] is True and health["node_id"] == "msfs-1"


async def chunked_upload(port: int, total: int) -> tuple[Reply, int]:
    """Android's shape, but streamed (Transfer-Encoding: chunked) with no length up front.

    Stops sending once the reply is in; returns it and the bytes sent.
    """
    head, tail = clients.android_framing()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = ["POST / HTTP/1.1", f"Host: 127.0.0.1:{port}", "Transfer-Encoding: chunked"]
    lines += [f"{k}: {v}" for k, v in clients.ANDROID_HEADERS]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    reply_task = asyncio.ensure_future(read_reply(reader))
    sent = 0
    chunk = clients.jpeg(256 * 1024)[:-2]  # a JPEG start, no end: the size is what matters
    pieces = [head + chunk]
    try:
        while sent < total and not reply_task.done():
            piece = pieces.pop() if pieces else b"\x00" * len(chunk)
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            sent += len(piece)
        if not reply_task.done():
            writer.write(f"{len(tail):x}\r\n".encode() + tail + b"\r\n0\r\n\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # the server stopped reading after its answer
    try:
        return await asyncio.wait_for(reply_task, 15), sent
    finally:
        writer.close()


async def test_streamed_oversized_upload_is_refused_and_leaves_nothing(msfs: ServerProcess) -> None:
    before = await metric(msfs, 'imcluster_msfs_refusals_total{reason="too_large"}')
    reply, _sent = await chunked_upload(port_of(msfs), 11 * MiB)
    answer = reply.json()
    assert answer["error_code"] == 1 and answer["path"] == "", answer
    assert "10485760 bytes" in answer["error_msg"]
    assert list((store_of(msfs) / ".tmp").iterdir()) == []  # the partial file is gone
    assert await metric(msfs, 'imcluster_msfs_refusals_total{reason="too_large"}') == before + 1


async def test_declared_oversized_upload_is_refused_before_the_body(msfs: ServerProcess) -> None:
    port = port_of(msfs)
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={clients.ANDROID_BOUNDARY}\r\n"
        f"Content-Length: {11 * MiB}\r\n\r\n"
    ).encode() + clients.android_framing()[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    reply = await asyncio.wait_for(read_reply(reader), 5)  # not a byte of the 11 MiB sent
    writer.close()
    assert reply.json()["error_code"] == 1


async def test_memory_stays_flat_while_10_mib_stream(msfs: ServerProcess) -> None:
    port = port_of(msfs)
    warm = clients.android(clients.jpeg(1 * MiB)).raw(f"127.0.0.1:{port}")
    assert (await http(port, warm, chunks=64 * 1024)).json()["error_code"] == 0
    before = peak_rss(msfs)
    picture = clients.jpeg(10 * MiB)
    raw = clients.android(picture).raw(f"127.0.0.1:{port}")
    answer = (await http(port, raw, chunks=256 * 1024)).json()
    assert answer["error_code"] == 0, answer
    grown = peak_rss(msfs) - before
    assert grown < 3 * MiB, f"peak RSS grew by {grown / MiB:.1f} MiB for a 10 MiB upload"
    stored = await get(port, "/" + answer["path"])
    assert stored.body == picture
