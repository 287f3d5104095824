"""The load benchmark runs, and its correctness checks pass, in its quick form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_clean() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    # Exit 0 means: no login errors, no lost/duplicated/reordered message, nothing unacked.
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "msgs/s" in result.stdout
