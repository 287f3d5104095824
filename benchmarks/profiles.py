"""Profile the cluster under the load benchmark's phases with py-spy, one sampler per server.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/profiles.py --engine mysql \\
        [--phases messages,logins] [--pairs 50] [--window 8] [--messages 1000] [--logins 10000] \\
        [--rate 200] [--out benchmarks/results/profiles]

Starts a LocalCluster as benchmarks/load.py does (route, db_proxy, login_server, msg-1, msg-2;
the same users, settings and limits), then, for each phase, starts ``py-spy record --format
raw`` on db-1, msg-1 (the senders' gateway), msg-2 (the receivers') and route-1, runs the
phase, and stops the samplers (SIGINT: py-spy writes what it has) when the phase is over:

* ``messages``: the 1:1 closed loop of load.py (P pairs, W in flight per sender, M messages
  each), after an unprofiled run of the same phase, whose msgs/s shows what the sampling costs;
* ``logins``: N direct logins to msg-1, C at a time, twice: ``logins-first`` (each user's first
  login on this cluster: a verified-password cache miss, scrypt at the benchmark's cheap cost)
  and ``logins-returning`` (the same users again: cache hits, no scrypt), with db_proxy's
  ``imcluster_db_login_cache`` counters read around each pass.

py-spy leaves idle samples out (the event loop in epoll): each process's samples are its
busy time, and samples / (rate x seconds) is about the share of a core it was busy. For every
phase and process the output directory gets the raw collapsed stacks (``PHASE-PROC.txt``), a
flame graph (``PHASE-PROC.svg``, benchmarks/flames.py) and a summary (``PHASE-PROC.summary.txt``:
components, top self and cumulative functions, top self lines); ``summary.txt`` and
``profile.json`` hold the figures of the run. Samples are of the Python stacks only: time in C
(protobuf's upb, uvloop, hashlib, socket calls) counts as self time of the Python function
calling it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.delivery import scrape  # noqa: E402
from benchmarks.flames import Profile, summary, svg  # noqa: E402
from benchmarks.logins import close_all, login_many  # noqa: E402
from benchmarks.measure import cpu_seconds  # noqa: E402
from benchmarks.messages import Pair, login_pairs, throughput_phase  # noqa: E402
from benchmarks.servers import (  # noqa: E402
    Target,
    cluster_target,
    create_users,
    database,
    idle_names,
    pair_names,
    raise_fd_limit,
)
from benchmarks.settings import BENCH_LOG2_N, HOST, ONE_ADDRESS_NO_LIMITS, Options  # noqa: E402
from imctl.cluster import LocalCluster, write_secret_file  # noqa: E402

PROCESSES = {"db_proxy": "db-1", "msg1": "msg-1", "msg2": "msg-2", "route": "route-1"}
ATTACH_SECONDS = 1.0  # py-spy's start-up before the phase begins (idle: not sampled)


@dataclass
class Settings:
    engine: str
    phases: tuple[str, ...]
    pairs: int
    window: int
    messages: int
    logins: int
    concurrency: int
    rate: int
    nonblocking: bool
    baseline: bool
    out: Path
    py_spy: str
    keep: bool
    timeout: float

    def options(self) -> Options:
        return Options(
            engine=self.engine,
            idle=self.logins,
            discovery=0,
            pairs=self.pairs,
            messages=self.messages,
            window=self.window,
            repeat=1,
            concurrency=self.concurrency,
            timeout=self.timeout,
            keep=self.keep,
        )


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--engine", choices=("sqlite", "mysql"), default="mysql")
    p.add_argument("--phases", default="messages,logins", help="comma-separated: messages, logins")
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--messages", type=int, default=1000, help="messages per sender (default 1000)")
    p.add_argument("--logins", type=int, default=10000, help="users logging in, each pass (default 10000)")
    p.add_argument("--concurrency", type=int, default=200, help="logins in flight at once (default 200)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--blocking", action="store_true", help="let py-spy pause the process for each sample")
    p.add_argument("--no-baseline", action="store_true", help="skip the unprofiled message run")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profiles")
    p.add_argument("--py-spy", default=str(Path(sys.executable).with_name("py-spy")))
    p.add_argument("--keep", action="store_true", help="keep the run directory (server logs)")
    p.add_argument("--timeout", type=float, default=600.0, help="global time limit in seconds")
    a = p.parse_args(argv)
    phases = tuple(x for x in a.phases.split(",") if x)
    if not set(phases) <= {"messages", "logins"}:
        p.error("--phases: messages, logins")
    if not shutil.which(a.py_spy):
        p.error(f"py-spy not found at {a.py_spy}")
    return Settings(
        engine=a.engine,
        phases=phases,
        pairs=a.pairs,
        window=a.window,
        messages=a.messages,
        logins=a.logins,
        concurrency=a.concurrency,
        rate=a.rate,
        nonblocking=not a.blocking,
        baseline=not a.no_baseline,
        out=a.out,
        py_spy=a.py_spy,
        keep=a.keep,
        timeout=a.timeout,
    )


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Samplers:
    """One ``py-spy record`` per server process, from start() to stop()."""

    def __init__(self, settings: Settings, phase: str, pids: dict[str, int]) -> None:
        self.settings = settings
        self.phase = phase
        self.pids = pids
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0.0
        self.cpu_before: dict[str, float] = {}

    def raw_path(self, name: str) -> Path:
        return self.settings.out / f"{self.phase}-{name}.txt"

    def start(self) -> None:
        s = self.settings
        for name, pid in self.pids.items():
            args = [s.py_spy, "record", "--pid", str(pid), "--rate", str(s.rate), "--format", "raw"]
            args += ["--output", str(self.raw_path(name))]
            if s.nonblocking:
                args.append("--nonblocking")
            self.procs[name] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        self.cpu_before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.started = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """Stop every sampler; the figures of the window (seconds, CPU of each process)."""
        seconds = time.monotonic() - self.started
        cpu = {
            name: 100 * (cpu_seconds(pid) - self.cpu_before[name]) / seconds
            for name, pid in self.pids.items()
        }
        before = children_cpu()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        errors = {}
        for name, proc in self.procs.items():
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not self.raw_path(name).exists():
                errors[name] = err.decode(errors="replace")[-500:]
        return {
            "seconds": seconds,
            "cpu_percent": cpu,
            # getrusage counts a child once it is waited for: only these samplers, just reaped.
            "py_spy_cpu_percent": 100 * (children_cpu() - before) / seconds,
            "sampler_errors": errors,
        }

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def login_cache_counts(cluster: LocalCluster) -> dict[str, float]:
    port = cluster.by_name("db-1").info.get("metrics_port")
    if not isinstance(port, int):
        return {}
    found = await scrape(port)
    return {
        outcome: sum(
            v for k, v in found.items() if k.startswith("imcluster_db_login_cache_total") and outcome in k
        )
        for outcome in ("hit", "miss")
    }


async def messages_phases(target: Target, settings: Settings, pids: dict[str, int]) -> dict[str, Any]:
    opts = settings.options()
    pairs = [Pair(i) for i in range(settings.pairs)]
    await login_pairs(target, pairs, opts)
    try:
        if not await target.settled(settings.pairs):
            raise RuntimeError("login_server never reported msg-1 holding the pair senders")
        result: dict[str, Any] = {}
        if settings.baseline:
            progress(f"messages: {settings.pairs}x{settings.messages}, unprofiled")
            result["unprofiled"] = await throughput_phase(target, pairs, 0, opts)
        progress(f"messages: {settings.pairs}x{settings.messages}, profiled")
        samplers = Samplers(settings, "messages", pids)
        samplers.start()
        try:
            await asyncio.sleep(ATTACH_SECONDS)
            result["profiled"] = await throughput_phase(target, pairs, 1, opts)
            result["window"] = samplers.stop()
        finally:
            samplers.kill()
        return result
    finally:
        await close_all([c for p in pairs for c in (p.sender, p.receiver) if c is not None])


async def logins_phases(
    cluster: LocalCluster, target: Target, settings: Settings, pids: dict[str, int]
) -> dict[str, Any]:
    names = idle_names(settings.logins)

    async def direct(_name: str) -> tuple[str, int]:
        return HOST, target.idle_port

    result: dict[str, Any] = {}
    for phase in ("logins-first", "logins-returning"):
        progress(f"{phase}: {settings.logins} direct logins, {settings.concurrency} at a time")
        cache_before = await login_cache_counts(cluster)
        samplers = Samplers(settings, phase, pids)
        samplers.start()
        try:
            await asyncio.sleep(ATTACH_SECONDS)
            conns, errors, seconds = await login_many(names, settings.concurrency, direct)
            window = samplers.stop()
        finally:
            samplers.kill()
        cache_after = await login_cache_counts(cluster)
        result[phase] = {
            "logins": len(conns),
            "login_errors": len(errors),
            "first_errors": errors[:3],
            "login_seconds": seconds,
            "logins_per_s": len(conns) / seconds if seconds > 0 else float("nan"),
            "login_cache": {k: cache_after.get(k, 0) - cache_before.get(k, 0) for k in ("hit", "miss")},
            "window": window,
        }
        await close_all(conns)
        if not await target.settled(0):
            progress("msg-1 still reports connections after the close; going on")
    return result


async def drive(cluster: LocalCluster, settings: Settings) -> dict[str, Any]:
    target = cluster_target(cluster)
    pids = {short: target.pids[name] for short, name in PROCESSES.items()}
    result: dict[str, Any] = {"pids": pids}
    async with asyncio.timeout(settings.timeout):
        if "messages" in settings.phases:
            result["messages"] = await messages_phases(target, settings, pids)
        if "logins" in settings.phases:
            result.update(await logins_phases(cluster, target, settings, pids))
    return result


def write_outputs(settings: Settings, results: dict[str, Any]) -> str:
    lines: list[str] = []
    phases = [p for p in ("messages", "logins-first", "logins-returning") if p in results]
    for phase in phases:
        figures = results[phase]
        window = figures["window"]
        if phase == "messages":
            prof = figures["profiled"]
            head = f"{prof['msgs_per_s']:,.0f} acked msgs/s profiled"
            if "unprofiled" in figures:
                head += f" ({figures['unprofiled']['msgs_per_s']:,.0f} unprofiled)"
            head += f", ack p50/p99 {prof['ack_p50_ms']:.1f}/{prof['ack_p99_ms']:.1f} ms"
            bad = {k: v for k, v in prof["checks"].items() if v and k not in ("sent", "acked")}
            head += f", checks {bad or 'all 0'}"
        else:
            head = (
                f"{figures['logins']} logins in {figures['login_seconds']:.1f} s = "
                f"{figures['logins_per_s']:,.0f}/s, {figures['login_errors']} errors, "
                f"login cache hits {figures['login_cache']['hit']:.0f} "
                f"misses {figures['login_cache']['miss']:.0f}"
            )
        lines.append(f"== {phase}: {head}")
        spy = window["py_spy_cpu_percent"]
        lines.append(f"   window {window['seconds']:.1f} s, py-spy CPU {spy:.0f}% (all samplers)")
        for name in PROCESSES:
            raw = settings.out / f"{phase}-{name}.txt"
            if not raw.exists():
                lines.append(f"-- {phase} {name}: no profile ({window['sampler_errors'].get(name, '?')})")
                continue
            profile = Profile.read(raw)
            busy = profile.samples / (settings.rate * window["seconds"]) * 100
            title = (
                f"{phase} - {name} ({PROCESSES[name]}): {profile.samples} samples at {settings.rate} Hz over "
                f"{window['seconds']:.1f} s, CPU {window['cpu_percent'][name]:.0f}% - {head}"
            )
            (settings.out / f"{phase}-{name}.svg").write_text(svg(profile, title))
            text = summary(profile)
            (settings.out / f"{phase}-{name}.summary.txt").write_text(title + "\n" + text)
            window.setdefault("samples", {})[name] = profile.samples
            lines.append(
                f"-- {name}: CPU {window['cpu_percent'][name]:.0f}% of a core, {profile.samples} samples "
                f"(busy {busy:.0f}% of the window)"
            )
            lines += ["   " + x for x in text.splitlines()[1:30]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    # SIGTERM gets Ctrl-C's clean-up; SIGINT too (a shell starts background jobs with it ignored).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    opts = settings.options()
    limit = raise_fd_limit(settings.logins + 4 * settings.pairs + 512)
    if limit < settings.logins + 4 * settings.pairs + 256:
        raise SystemExit(f"the open-files limit is {limit}: too low for --logins {settings.logins}")
    settings.out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="improfile-"))
    setup: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/profiles.py", *(argv if argv is not None else sys.argv[1:])]),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "engine": settings.engine,
        "password_hash": f"scrypt log2_n={BENCH_LOG2_N} (load tests only)",
        "py_spy": subprocess.run(
            [settings.py_spy, "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "rate": settings.rate,
        "nonblocking": settings.nonblocking,
    }
    cluster: LocalCluster | None = None
    try:
        with database(opts, run_dir) as (db_url, redis_url):
            names = idle_names(settings.logins) + [n for pair in pair_names(settings.pairs) for n in pair]
            progress(f"creating {len(names)} users")
            setup["user_seconds"] = asyncio.run(create_users(db_url, names))
            cluster = LocalCluster(
                run_dir,
                None,
                gateways=2,
                base_port=0,
                database_url=db_url,
                redis_url=redis_url,
                secret_file=write_secret_file(run_dir / "cluster.secret"),
                files=False,
                extra={"msg": ONE_ADDRESS_NO_LIMITS},
            )
            cluster.start()
            try:
                results = uvloop.run(drive(cluster, settings))
            finally:
                cluster.stop()
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except BaseException:
        settings.keep = True
        raise
    finally:
        if cluster is not None:
            cluster.stop()
        if settings.keep:
            print(f"run directory (server logs) kept: {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    text = write_outputs(settings, results)
    header = "\n".join(f"{k}: {v}" for k, v in setup.items())
    (settings.out / "summary.txt").write_text(header + "\n\n" + text)
    document = {"setup": setup, "settings": {**vars(settings), "out": str(settings.out)}, "results": results}
    (settings.out / "profile.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(header + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
