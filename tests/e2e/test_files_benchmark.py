"""The file and picture benchmark runs in its quick form: every transfer checked by SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.file_baselines import RelaySide
from benchmarks.file_peers import WrongBytes
from benchmarks.files import relayed

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_quick_files_benchmark_runs_clean(tmp_path: Path) -> None:
    out, figures = tmp_path / "files.txt", tmp_path / "files.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "files.py"),
            "--quick",
            "--out",
            str(out),
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # Exit 0: every transfer (relayed, online, offline, each picture on both servers) had the right bytes.
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "online transfer MB/s" in result.stdout and out.read_text().count("MB/s") >= 4
    summary = json.loads(figures.read_text())["summary"]
    for server, figure in (
        ("file_server", "online_mbps"),
        ("file_server", "offline_upload_mbps"),
        ("file_server", "offline_download_mbps"),
        ("relay", "online_mbps"),
        ("msfs", "upload_mbps"),
        ("msfs", "download_mbps"),
        ("bare_http", "upload_mbps"),
    ):
        assert summary[server][figure] > 0, (server, figure)
    assert summary["file_server"]["peak_rss_mib"] > 0 and summary["msfs"]["peak_rss_mib"] > 0


async def test_a_transfer_with_wrong_bytes_fails_loudly() -> None:
    """Through the benchmark's own relay, a sender serving other bytes than expected is caught."""
    server = await asyncio.get_running_loop().create_server(RelaySide, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        data = os.urandom(100_000)
        good = hashlib.sha256(data).hexdigest()
        buffer = bytearray(len(data))
        assert (await relayed(port, os.getpid(), data, buffer, good))["online_mbps"] > 0
        flipped = bytes([data[0] ^ 1]) + data[1:]
        with pytest.raises(WrongBytes):
            await relayed(port, os.getpid(), flipped, buffer, good)
    finally:
        server.close()
        await server.wait_closed()
