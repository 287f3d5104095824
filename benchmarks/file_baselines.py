"""The baselines of benchmarks/files.py, each a process of its own.

    python benchmarks/file_baselines.py relay READY_FILE STORE_DIR
    python benchmarks/file_baselines.py http READY_FILE STORE_DIR

* ``relay``: two sockets relayed by a plain asyncio (uvloop) process. The first byte of a
  connection says its side (``S`` sender, ``R`` receiver); every later byte is copied to the
  other side as it is: no framing, no protobuf, no checks.
* ``http``: a bare aiohttp server. ``POST`` any path: the body streamed to a file in 64 KiB
  chunks, fsync, rename (what msfs's disk store does at commit), JSON with the URL;
  ``GET /<name>``: the file (``FileResponse``).

Each writes ``{"port": N}`` to READY_FILE once it listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from imctl.cluster import _die_with_parent  # noqa: E402

HOST = "127.0.0.1"
MiB = 1024 * 1024
KiB = 1024


class RelaySide(asyncio.Protocol):
    """One socket of the relay: the first byte says which side it is (S or R); then every byte
    goes to the other side as it is, nothing parsed."""

    waiting: dict[bytes, RelaySide] = {}  # one relay per process

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: RelaySide | None = None
        self.pending: list[bytes] = []
        self.side = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.side:
            self.side, data = data[:1], data[1:]
            other = RelaySide.waiting.pop(b"R" if self.side == b"S" else b"S", None)
            if other is None:
                RelaySide.waiting[self.side] = self
            else:
                self.peer, other.peer = other, self
                for early in other.pending:
                    self.forward(early)
                other.pending.clear()
        if data:
            self.forward_from_me(data)

    def forward_from_me(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def forward(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        RelaySide.waiting = {k: v for k, v in RelaySide.waiting.items() if v is not self}


async def serve_relay(ready: Path) -> None:
    server = await asyncio.get_running_loop().create_server(RelaySide, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    await asyncio.to_thread(ready.write_text, json.dumps({"port": port}))
    await asyncio.Event().wait()


async def serve_http(ready: Path, store: Path) -> None:
    """POST any path: the body streamed to a file, fsync, rename; GET /<name>: the file."""
    from aiohttp import web

    await asyncio.to_thread(store.mkdir, parents=True, exist_ok=True)
    counter = iter(range(1 << 30))

    async def upload(request: web.Request) -> web.Response:
        name = f"{next(counter)}.bin"
        part = store / (name + ".part")
        with part.open("wb") as f:
            async for chunk in request.content.iter_chunked(64 * KiB):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        part.rename(store / name)
        url = f"http://{request.host}/{name}"
        return web.json_response({"error_code": 0, "error_msg": "", "path": name, "url": url})

    async def download(request: web.Request) -> web.StreamResponse:
        path = store / request.match_info["name"]
        if "/" in request.match_info["name"] or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_post("/{tail:.*}", upload)
    app.router.add_get("/{name}", download)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    await asyncio.to_thread(ready.write_text, json.dumps({"port": port}))
    await asyncio.Event().wait()


class Baseline:
    """One baseline process: this file with ``<kind>``."""

    def __init__(self, kind: str, run_dir: Path) -> None:
        self.kind = kind
        self.ready = run_dir / f"{kind}.ready"
        self.log = run_dir / f"{kind}.log"
        self.args = [
            sys.executable,
            str(Path(__file__).resolve()),
            kind,
            str(self.ready),
            str(run_dir / f"{kind}-store"),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 15.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.ready.exists() and self.ready.read_text():
                self.port = int(json.loads(self.ready.read_text())["port"])
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.kind} baseline did not start: {self.log.read_text(errors='replace')[-2000:]}"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def peak_rss(pid: int, field: str = "VmHWM") -> float:
    """VmHWM (the peak resident set) of a process, or another size field of its status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / MiB
    return float("nan")


def main(argv: list[str]) -> int:
    kind, ready, store = argv[0], Path(argv[1]), Path(argv[2])
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_relay(ready) if kind == "relay" else serve_http(ready, store))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
