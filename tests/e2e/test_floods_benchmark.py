"""The flood benchmark runs, in its shortest form (one flood, one run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_request_flood_runs_and_is_rate_limited() -> None:
    args = ["--floods", "requests", "--runs", "1", "--seconds", "1", "--samples", "50"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "floods.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [row] = [line.split() for line in result.stdout.splitlines() if line.startswith("requests ")]
    assert float(row[7]) > 0, result.stdout  # the rate-limited column
