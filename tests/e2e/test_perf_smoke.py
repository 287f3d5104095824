"""benchmarks/perf.py runs every scenario in its quick form, and its correctness checks are 0.

Speed is not asserted (CI shares its cores): only that the run completes, that the JSON
has every scenario, and that nothing acked was lost, duplicated or reordered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("closed", "open", "logins", "connections", "groups")


@pytest.mark.serial  # loads both cores
@pytest.mark.timeout(480)
def test_quick_perf_runs_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "perf.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads((tmp_path / "perf-sqlite.json").read_text())
    for scenario in SCENARIOS:
        assert scenario in doc["results"], scenario
        assert scenario in doc["summary"], scenario
    assert doc["summary"]["violations"], "no correctness counters in the summary"
    assert all(v == 0 for v in doc["summary"]["violations"].values()), doc["summary"]["violations"]
    assert doc["summary"]["logins"]["direct"]["median"] > 0
    open_rates = doc["summary"]["open"]["rates"]
    assert open_rates and all(row["cluster"]["acked_per_s"]["median"] > 0 for row in open_rates.values())
    assert doc["summary"]["groups"]["cluster"]["deliveries"]["median"] > 0
    assert (tmp_path / "perf-sqlite.txt").exists()
