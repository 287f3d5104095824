"""The delivery benchmark runs clean in its quick form, on the in-process log and on the baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "403b846"  # benchmarks/delivery.py's default: the fire-and-forget path


def _has_baseline() -> bool:
    """The baseline commit is in this checkout's history (not in a shallow clone or a tarball)."""
    check = ["git", "-C", str(ROOT), "cat-file", "-e", f"{BASELINE}^{{commit}}"]
    return subprocess.run(check, capture_output=True, timeout=30).returncode == 0


@pytest.mark.timeout(300)
def test_quick_delivery_benchmark_runs_clean(tmp_path: Path) -> None:
    out = tmp_path / "delivery.json"
    baseline = BASELINE if _has_baseline() else ""
    args = ["--quick", "--backends", "memory", "--baseline", baseline, "--json", str(out)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "delivery.py"), *args],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # Exit 0: the new path missed, duplicated and reordered nothing, and no server died.
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    new = summary["memory"]
    assert new["acked"] > 0 and new["expected_pushes"] == 2 * new["acked"]  # receiver and own phone
    assert (new["missing"], new["received_twice"], new["out_of_order"]) == (0, 0, 0)
    if baseline:
        assert summary["baseline"]["acked"] > 0  # the fire-and-forget path ran too, from its own worktree
    assert "send-push p50" in result.stdout
