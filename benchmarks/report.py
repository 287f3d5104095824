"""The figures of a run: medians over the repetitions, the printed table and the JSON form."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks.measure import median
from benchmarks.messages import UNACKED, VIOLATIONS
from benchmarks.settings import BENCH_LOG2_N, Options


@dataclass
class Results:
    setup: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)


def summarize(opts: Options, results: Results) -> dict[str, Any]:
    runs = results.runs

    def med(path: str) -> float:
        def get(run: dict[str, Any]) -> float:
            value: Any = run
            for key in path.split("."):
                value = value.get(key, float("nan")) if isinstance(value, dict) else float("nan")
            return float(value)

        return median([get(r) for r in runs])

    summary: dict[str, Any] = {}
    for name in ("cluster", "echo"):
        summary[name] = {
            "idle_logins_per_s": med(f"idle_{name}.logins_per_s"),
            "idle_rss_per_conn": med(f"idle_{name}.rss_per_conn"),
            "idle_rss_before": med(f"idle_{name}.rss_before"),
            "idle_rss_after": med(f"idle_{name}.rss_after"),
            "msgs_per_s": med(f"throughput_{name}.msgs_per_s"),
            "ack_p50_ms": med(f"throughput_{name}.ack_p50_ms"),
            "ack_p99_ms": med(f"throughput_{name}.ack_p99_ms"),
            "delivery_p50_ms": med(f"throughput_{name}.delivery_p50_ms"),
            "delivery_p99_ms": med(f"throughput_{name}.delivery_p99_ms"),
        }
    summary["cluster"]["route_rss_per_session"] = med("idle_cluster.rss_delta_by_process.route-1") / opts.idle
    summary["cluster"]["discovery_logins_per_s"] = med("discovery.logins_per_s") if opts.discovery else None
    c, e = summary["cluster"], summary["echo"]
    summary["ratio"] = {
        "msgs_per_s": c["msgs_per_s"] / e["msgs_per_s"] if e["msgs_per_s"] else float("nan"),
        "idle_logins_per_s": (
            c["idle_logins_per_s"] / e["idle_logins_per_s"] if e["idle_logins_per_s"] else float("nan")
        ),
        "idle_rss_per_conn": (
            c["idle_rss_per_conn"] / e["idle_rss_per_conn"] if e["idle_rss_per_conn"] else float("nan")
        ),
    }
    for name, key in (("cluster", "violations"), ("echo", "baseline_violations")):
        totals: Counter[str] = Counter()
        for run in runs:
            totals.update(run[f"throughput_{name}"]["checks"])
        summary[key] = {k: totals[k] for k in VIOLATIONS}
        summary[key.replace("violations", "unacked")] = {k: totals[k] for k in UNACKED}
    errors = sum(run[f"idle_{n}"]["login_errors"] for run in runs for n in ("cluster", "echo"))
    errors += sum(run["discovery"]["login_errors"] for run in runs if "discovery" in run)
    summary["login_errors"] = errors
    return summary


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def each(runs: list[dict[str, Any]], path: str, digits: int = 0) -> str:
    values = []
    for run in runs:
        value: Any = run
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        values.append(fmt(value, digits))
    return " / ".join(values)


def cpu_line(runs: list[dict[str, Any]], phase: str) -> str:
    """Median CPU per process during a phase, busiest first, then the whole box."""
    samples = [run[phase]["cpu_percent"] for run in runs if run.get(phase, {}).get("cpu_percent")]
    if not samples:
        return ""
    medians = {name: median([x[name] for x in samples]) for name in samples[0]}
    box = medians.pop("box")
    listed = ", ".join(
        f"{n} {pct:.0f}%" for n, pct in sorted(medians.items(), key=lambda kv: -kv[1]) if pct >= 1
    )
    return f"{listed}; box {box:.0f}% of {100 * (os.cpu_count() or 1)}%"


def report(opts: Options, results: Results, summary: dict[str, Any]) -> str:
    s, runs = results.setup, results.runs
    c, e, r = summary["cluster"], summary["echo"], summary["ratio"]
    mib = 1 << 20
    lines = [
        f"imcluster load benchmark, {s['date']}, engine {opts.engine}, {s['cpus']} CPUs, "
        f"Python {s['python']}",
        f"  users: {s['users']} created in {s['user_seconds']:.1f} s with scrypt log2_n={BENCH_LOG2_N} "
        "(cheap hashing for load tests only)",
        f"  {opts.repeat} run(s), each on a freshly started cluster (up in "
        f"{median(s['cluster_seconds']):.1f} s) and echo server; medians shown, per-run values in brackets",
        "",
        "  CPU: 'others' is every other process on the box (MariaDB, Redis, anything else running on",
        "  a shared machine) plus kernel time not charged to a process",
        "",
        f"{'':44}{'cluster':>14}{'echo baseline':>15}{'ratio':>8}   runs (cluster)",
        f"1. idle connections on msg-1 (N={opts.idle}, {opts.concurrency} logins in flight)",
        f"  {'logins/s, direct TCP login':42}{fmt(c['idle_logins_per_s']):>14}"
        f"{fmt(e['idle_logins_per_s']):>15}{fmt(r['idle_logins_per_s'], 2):>8}"
        f"   [{each(runs, 'idle_cluster.logins_per_s')}]",
        f"  {'msg-1 RSS before -> after, MiB':42}"
        f"{fmt(c['idle_rss_before'] / mib, 1) + ' -> ' + fmt(c['idle_rss_after'] / mib, 1):>14}"
        f"{fmt(e['idle_rss_before'] / mib, 1) + ' -> ' + fmt(e['idle_rss_after'] / mib, 1):>15}",
        f"  {'RSS bytes per idle connection':42}{fmt(c['idle_rss_per_conn']):>14}"
        f"{fmt(e['idle_rss_per_conn']):>15}{fmt(r['idle_rss_per_conn'], 2):>8}"
        f"   [{each(runs, 'idle_cluster.rss_per_conn')}]",
        f"  {'route_server RSS bytes per session':42}{fmt(c['route_rss_per_session']):>14}",
    ]
    if opts.discovery:
        lines.append(
            f"  {f'logins/s via GET /msg_server (L={opts.discovery})':42}"
            f"{fmt(c['discovery_logins_per_s']):>14}{'':23}   [{each(runs, 'discovery.logins_per_s')}]"
        )
    lines.append(f"  {'CPU during the direct logins (1 core=100%)':42}  {cpu_line(runs, 'idle_cluster')}")
    lines += [
        f"2. 1:1 messages msg-1 -> msg-2 (P={opts.pairs} pairs x M={opts.messages}, window W={opts.window})",
        f"  {'acked msgs/s':42}{fmt(c['msgs_per_s']):>14}{fmt(e['msgs_per_s']):>15}"
        f"{fmt(r['msgs_per_s'], 3):>8}   [{each(runs, 'throughput_cluster.msgs_per_s')}]",
    ]
    for label, key in (
        ("ack latency p50, ms", "ack_p50_ms"),
        ("ack latency p99, ms", "ack_p99_ms"),
        ("delivery latency p50, ms", "delivery_p50_ms"),
        ("delivery latency p99, ms", "delivery_p99_ms"),
    ):
        lines.append(
            f"  {label:42}{fmt(c[key], 1):>14}{fmt(e[key], 1):>15}{'':8}"
            f"   [{each(runs, 'throughput_cluster.' + key, 1)}]"
        )
    lines.append(f"  {'CPU during the cluster run (1 core=100%)':42}  {cpu_line(runs, 'throughput_cluster')}")
    v = summary["violations"]
    bad = {k: n for k, n in v.items() if n}
    lines.append(
        "3. correctness over all cluster runs: "
        + ("0 violations" if not bad else "VIOLATIONS " + ", ".join(f"{k}={n}" for k, n in bad.items()))
        + f" (checked: {', '.join(VIOLATIONS)})"
    )
    unacked = {k: n for k, n in summary["unacked"].items() if n}
    lines.append(
        "   unacked: "
        + ("none" if not unacked else ", ".join(f"{k}={n}" for k, n in unacked.items()))
        + f" (checked: {', '.join(UNACKED)})"
    )
    bv = {k: n for k, n in summary["baseline_violations"].items() if n}
    if bv:
        listed = ", ".join(f"{k}={n}" for k, n in bv.items())
        lines.append(f"   baseline violations (a benchmark bug?): {listed}")
    if summary["login_errors"]:
        first = [err for run in runs for phase in run.values() for err in phase.get("first_errors", [])]
        lines.append(f"   login errors: {summary['login_errors']}; first: {first[:3]}")
    unsettled = [
        f"run {i + 1} {name}"
        for i, run in enumerate(runs)
        for name, phase in run.items()
        if phase.get("load_report_matched") is False or phase.get("drained") is False
    ]
    if unsettled:
        lines.append(
            f"   msg-1's load report did not settle at the expected count in: {', '.join(unsettled)}"
        )
    if s.get("server_log_problems"):
        lines.append(f"   server log WARNING/ERROR lines: {s['server_log_problems']}")
    return "\n".join(lines)


def no_nan(value: Any) -> Any:
    """NaN (an empty measurement) as JSON null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nan(v) for v in value]
    return value
