"""What the phases measure with: CPU and memory of processes from /proc, and order statistics."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from benchmarks.servers import Target

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far, every thread: nanoseconds from /proc/<pid>/task/*/schedstat
    (/proc/<pid>/stat counts 10 ms ticks, too coarse for a phase of half a second); the
    ticks where schedstat is missing. Threads that already ended are not counted by schedstat:
    the processes measured here keep theirs (executor pools) for their whole life."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        total = 0
    if total:
        return total / 1e9
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def box_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK  # user..steal; guest time is already in user


def cpu_snapshot(target: Target) -> dict[str, float]:
    snap = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    snap["client"] = cpu_seconds(os.getpid())
    snap["box"] = box_busy_seconds()
    return snap


def cpu_percent(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """CPU used by each process over ``wall`` seconds (100 = one core); ``others`` is everything
    else on the box (MariaDB and Redis, and whatever else runs on a shared machine)."""
    if wall <= 0:
        return {}
    pct = {name: 100 * (after[name] - before[name]) / wall for name in after}
    pct["others"] = max(0.0, pct["box"] - sum(v for k, v in pct.items() if k != "box"))
    return pct
