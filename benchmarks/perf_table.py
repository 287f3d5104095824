"""README.md's performance table, from perf.py's JSON results.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/perf.py --readme [--out DIR]

reads DIR/perf-sqlite.json and DIR/perf-mysql.json (default benchmarks/results/perf/;
either may be missing: its column shows "-") and rewrites the table between the
``<!-- perf-table:begin -->`` and ``<!-- perf-table:end -->`` markers of README.md's
"## Performance" section. TeamTalk's column is the figures issue 12 quotes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"
ENGINES = (("sqlite", "SQLite"), ("mysql", "MariaDB + Redis"))


def num(v: Any, digits: int = 0) -> str:
    if v is None or not isinstance(v, int | float) or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def dig(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def cells(s: dict[str, Any] | None) -> list[str]:
    """One engine's column: a cell per row of ROWS."""
    if s is None:
        return ["-"] * len(ROWS)
    closed, open_, lg, cn, g = (s.get(k) or {} for k in ("closed", "open", "logins", "connections", "groups"))
    v = s.get("violations", {})
    order = (v.get("delivery_order_violations", 0) or 0) + (v.get("ack_id_order_violations", 0) or 0)
    sizes = sorted((int(k) for k in cn if k.isdigit()), key=int)
    largest = str(sizes[-1]) if sizes else ""
    ov = dig(open_, "overload") or {}
    at2000 = dig(open_, "rates", "2000", "cluster") or {}

    def med(d: Any, *keys: str) -> Any:
        return dig(d, *keys, "median")

    out = [
        f"{num(med(closed, 'cluster', 'msgs_per_s'))} (ratio to echo {num(closed.get('ratio'), 3)})",
        f"{num(dig(closed, 'cluster_w1', 'msgs_per_s', 'median'))} ({num(closed.get('ratio_w1'), 3)})",
        f"{num(v.get('lost'))} / {num(v.get('duplicates'))} / {num(order)}",
        f"{num(med(at2000, 'ack_p50_ms'), 1)} / {num(med(at2000, 'ack_p99_ms'), 1)} ms",
        f"{num(ov.get('acked_over_capacity'), 2)} of {num(open_.get('capacity'))}/s, "
        f"{num(ov.get('late_acks'))} (most in one run: {num(ov.get('late_acks_max'))})",
        f"{num(dig(lg, 'direct', 'median'))} / {num(dig(lg, 'discovery', 'median'))} "
        f"(ratio {num(lg.get('ratio_direct'), 2)} / {num(lg.get('ratio_discovery'), 2)})",
        f"{num(med(lg, 'storm'), 1)}/s, {num(med(lg, 'storm_per_db_core_s'), 1)} per core-s",
        " / ".join(f"{num(dig(cn, str(n), 'rss_per_conn', 'median') / 1024, 2)}" for n in sizes) + " KB"
        if sizes and all(dig(cn, str(n), "rss_per_conn", "median") is not None for n in sizes)
        else "-",
        f"{num(dig(cn, largest, 'rss_per_conn', 'median'))} B at {int(largest):,}" if largest else "-",
        f"{num(dig(g, 'cluster', 'deliveries_per_s', 'median'))} (ratio {num(g.get('ratio'), 2)})",
    ]
    return out


ROWS = (
    ("durable 1:1 msgs/s, 50 pairs x 8 in flight, 2 gateways", ">= 8,000", "774-790"),
    ("durable 1:1 msgs/s, 1 in flight", "", "513-609"),
    ("lost / duplicated / reordered", "0 / 0 / 0", "lost + reordered past ~1,200/s"),
    ("open loop at 2,000/s offered: ack p50 / p99", "p99 < 100 ms", ""),
    ("overload, 2x capacity offered: acked / capacity, acks later than 1 s", ">= 0.9, 0", ""),
    (
        "logins/s, direct / via `GET /msg_server` (scrypt n=2^14, warm cache)",
        ">= 2,000 / 1,500",
        "1,427-1,773 / 754-1,132",
    ),
    ("first-time login storm (cold cache): logins/s, per db_proxy core-second", "", ""),
    ("RSS per idle connection at each size", "flat", ""),
    ("RSS per idle connection at the largest size", "<= 3.5 KB at 19,000", "3.42 KB"),
    ("group fan-out deliveries/s, 500 members over 2 gateways", ">= 50,000", ""),
)


def table(results_dir: Path) -> str:
    docs: dict[str, dict[str, Any] | None] = {}
    dates: list[str] = []
    for engine, _ in ENGINES:
        path = results_dir / f"perf-{engine}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            docs[engine] = doc["summary"]
            argv = " ".join(doc["setup"]["argv"]) or "defaults"
            dates.append(
                f"{engine}: {doc['setup']['date']}, {argv}, medians of {doc['setup']['repeat']} run(s)"
            )
        else:
            docs[engine] = None
    columns = [cells(docs[e]) for e, _ in ENGINES]
    sizes = ""
    for e, _ in ENGINES:
        cn = (docs[e] or {}).get("connections") or {}
        got = sorted(int(k) for k in cn if k.isdigit())
        if got:
            sizes = ", ".join(f"{n:,}" for n in got)
            break
    lines = [
        "| figure | "
        + " | ".join(title for _, title in ENGINES)
        + " | target (issue 12) | TeamTalk, 2 cores |",
        "|---|" + "---|" * (len(ENGINES) + 2),
    ]
    for i, (label, target, teamtalk) in enumerate(ROWS):
        if i == 7 and sizes:
            label = f"RSS per idle connection at {sizes}"
        lines.append(f"| {label} | " + " | ".join(c[i] for c in columns) + f" | {target} | {teamtalk} |")
    lines.append("")
    lines.append(
        "`benchmarks/perf.py` (" + "; ".join(dates) + "); output in `benchmarks/results/perf/`."
        if dates
        else "No results yet: run `benchmarks/perf.py`."
    )
    return "\n".join(lines)


def rewrite(readme: Path, text: str) -> None:
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers in the Performance section")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(results_dir: Path, readme: Path = README) -> int:
    rewrite(readme, table(results_dir))
    print(f"{readme}: performance table rewritten from {results_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "results" / "perf"))
