"""Load benchmark: idle connections, login rate, 1:1 throughput across two gateways.

    /work/venv/bin/python benchmarks/load.py [--engine sqlite|mysql] [--idle N] [--discovery L]
        [--pairs P] [--messages M] [--window W] [--repeat R] [--quick] [--json FILE]

Starts its own LocalCluster (route, db_proxy, login_server, msg-1, msg-2) on
free ports in a temporary directory, plus a trivial echo server speaking the
same frames (benchmarks/echo_server.py) as a baseline measured in the same
run, and prints a table (and, with --json, the figures as JSON). Benchmark
users get a cheap scrypt (log2 n = 4): fine for a load test, never for real
accounts. All traffic goes to 127.0.0.1; the whole run is bounded by
--timeout and the servers are stopped on exit, Ctrl-C or SIGTERM.
See benchmarks/README.md for what each figure means.

The parts: settings.py (options and fixed settings), servers.py (the cluster,
the echo baseline, the database and the users), one module per measured
phase (idle.py, discovery.py, messages.py, with logins.py and measure.py
beneath them) and report.py (medians, table, JSON); this file parses the
options and runs the phases.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.discovery import discovery_phase  # noqa: E402
from benchmarks.idle import idle_phase  # noqa: E402
from benchmarks.logins import close_all  # noqa: E402
from benchmarks.messages import Pair, login_pairs, throughput_phase  # noqa: E402
from benchmarks.report import Results, no_nan, report, summarize  # noqa: E402
from benchmarks.servers import (  # noqa: E402
    EchoProcess,
    check_alive,
    cluster_target,
    create_users,
    database,
    idle_names,
    log_problems,
    pair_names,
    raise_fd_limit,
)
from benchmarks.settings import BENCH_LOG2_N, ONE_ADDRESS_NO_LIMITS, Options  # noqa: E402
from imctl.cluster import LocalCluster, write_secret_file  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--engine", choices=("sqlite", "mysql"), default="sqlite")
    p.add_argument("--idle", type=int, help="idle logged-in connections on msg-1 (default 5000)")
    p.add_argument("--discovery", type=int, help="logins through HTTP discovery (default min(idle, 2000))")
    p.add_argument("--pairs", type=int, help="sender/receiver pairs (default 50)")
    p.add_argument("--messages", type=int, help="messages per sender (default 200)")
    p.add_argument("--window", type=int, help="un-acked messages in flight per sender (default 8)")
    p.add_argument("--repeat", type=int, help="repetitions of each measurement (default 3)")
    p.add_argument("--concurrency", type=int, default=200, help="logins in flight at once (default 200)")
    p.add_argument("--timeout", type=float, default=300.0, help="global time limit in seconds (default 300)")
    p.add_argument("--json", type=Path, dest="json_path", help="also write the figures as JSON here")
    p.add_argument("--quick", action="store_true", help="small run: N=500, L=200, P=10, M=50, R=1")
    p.add_argument("--keep", action="store_true", help="keep the run directory (server logs)")
    a = p.parse_args(argv)
    quick = {"idle": 500, "discovery": 200, "pairs": 10, "messages": 50, "window": 8, "repeat": 1}
    full = {"idle": 5000, "discovery": 2000, "pairs": 50, "messages": 200, "window": 8, "repeat": 3}
    defaults = quick if a.quick else full
    o = Options(
        engine=a.engine,
        concurrency=a.concurrency,
        timeout=a.timeout,
        json_path=a.json_path,
        quick=a.quick,
        keep=a.keep,
    )
    for key, default in defaults.items():
        value = getattr(a, key)
        setattr(o, key, default if value is None else value)
    if a.discovery is None:
        o.discovery = min(o.idle, defaults["discovery"])
    if o.idle < 1 or o.pairs < 1 or o.messages < 1 or o.window < 1 or o.repeat < 1 or o.concurrency < 1:
        p.error("--idle, --pairs, --messages, --window, --repeat and --concurrency must be at least 1")
    if not 0 <= o.discovery <= o.idle:
        p.error("--discovery must be between 0 and --idle (it logs in the idle users)")
    if o.window >= 0xFFFF:
        p.error("--window must be below 65535 (the seq_num space)")
    return o


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


async def one_run(
    cluster: LocalCluster, echo: EchoProcess, opts: Options, rep: int, budget: float
) -> dict[str, Any]:
    """Every measurement once, against a freshly started cluster and echo server."""
    label = f"run {rep + 1}/{opts.repeat}"
    run: dict[str, Any] = {}
    async with asyncio.timeout(budget):
        targets = {"cluster": cluster_target(cluster), "echo": echo.target()}
        pairs = {name: [Pair(i) for i in range(opts.pairs)] for name in targets}
        try:
            for name, target in targets.items():
                await login_pairs(target, pairs[name], opts)
            idle = idle_names(opts.idle)
            cluster_t = targets["cluster"]
            if not await cluster_t.settled(opts.pairs):  # msg-1 holds the senders
                raise RuntimeError("login_server never reported msg-1 holding the pair senders")
            for name, target in targets.items():
                progress(f"{label}: {opts.idle} idle connections on {name}")
                held = opts.pairs if name == "cluster" else 0  # msg-1 also holds the pair senders
                run[f"idle_{name}"] = await idle_phase(target, idle, opts, held)
                check_alive(cluster, echo)
            if opts.discovery:
                progress(f"{label}: {opts.discovery} logins through discovery")
                run["discovery"] = await discovery_phase(cluster_t, idle[: opts.discovery], opts, opts.pairs)
                check_alive(cluster, echo)
            for name, target in targets.items():
                progress(f"{label}: {opts.pairs}x{opts.messages} messages on {name}")
                run[f"throughput_{name}"] = await throughput_phase(target, pairs[name], rep, opts)
                check_alive(cluster, echo)
        finally:
            for name in targets:
                await close_all([c for p in pairs[name] for c in (p.sender, p.receiver) if c is not None])
    return run


def run(opts: Options) -> tuple[Results, dict[str, Any]]:
    started = time.monotonic()
    deadline = started + opts.timeout
    limit = raise_fd_limit(opts.idle + 4 * opts.pairs + 512)  # before the servers start: they inherit it
    if limit < opts.idle + 4 * opts.pairs + 256:
        raise SystemExit(f"the open-files limit is {limit}: too low for --idle {opts.idle}")
    results = Results()
    setup = results.setup
    setup.update(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        engine=opts.engine,
        fd_limit=limit,
        password_hash=f"scrypt log2_n={BENCH_LOG2_N} (load tests only)",
        cluster_seconds=[],
        server_log_problems={},
    )
    run_dir = Path(tempfile.mkdtemp(prefix="imbench-"))
    started_servers: list[LocalCluster | EchoProcess] = []
    try:
        with database(opts, run_dir) as (db_url, redis_url):
            names = idle_names(opts.idle) + [n for pair in pair_names(opts.pairs) for n in pair]
            setup["users"] = len(names)
            setup["user_seconds"] = asyncio.run(create_users(db_url, names))
            for rep in range(opts.repeat):
                # A fresh cluster (and echo server) per repetition, on the same database: the
                # repetitions are independent, and RSS is measured from a fresh process each
                # time (a process that already held N connections reuses their freed memory).
                rep_dir = run_dir / f"run{rep + 1}"
                t = time.monotonic()
                # As in production: every internal link proves the cluster secret.
                cluster = LocalCluster(
                    rep_dir,
                    None,
                    gateways=2,
                    base_port=0,
                    database_url=db_url,
                    redis_url=redis_url,
                    secret_file=write_secret_file(rep_dir / "cluster.secret"),
                    files=False,  # file transfer is not what this measures
                    extra={"msg": ONE_ADDRESS_NO_LIMITS},
                )
                started_servers.append(cluster)
                cluster.start()
                setup["cluster_seconds"].append(time.monotonic() - t)
                echo = EchoProcess(rep_dir)
                started_servers.append(echo)
                echo.start()
                budget = deadline - time.monotonic()
                if budget <= 0:
                    raise TimeoutError
                try:
                    results.runs.append(uvloop.run(one_run(cluster, echo, opts, rep, budget)))
                finally:
                    echo.stop()
                    cluster.stop()
                problems = log_problems(rep_dir)
                if problems:
                    setup["server_log_problems"][f"run{rep + 1}"] = problems
    except KeyboardInterrupt:
        raise
    except BaseException:
        opts.keep = True  # the logs are what one needs after a failure
        raise
    finally:
        for server in reversed(started_servers):
            server.stop()
        if opts.keep:
            print(f"run directory (server logs) kept: {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    setup["total_seconds"] = time.monotonic() - started
    return results, summarize(opts, results)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    # SIGTERM gets the same clean-up as Ctrl-C: the servers are stopped in the finally blocks.
    # (SIGINT too: a shell starts background jobs with SIGINT ignored.)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        results, summary = run(opts)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"benchmark exceeded its {opts.timeout:.0f} s limit; servers stopped", file=sys.stderr)
        return 2
    print(report(opts, results, summary))
    print(f"(total {results.setup['total_seconds']:.1f} s)")
    if opts.json_path is not None:
        document: dict[str, Any] = {
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
            "setup": results.setup,
            "runs": results.runs,
            "summary": summary,
        }
        opts.json_path.write_text(json.dumps(no_nan(document), indent=2, default=str) + "\n")
    # A clean run is all zeros: a test calling --quick relies on the exit status.
    bad = sum(summary["violations"].values()) + sum(summary["unacked"].values()) + summary["login_errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
