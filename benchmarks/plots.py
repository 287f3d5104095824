"""perf.py's pictures (matplotlib): open-loop throughput and ack p99 against the offered
rate, the cluster next to the echo baseline, and the ack latency histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.openloop import HIST_EDGES


def plot(doc: dict[str, Any], path: Path) -> None:
    summary = doc["summary"]
    engine = doc["setup"]["engine"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    thr, p99, hist = axes
    o = summary.get("open")
    if o:
        rates = sorted(int(r) for r in o["rates"])
        for name, style in (("cluster", "o-"), ("echo", "s--")):
            rows = [o["rates"][str(r)][name] for r in rates]
            thr.plot(rates, [row["acked_per_s"]["median"] for row in rows], style, label=name)
            p99.plot(rates, [row["ack_p99_ms"]["median"] for row in rows], style, label=name)
        thr.plot(rates, rates, ":", color="grey", label="offered")
        if o.get("capacity") == o.get("capacity") and o.get("capacity"):
            thr.axhline(o["capacity"], color="green", linestyle="-.", label="closed-loop capacity")
        p99.axhline(100, color="red", linestyle=":", label="target at 2,000/s: 100 ms")
        p99.set_yscale("log")
        # the histogram of the cluster's acks at 2,000/s offered (else the middle rate)
        key = "2000" if "2000" in o["rates"] else str(rates[len(rates) // 2])
        edges = [0.0, *HIST_EDGES]
        for name in ("cluster", "echo"):
            counts = o["rates"][key][name]["histogram_ms"]
            hist.stairs(counts, edges, label=f"{name}, {int(key):,}/s offered")
        hist.set_xscale("log")
        hist.set_title(f"ack latency histogram ({engine})")
        hist.set_xlabel("ms (half-octave bins)")
        hist.set_ylabel("acks")
        hist.legend(fontsize=8)
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no open-loop scenario in this run", ha="center", transform=ax.transAxes)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    thr.set_title(f"open loop 1:1: acked msgs/s ({engine})")
    thr.set_xlabel("offered msgs/s")
    thr.set_ylabel("acked msgs/s")
    thr.legend(fontsize=8)
    p99.set_title(f"open loop 1:1: ack p99 ({engine})")
    p99.set_xlabel("offered msgs/s")
    p99.set_ylabel("ms")
    p99.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
