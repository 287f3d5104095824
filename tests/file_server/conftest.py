"""A file server as a real process, a gateway's link to it, and raw TCP clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from common.cluster_config import ClusterConfig
from common.codec import Frame, FrameDecoder, encode_frame
from common.commands import decode_body
from common.link import Identity, LinkSettings, Upstream
from common.pb import internal_pb2

SECRET = "test-file-cluster-secret-0123456789"
TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]


def cluster() -> ClusterConfig:
    return ClusterConfig(secret=SECRET, heartbeat_interval=0.2, heartbeat_misses=5, handshake_timeout=2.0)


@dataclass
class FileServerProcess:
    store: Path
    run_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        ready = self.run_dir / "file.ready"
        ready.unlink(missing_ok=True)
        args = [sys.executable, "-m", "imctl", "run", "file", "--ready-file", str(ready)]
        settings = {"port": "0", "client_port": "0", "metrics_port": "0", "store": str(self.store)}
        for key, value in {**settings, **self.settings}.items():
            args += ["--set", f"{key}={value}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "IMCLUSTER_CLUSTER__SECRET": SECRET}
        with (self.run_dir / "file.log").open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"file server did not start: {(self.run_dir / 'file.log').read_text()}")
            time.sleep(0.02)
        self.info = json.loads(ready.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
            assert code == 0, f"exit code {code} after SIGTERM"  # a graceful stop
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def gateway(self, node_id: str = "gw-test") -> Upstream:
        return Upstream(
            node_id,
            [("127.0.0.1", int(self.info["port"]))],
            Identity(internal_pb2.ROLE_GATEWAY, node_id),
            settings=LinkSettings.from_cluster(cluster()),
            expect_role=internal_pb2.ROLE_FILE_SERVER,
        )


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServerProcess]:
    run_dir = tmp_path_factory.mktemp("file_server")
    server = FileServerProcess(
        run_dir / "store",
        run_dir,
        {"max_file_size": str(1 << 20), "max_chunk_size": str(64 * 1024), "task_idle_timeout": "5"},
    )
    server.start()
    yield server
    server.stop()
    log = (run_dir / "file.log").read_text()
    assert "Traceback" not in log, log


class RawClient:
    """A TeamTalk client's file connection, frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(1 << 20)

    opened: list[RawClient] = []  # closed after each test by the fixture below

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        cls.opened.append(client)
        return client

    def send(self, command: int, message: Message, seq: int = 0) -> None:
        self.writer.write(encode_frame(command, message.SerializeToString(), seq))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame; None once the server closed the connection."""
        async with asyncio.timeout(timeout):
            while True:
                frame = self.decoder.next_frame()
                if frame is not None:
                    return frame
                data = await self.reader.read(1 << 16)
                if not data:
                    return None
                self.decoder.feed(data)

    async def expect(self, command: int, timeout: float = TIMEOUT) -> tuple[Any, int]:
        frame = await self.frame(timeout)
        assert frame is not None, f"closed while waiting for 0x{command:04x}"
        assert frame.command_id == command, f"got 0x{frame.command_id:04x}, expected 0x{command:04x}"
        return decode_body(command, frame.body), frame.seq_num

    async def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server closed this connection (frames before that are skipped)."""
        while True:
            try:
                frame = await self.frame(timeout)
            except ConnectionResetError:
                return True
            if frame is None:
                return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    yield
    while RawClient.opened:
        client = RawClient.opened.pop()
        client.writer.close()
        with contextlib.suppress(OSError):
            await client.writer.wait_closed()
