"""Issue 12's benchmark: closed and open loop 1:1, logins, connections, group fan-out.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/perf.py [--engine sqlite|mysql] [--quick]
        [--scenarios closed,open,logins,connections,groups] [--repeat R] [--out DIR]
    PYTHONPATH=$PWD .venv/bin/python benchmarks/perf.py --readme   # README table from the JSON

Every scenario starts its own LocalCluster (route, db_proxy, login_server, msg-1, msg-2)
on free ports and the echo server (benchmarks/echo_server.py) as the baseline measured
in the same run with the same client code; it prints medians of R runs (per-run values
in brackets), the ratio to the baseline and the CPU of every process (the client's own
included; MariaDB and Redis are in "others"). Writes perf-<engine>.txt, .json and .png
to --out (default benchmarks/results/perf/; --quick: a temporary directory unless
--out is given). All traffic goes to 127.0.0.1; every loop is bounded in count and time.
See benchmarks/README.md ("perf.py") for the scenarios and what each figure means.
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.groups_bench import fanout_run, login_members  # noqa: E402
from benchmarks.idle import idle_phase  # noqa: E402
from benchmarks.logins import close_all, login_many  # noqa: E402
from benchmarks.measure import cpu_percent, cpu_seconds, cpu_snapshot, median  # noqa: E402
from benchmarks.messages import UNACKED, VIOLATIONS, Pair, throughput_phase  # noqa: E402
from benchmarks.openloop import HIST_EDGES, open_loop  # noqa: E402
from benchmarks.report import no_nan  # noqa: E402
from benchmarks.servers import (  # noqa: E402
    EchoProcess,
    Target,
    cluster_target,
    database,
    log_problems,
    raise_fd_limit,
)
from benchmarks.settings import (  # noqa: E402
    BENCH_LOG2_N,
    HOST,
    LOGIN_TIMEOUT,
    ONE_ADDRESS_NO_LIMITS,
    PASSWORD_MD5,
    Options,
)
from benchmarks.wire import connect_and_login, http_get_json  # noqa: E402
from db_proxy.passwords import LOG2_N, hash_password  # noqa: E402
from db_proxy.storage import open_store  # noqa: E402
from imctl.cluster import LocalCluster, write_secret_file  # noqa: E402

SCENARIOS = ("closed", "open", "logins", "connections", "groups")
RESULTS = ROOT / "benchmarks" / "results" / "perf"
OPEN_RATES = (500, 1000, 2000, 4000, 8000)


@dataclass
class Sizes:
    repeat: int = 3
    pairs: int = 50
    window: int = 8
    messages: int = 300
    messages_w1: int = 60  # per sender with 1 in flight
    open_pairs: int = 100
    open_rates: tuple[int, ...] = OPEN_RATES
    open_seconds: float = 4.0
    open_grace: float = 3.0
    login_users: int = 600
    concurrency: int = 200
    conn_sizes: tuple[int, ...] = (1000, 5000, 10000, 19000)
    members: int = 500
    group_senders: int = 4
    group_messages: int = 100
    group_window: int = 4


QUICK = Sizes(
    repeat=1,
    pairs=10,
    messages=40,
    messages_w1=10,
    open_pairs=10,
    open_rates=(200, 1000),
    open_seconds=1.0,
    open_grace=1.5,
    login_users=30,
    concurrency=50,
    conn_sizes=(200, 600),
    members=40,
    group_senders=2,
    group_messages=20,
)


@dataclass
class Run:
    engine: str
    sizes: Sizes
    scenarios: tuple[str, ...]
    run_dir: Path
    db_url: str = ""
    redis_url: str | None = None
    deadline: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, dict[str, int]] = field(default_factory=dict)
    counter: int = 0


def progress(text: str) -> None:
    print(f"  .. {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


# -- set-up -----------------------------------------------------------------------


async def make_users(db_url: str, names: list[str], log2_n: int) -> list[int]:
    """Users in the store, 1,000 per transaction; their ids. One hash for all (one salt):
    the login's cost is the same, the set-up is not 1,000 scrypts."""
    store = open_store(db_url)
    await store.open()
    try:
        await store.migrate()
        hashed = hash_password(PASSWORD_MD5, log2_n=log2_n)
        ids: list[int] = []
        for i in range(0, len(names), 1000):
            got = await store.create_users([(n, hashed, {}) for n in names[i : i + 1000]])
            if any(x is None for x in got):
                raise RuntimeError("benchmark user names taken: the database is not fresh")
            ids.extend(x for x in got if x is not None)
        return ids
    finally:
        await store.close()


async def make_group(db_url: str, member_ids: list[int]) -> int:
    store = open_store(db_url)
    await store.open()
    try:
        group = await store.create_group("perf", "", member_ids[0], 1, member_ids)  # 1: normal group
        return int(group.id)
    finally:
        await store.close()


class Servers:
    """A fresh cluster and echo server for one scenario (or one size), stopped on exit."""

    def __init__(self, run: Run, label: str) -> None:
        run.counter += 1
        self.run = run
        self.dir = run.run_dir / f"{run.counter:02d}-{label}"
        self.cluster: LocalCluster | None = None
        self.echo: EchoProcess | None = None

    def __enter__(self) -> Servers:
        self.dir.mkdir(parents=True)
        self.cluster = LocalCluster(
            self.dir,
            None,
            gateways=2,
            base_port=0,
            database_url=self.run.db_url,
            redis_url=self.run.redis_url,
            secret_file=write_secret_file(self.dir / "cluster.secret"),
            files=False,
            extra={"msg": ONE_ADDRESS_NO_LIMITS},
        )
        try:
            self.cluster.start()
            self.echo = EchoProcess(self.dir)
            self.echo.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.echo is not None:
            self.echo.stop()
        if self.cluster is not None:
            self.cluster.stop()
        problems = log_problems(self.dir)
        if problems:
            self.run.problems[self.dir.name] = problems

    def targets(self) -> dict[str, Target]:
        assert self.cluster is not None and self.echo is not None
        return {"cluster": cluster_target(self.cluster), "echo": self.echo.target()}

    def check(self) -> None:
        assert self.cluster is not None and self.echo is not None
        dead = [s.name for s in self.cluster.dead()]
        if self.echo.process is not None and self.echo.process.poll() is not None:
            dead.append("echo")
        if dead:
            raise RuntimeError(f"server process(es) died: {', '.join(dead)}")


async def gateway_connections(target: Target) -> int:
    rows = await http_get_json(HOST, target.http_port, "/gateways", 5.0)
    return sum(int(r["connections"]) for r in rows)


async def settle(target: Target, count: int, timeout: float = 15.0) -> bool:
    """Until login_server hears that the gateways hold ``count`` clients in all."""
    if target.name != "cluster":
        await asyncio.sleep(0.3)
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await gateway_connections(target) == count:
            return True
        await asyncio.sleep(0.1)
    return False


async def login_named_pairs(
    target: Target, pairs: list[Pair], names: list[tuple[str, str]], conc: int
) -> None:
    semaphore = asyncio.Semaphore(conc)

    async def one(pair: Pair) -> None:
        sender, receiver = names[pair.index]
        async with semaphore:
            pair.sender = await connect_and_login(
                HOST, target.sender_port, sender, PASSWORD_MD5, LOGIN_TIMEOUT, pair.on_sender_push
            )
            pair.receiver = await connect_and_login(
                HOST, target.receiver_port, receiver, PASSWORD_MD5, LOGIN_TIMEOUT, pair.on_receiver_push
            )

    await asyncio.gather(*(one(p) for p in pairs))


async def close_pairs(pairs: list[Pair]) -> None:
    await close_all([c for p in pairs for c in (p.sender, p.receiver) if c is not None])


def opts_for(sizes: Sizes, pairs: int, messages: int, window: int) -> Options:
    return Options(pairs=pairs, messages=messages, window=window, concurrency=sizes.concurrency)


# -- the scenarios ----------------------------------------------------------------


async def closed_scenario(run: Run, s: Sizes, names: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": s.pairs, "window": s.window, "messages": s.messages, "runs": []}
    with Servers(run, "closed") as servers:
        for name, target in servers.targets().items():
            pairs = [Pair(i) for i in range(s.pairs)]
            await login_named_pairs(target, pairs, names, s.concurrency)
            try:
                await settle(target, 2 * s.pairs)
                await throughput_phase(target, pairs, 90, opts_for(s, s.pairs, 10, s.window))  # warm-up
                for rep in range(s.repeat):
                    progress(f"closed loop {s.pairs}x{s.window} in flight on {name}, run {rep + 1}")
                    r = await throughput_phase(target, pairs, rep, opts_for(s, s.pairs, s.messages, s.window))
                    r1 = await throughput_phase(
                        target, pairs, 100 + rep, opts_for(s, s.pairs, s.messages_w1, 1)
                    )
                    servers.check()
                    if len(out["runs"]) <= rep:
                        out["runs"].append({})
                    out["runs"][rep][name] = r
                    out["runs"][rep][f"{name}_w1"] = r1
            finally:
                await close_pairs(pairs)
    return out


async def open_scenario(run: Run, s: Sizes, capacity: float) -> dict[str, Any]:
    rates = sorted({*s.open_rates, round(2 * capacity)}) if capacity == capacity and capacity > 0 else []
    rates = rates or list(s.open_rates)
    overload = round(2 * capacity) if capacity == capacity and capacity > 0 else None
    out: dict[str, Any] = {"pairs": s.open_pairs, "seconds": s.open_seconds, "grace": s.open_grace}
    out.update(capacity=capacity, overload_rate=overload, rates=rates, runs=[])
    with Servers(run, "open") as servers:
        for rep in range(s.repeat):
            per_rate: dict[str, Any] = {}
            for i, rate in enumerate(rates):
                for name, target in servers.targets().items():
                    progress(f"open loop {rate}/s offered on {name}, run {rep + 1}")
                    names = open_names(s, rep, i)
                    pairs = [Pair(j) for j in range(s.open_pairs)]
                    await login_named_pairs(target, pairs, names, s.concurrency)
                    try:
                        # warm-up, not counted: the fresh sessions' first messages (cold caches)
                        await throughput_phase(target, pairs, 900 + rep, opts_for(s, s.open_pairs, 2, 1))
                        r = await open_loop(target, pairs, rep, rate, s.open_seconds, s.open_grace)
                    finally:
                        await close_pairs(pairs)
                    servers.check()
                    per_rate.setdefault(str(rate), {})[name] = r
            out["runs"].append(per_rate)
    return out


def open_names(s: Sizes, rep: int, rate_index: int) -> list[tuple[str, str]]:
    """Fresh users per open-loop run: a late ack or push of an earlier run reaches nobody."""
    return [(f"o{rep}x{rate_index}s{j}", f"o{rep}x{rate_index}r{j}") for j in range(s.open_pairs)]


def login_names(s: Sizes) -> list[str]:
    return [f"plog{i}" for i in range(s.login_users)]


async def logins_scenario(run: Run, s: Sizes) -> dict[str, Any]:
    names = login_names(s)
    out: dict[str, Any] = {"users": len(names), "concurrency": s.concurrency, "log2_n": LOG2_N}
    out.update(storm=[], direct=[], discovery=[], echo=[])
    with Servers(run, "logins") as servers:
        targets = servers.targets()
        cluster, echo = targets["cluster"], targets["echo"]

        async def direct(_n: str) -> tuple[str, int]:
            return HOST, cluster.idle_port

        async def discover(_n: str) -> tuple[str, int]:
            reply = await http_get_json(HOST, cluster.http_port, "/msg_server", LOGIN_TIMEOUT)
            if reply.get("code") != 0 or reply["priorIP"] != HOST:
                raise ValueError(f"discovery answered {reply}")
            return HOST, int(reply["port"])

        async def echo_addr(_n: str) -> tuple[str, int]:
            return HOST, echo.idle_port

        async def measure(
            target: Target,
            who: list[str],
            address: Any,
            concurrency: int = s.concurrency,
            timeout: float = LOGIN_TIMEOUT,
        ) -> dict[str, Any]:
            before = cpu_snapshot(target)
            conns, errors, seconds = await login_many(who, concurrency, address, timeout)
            cpu = cpu_percent(before, cpu_snapshot(target), seconds)
            await close_all(conns)
            drained = await settle(target, 0)
            servers.check()
            db_cpu = cpu.get("db-1", float("nan")) / 100 * seconds
            return {
                "logins": len(conns),
                "errors": len(errors),
                "first_errors": errors[:3],
                "failed": [e.split(":", 1)[0] for e in errors],
                "seconds": seconds,
                "logins_per_s": len(conns) / seconds if seconds > 0 else float("nan"),
                "logins_per_db_core_s": len(conns) / db_cpu if db_cpu > 0 else float("nan"),
                "cpu_percent": cpu,
                "drained": drained,
            }

        # the first-time storm, in R chunks: cold cache, every login an scrypt (it warms the cache)
        chunk = max(1, len(names) // s.repeat)
        for rep in range(s.repeat):
            who = names[rep * chunk : (rep + 1) * chunk] if rep < s.repeat - 1 else names[rep * chunk :]
            progress(f"first-time login storm, {len(who)} users (scrypt log2 n = {LOG2_N}), run {rep + 1}")
            # hashes of logins an earlier chunk gave up on may still be running: wait for a quiet db-1
            await quiet(cluster.pids["db-1"])
            out["storm"].append(await measure(cluster, who, direct, timeout=STORM_TIMEOUT))
        # The storm may refuse logins ("service unavailable; try again": db_proxy's hash pool is
        # full): those users log in again, a few at a time, until every cache entry is warm.
        cold = [n for r in out["storm"] for n in r.pop("failed")]
        out["warm_retries"] = 0
        for _ in range(5):
            if not cold or time.monotonic() > run.deadline - 60:
                break
            progress(f"warming the cache of {len(cold)} users the storm refused")
            await quiet(cluster.pids["db-1"])
            r = await measure(cluster, cold, direct, 16, STORM_TIMEOUT)
            out["warm_retries"] += len(cold)
            cold = r["failed"]
        out["never_warmed"] = len(cold)
        for rep in range(s.repeat):
            progress(f"{len(names)} returning users: direct, discovery, echo, run {rep + 1}")
            for key, target, address in (
                ("direct", cluster, direct),
                ("discovery", cluster, discover),
                ("echo", echo, echo_addr),
            ):
                r = await measure(target, names, address)
                r.pop("failed")
                out[key].append(r)
    return out


STORM_TIMEOUT = 60.0  # a first-time login waits for its scrypt behind up to 200 others


async def quiet(pid: int, below: float = 0.2, timeout: float = 60.0) -> None:
    """Until the process uses less than ``below`` of a core over half a second (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if cpu_seconds(pid) - before < below * 0.5:
            return


async def connections_scenario(run: Run, s: Sizes, idle: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": list(s.conn_sizes), "runs": []}
    for rep in range(s.repeat):
        per: dict[str, Any] = {}
        for size in s.conn_sizes:
            with Servers(run, f"conns{size}") as servers:
                targets = servers.targets()
                progress(f"{size} idle connections on msg-1, run {rep + 1}")
                opts = opts_for(s, 0, 0, 1)
                per[str(size)] = {"cluster": await idle_phase(targets["cluster"], idle[:size], opts, 0)}
                servers.check()
                if size == s.conn_sizes[-1]:
                    progress(f"{size} idle connections on the echo server, run {rep + 1}")
                    per[str(size)]["echo"] = await idle_phase(targets["echo"], idle[:size], opts, 0)
        out["runs"].append(per)
    return out


async def groups_scenario(run: Run, s: Sizes, names: list[str], group_id: int) -> dict[str, Any]:
    out: dict[str, Any] = {"members": len(names), "senders": s.group_senders, "runs": []}
    out.update(messages=s.group_messages, window=s.group_window, group_id=group_id)
    with Servers(run, "groups") as servers:
        for name, target in servers.targets().items():
            ports = [target.sender_port, target.receiver_port]
            members, errors = await login_members(names, ports, s.concurrency)
            try:
                if errors:
                    raise RuntimeError(f"group members could not log in: {errors[:3]}")
                gid = group_id if name == "cluster" else 1
                await settle(target, len(names))
                await fanout_run(target, members, gid, 90, s.group_senders, 5, s.group_window)  # warm-up
                for rep in range(s.repeat):
                    progress(f"group fan-out to {len(names)} members on {name}, run {rep + 1}")
                    r = await fanout_run(
                        target, members, gid, rep, s.group_senders, s.group_messages, s.group_window
                    )
                    servers.check()
                    if len(out["runs"]) <= rep:
                        out["runs"].append({})
                    out["runs"][rep][name] = r
            finally:
                await close_all([m.conn for m in members if m.conn is not None])
    return out


async def run_all(run: Run) -> None:
    s = run.sizes
    sc = run.scenarios
    budget = run.deadline - time.monotonic()
    async with asyncio.timeout(budget):
        capacity = float("nan")
        if "closed" in sc:
            run.results["closed"] = await closed_scenario(
                run, s, [(f"send{i}", f"recv{i}") for i in range(s.pairs)]
            )
            capacity = median([r["cluster"]["msgs_per_s"] for r in run.results["closed"]["runs"]])
        if "open" in sc:
            run.results["open"] = await open_scenario(run, s, capacity)
        if "logins" in sc:
            run.results["logins"] = await logins_scenario(run, s)
        if "connections" in sc:
            run.results["connections"] = await connections_scenario(run, s, idle_users(s))
        if "groups" in sc:
            run.results["groups"] = await groups_scenario(
                run, s, group_users(s), run.results.pop("_group_id", 0)
            )


def idle_users(s: Sizes) -> list[str]:
    return [f"idle{i}" for i in range(max(s.conn_sizes))]


def group_users(s: Sizes) -> list[str]:
    return [f"grp{i}" for i in range(s.members)]


async def setup_users(run: Run) -> dict[str, Any]:
    s, sc = run.sizes, run.scenarios
    cheap: list[str] = []
    if "closed" in sc:
        cheap += [n for i in range(s.pairs) for n in (f"send{i}", f"recv{i}")]
    if "open" in sc:
        for rep in range(s.repeat):
            for i in range(len(s.open_rates) + 1):
                cheap += [n for pair in open_names(s, rep, i) for n in pair]
    if "connections" in sc:
        cheap += idle_users(s)
    started = time.monotonic()
    await make_users(run.db_url, cheap, BENCH_LOG2_N)
    if "groups" in sc:
        ids = await make_users(run.db_url, group_users(s), BENCH_LOG2_N)
        run.results["_group_id"] = await make_group(run.db_url, ids)
    if "logins" in sc:
        await make_users(run.db_url, login_names(s), LOG2_N)  # the production cost
    return {"users_seconds": time.monotonic() - started, "cheap_users": len(cheap)}


# -- summary ------------------------------------------------------------------------


def get(d: Any, path: str) -> float:
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return float("nan")
        d = d[key]
    try:
        return float(d)
    except (TypeError, ValueError):
        return float("nan")


def stat(runs: list[Any], path: str) -> dict[str, Any]:
    values = [get(r, path) for r in runs]
    return {"median": median(values), "runs": values}


def cpu_median(runs: list[Any], path: str) -> dict[str, float]:
    names: set[str] = set()
    for r in runs:
        cpu = r
        for key in path.split("."):
            cpu = cpu.get(key, {}) if isinstance(cpu, dict) else {}
        names.update(cpu)
    return {n: median([get(r, f"{path}.{n}") for r in runs]) for n in sorted(names)}


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bad: Counter[str] = Counter()
    unacked: Counter[str] = Counter()
    if "closed" in results:
        runs = results["closed"]["runs"]
        c: dict[str, Any] = {}
        for variant in ("cluster", "echo", "cluster_w1", "echo_w1"):
            c[variant] = {
                k: stat(runs, f"{variant}.{k}")
                for k in ("msgs_per_s", "ack_p50_ms", "ack_p99_ms", "delivery_p50_ms", "delivery_p99_ms")
            }
            c[variant]["cpu"] = cpu_median(runs, f"{variant}.cpu_percent")
            for r in runs:
                checks = r[variant]["checks"]
                if variant.startswith("cluster"):
                    bad.update({k: checks.get(k, 0) for k in VIOLATIONS})
                    unacked.update({k: checks.get(k, 0) for k in UNACKED})
        c["ratio"] = ratio(c["cluster"]["msgs_per_s"]["median"], c["echo"]["msgs_per_s"]["median"])
        c["ratio_w1"] = ratio(c["cluster_w1"]["msgs_per_s"]["median"], c["echo_w1"]["msgs_per_s"]["median"])
        out["closed"] = c
    if "open" in results:
        o = results["open"]
        per: dict[str, Any] = {}
        for rate in o["rates"]:
            rr = [r[str(rate)] for r in o["runs"] if str(rate) in r]
            row: dict[str, Any] = {}
            for name in ("cluster", "echo"):
                row[name] = {
                    k: stat(rr, f"{name}.{k}")
                    for k in ("acked_per_s", "ack_p50_ms", "ack_p99_ms", "ack_max_ms", "late_acks", "unacked")
                }
                row[name]["cpu"] = cpu_median(rr, f"{name}.cpu_percent")
                hist = [0] * len(HIST_EDGES)
                for r in rr:
                    hist = [a + b for a, b in zip(hist, r[name]["histogram_ms"], strict=True)]
                row[name]["histogram_ms"] = hist
            for r in rr:
                bad.update({k: r["cluster"]["checks"].get(k, 0) for k in VIOLATIONS})
            row["ratio"] = ratio(
                row["cluster"]["acked_per_s"]["median"], row["echo"]["acked_per_s"]["median"]
            )
            per[str(rate)] = row
        out["open"] = {"rates": per, "capacity": o["capacity"], "overload_rate": o["overload_rate"]}
        if o["overload_rate"] is not None:
            row = per[str(o["overload_rate"])]["cluster"]
            out["open"]["overload"] = {
                "acked_over_capacity": ratio(row["acked_per_s"]["median"], o["capacity"]),
                "late_acks": row["late_acks"]["median"],
                "late_acks_max": max(row["late_acks"]["runs"]),
            }
    if "logins" in results:
        lg = results["logins"]
        out["logins"] = {k: stat(lg[k], "logins_per_s") for k in ("storm", "direct", "discovery", "echo")}
        out["logins"]["storm_per_db_core_s"] = stat(lg["storm"], "logins_per_db_core_s")
        for k in ("storm", "direct", "discovery", "echo"):
            out["logins"][f"{k}_cpu"] = cpu_median(lg[k], "cpu_percent")
        e = out["logins"]["echo"]["median"]
        out["logins"]["ratio_direct"] = ratio(out["logins"]["direct"]["median"], e)
        out["logins"]["ratio_discovery"] = ratio(out["logins"]["discovery"]["median"], e)
        # refusals under load are not correctness errors: reported, they do not fail the run
        out["logins"]["errors"] = sum(r["errors"] for k in ("direct", "discovery", "echo") for r in lg[k])
        out["logins"]["storm_refused"] = sum(r["errors"] for r in lg["storm"])
        out["logins"]["never_warmed"] = lg.get("never_warmed", 0)
    if "connections" in results:
        cr = results["connections"]
        conns: dict[str, Any] = {}
        for size in cr["sizes"]:
            rr = [r[str(size)] for r in cr["runs"]]
            conns[str(size)] = {
                "rss_per_conn": stat(rr, "cluster.rss_per_conn"),
                "rss_before": stat(rr, "cluster.rss_before"),
                "rss_after": stat(rr, "cluster.rss_after"),
                "logins_per_s": stat(rr, "cluster.logins_per_s"),
                "route_per_session": median(
                    [get(r, "cluster.rss_delta_by_process.route-1") / size for r in rr]
                ),
                "echo_rss_per_conn": stat(rr, "echo.rss_per_conn"),
                "login_errors": sum(get(r, "cluster.login_errors") for r in rr),
            }
        last = conns[str(cr["sizes"][-1])]
        conns["ratio"] = ratio(last["rss_per_conn"]["median"], last["echo_rss_per_conn"]["median"])
        values = [conns[str(size)]["rss_per_conn"]["median"] for size in cr["sizes"]]
        conns["flatness"] = ratio(max(values), min(values)) if values else float("nan")
        out["connections"] = conns
    if "groups" in results:
        runs = results["groups"]["runs"]
        g: dict[str, Any] = {}
        for name in ("cluster", "echo"):
            g[name] = {k: stat(runs, f"{name}.{k}") for k in ("deliveries_per_s", "deliveries", "unacked")}
            g[name]["cpu"] = cpu_median(runs, f"{name}.cpu_percent")
        for r in runs:
            bad.update(r["cluster"]["checks"])
        g["ratio"] = ratio(
            g["cluster"]["deliveries_per_s"]["median"], g["echo"]["deliveries_per_s"]["median"]
        )
        out["groups"] = g
    out["violations"] = dict(bad)
    out["unacked"] = dict(unacked)
    return out


# -- text report ------------------------------------------------------------------


def f(v: float | None, digits: int = 0) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def m(st: dict[str, Any], digits: int = 0) -> str:
    return f(st["median"], digits)


def mib(st: dict[str, Any]) -> str:
    return f(st["median"] / 2**20, 1)


def med_runs(st: dict[str, Any], digits: int = 0) -> str:
    runs = " / ".join(f(v, digits) for v in st["runs"])
    return f"{f(st['median'], digits)} [{runs}]" if len(st["runs"]) > 1 else f(st["median"], digits)


def cpu_text(cpu: dict[str, float]) -> str:
    order = [k for k in cpu if k not in ("box", "client", "others")] + ["client", "others", "box"]
    return ", ".join(f"{k} {cpu[k]:.0f}%" for k in order if k in cpu and cpu[k] == cpu[k])


def report(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    setup = doc["setup"]
    lines = [
        f"perf.py {' '.join(setup['argv'])}",
        f"{setup['date']}  engine {setup['engine']}  cpus {setup['cpus']}  python {setup['python']}  "
        f"medians of {setup['repeat']} run(s), per-run values in brackets; CPU: 100% = one core",
        "",
    ]
    if "closed" in s:
        c = s["closed"]
        sz = doc["results"]["closed"]
        lines += [
            f"## closed loop 1:1: {sz['pairs']} pairs, senders on msg-1, receivers on msg-2",
            f"  {sz['window']} in flight: acked msgs/s {med_runs(c['cluster']['msgs_per_s'])}"
            f"  echo {med_runs(c['echo']['msgs_per_s'])}  ratio {f(c['ratio'], 3)}",
            f"    ack p50/p99 {m(c['cluster']['ack_p50_ms'], 1)} / "
            f"{m(c['cluster']['ack_p99_ms'], 1)} ms, delivery p50/p99 "
            f"{m(c['cluster']['delivery_p50_ms'], 1)} / {m(c['cluster']['delivery_p99_ms'], 1)} ms",
            f"    CPU {cpu_text(c['cluster']['cpu'])}",
            f"  1 in flight: acked msgs/s {med_runs(c['cluster_w1']['msgs_per_s'])}"
            f"  echo {med_runs(c['echo_w1']['msgs_per_s'])}  ratio {f(c['ratio_w1'], 3)}"
            f"  ack p99 {m(c['cluster_w1']['ack_p99_ms'], 1)} ms",
            f"    CPU {cpu_text(c['cluster_w1']['cpu'])}",
            "",
        ]
    if "open" in s:
        o = s["open"]
        sz = doc["results"]["open"]
        lines += [
            f"## open loop 1:1: {sz['pairs']} pairs, {sz['seconds']} s per rate, grace {sz['grace']} s; "
            f"closed-loop capacity {f(o['capacity'])}/s",
            f"  {'offered/s':>9} {'acked/s':>16} {'echo':>8} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8} {'>1 s':>6} {'unacked':>8}  CPU",
        ]
        for rate, row in o["rates"].items():
            cl = row["cluster"]
            lines.append(
                f"  {int(rate):>9,} {med_runs(cl['acked_per_s']):>16} {m(row['echo']['acked_per_s']):>8} "
                f"{f(row['ratio'], 2):>6} {m(cl['ack_p50_ms'], 1):>8} {m(cl['ack_p99_ms'], 1):>8} "
                f"{m(cl['ack_max_ms'], 0):>8} {m(cl['late_acks']):>6} "
                f"{m(cl['unacked']):>8}  {cpu_text(cl['cpu'])}"
            )
        if "overload" in o:
            ov = o["overload"]
            lines.append(
                f"  overload (offered {f(o['overload_rate'])}/s = 2x capacity): acked/capacity "
                f"{f(ov['acked_over_capacity'], 2)} (target >= 0.9), acks later than 1 s "
                f"{f(ov['late_acks'])} (max of runs {f(ov['late_acks_max'])}; target 0)"
            )
        if "2000" in o["rates"]:
            lines.append(
                f"  ack p99 at 2,000/s offered: {m(o['rates']['2000']['cluster']['ack_p99_ms'], 1)} ms "
                "(target < 100 ms)"
            )
        lines.append("")
    if "logins" in s:
        lg = s["logins"]
        sz = doc["results"]["logins"]
        lines += [
            f"## logins: {sz['users']} returning users (scrypt log2 n = {sz['log2_n']}, warm cache), "
            f"{sz['concurrency']} in flight",
            f"  direct TCP      {med_runs(lg['direct'])} /s  ratio to echo {f(lg['ratio_direct'], 3)}"
            f"  (target >= 2,000)  CPU {cpu_text(lg['direct_cpu'])}",
            f"  via discovery   {med_runs(lg['discovery'])} /s  ratio to echo {f(lg['ratio_discovery'], 3)}"
            f"  (target >= 1,500)  CPU {cpu_text(lg['discovery_cpu'])}",
            f"  echo baseline   {med_runs(lg['echo'])} /s",
            f"  first-time storm (cold cache, one scrypt each): {med_runs(lg['storm'], 1)} /s, "
            f"{med_runs(lg['storm_per_db_core_s'], 1)} logins per db_proxy core-second",
            f"    CPU {cpu_text(lg['storm_cpu'])}",
            f"  storm refusals {lg['storm_refused']} (logged in again a few at a time before the returning"
            f" rounds; never warmed: {lg['never_warmed']}); returning-login errors {lg['errors']}",
            "",
        ]
    if "connections" in s:
        cn = s["connections"]
        sizes = doc["results"]["connections"]["sizes"]
        lines.append("## connections: RSS per logged-in idle connection on msg-1 (fresh cluster per size)")
        for size in sizes:
            row = cn[str(size)]
            lines.append(
                f"  {size:>6,}: {med_runs(row['rss_per_conn'])} B/conn  msg-1 "
                f"{mib(row['rss_before'])} -> {mib(row['rss_after'])} MiB"
                f"  route {f(row['route_per_session'])} B/session  logins {m(row['logins_per_s'])}/s"
                + (f" ({f(row['login_errors'])} login errors)" if row["login_errors"] else "")
                + (
                    f"  echo {m(row['echo_rss_per_conn'])} B/conn"
                    if row["echo_rss_per_conn"]["median"] == row["echo_rss_per_conn"]["median"]
                    else ""
                )
            )
        lines += [
            f"  largest/smallest per-connection figure {f(cn['flatness'], 2)} (flat: ~1); ratio to echo at "
            f"{sizes[-1]:,}: {f(cn['ratio'], 2)}; target <= 3,584 B at 19,000",
            "",
        ]
    if "groups" in s:
        g = s["groups"]
        sz = doc["results"]["groups"]
        lines += [
            f"## group fan-out: {sz['members']} members over msg-1 and msg-2, {sz['senders']} senders x "
            f"{sz['messages']} messages, {sz['window']} in flight each",
            f"  deliveries/s {med_runs(g['cluster']['deliveries_per_s'])}  echo "
            f"{med_runs(g['echo']['deliveries_per_s'])}  ratio {f(g['ratio'], 3)}  (target >= 50,000)",
            f"  CPU {cpu_text(g['cluster']['cpu'])}",
            f"  echo CPU {cpu_text(g['echo']['cpu'])}",
            "",
        ]
    lines.append(f"correctness (must be 0): {json.dumps(s['violations'], sort_keys=True)}")
    lines.append(f"closed-loop unacked: {json.dumps(s['unacked'], sort_keys=True)}")
    if doc["setup"].get("server_log_problems"):
        lines.append(f"server log warnings/errors: {json.dumps(doc['setup']['server_log_problems'])}")
    lines.append(f"total {doc['setup']['total_seconds']:.0f} s")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--engine", choices=("sqlite", "mysql"), default="sqlite")
    p.add_argument("--quick", action="store_true", help="tiny sizes, every scenario in about a minute")
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated of {','.join(SCENARIOS)}"
    )
    p.add_argument("--repeat", type=int, help="runs per scenario (default 3, --quick 1)")
    p.add_argument("--conn-sizes", help="comma-separated connection counts (default 1000,5000,10000,19000)")
    p.add_argument("--rates", help="comma-separated open-loop offered rates (2x capacity is added)")
    p.add_argument("--out", type=Path, help="directory for perf-<engine>.txt/.json/.png")
    p.add_argument("--timeout", type=float, default=3600.0, help="limit for the whole run, seconds")
    p.add_argument("--keep", action="store_true", help="keep the run directory (server logs)")
    p.add_argument(
        "--readme", action="store_true", help="rewrite README.md's performance table from the JSON"
    )
    a = p.parse_args(argv)
    a.scenarios = tuple(x for x in a.scenarios.split(",") if x)
    unknown = set(a.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.readme:
        from benchmarks.perf_table import main as table_main

        return table_main(a.out or RESULTS)
    sizes = Sizes(**vars(QUICK)) if a.quick else Sizes()
    if a.repeat:
        sizes.repeat = a.repeat
    if a.conn_sizes:
        sizes.conn_sizes = tuple(int(x) for x in a.conn_sizes.split(","))
    if a.rates:
        sizes.open_rates = tuple(int(x) for x in a.rates.split(","))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    need = (max(sizes.conn_sizes) if "connections" in a.scenarios else 0) + 4 * sizes.open_pairs + 1000
    limit = raise_fd_limit(need)  # before the servers start: they inherit it
    if limit < need - 500:
        print(
            f"the open-files limit is {limit}: too low for {max(sizes.conn_sizes)} connections",
            file=sys.stderr,
        )
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix="imperf-"))
    run = Run(a.engine, sizes, a.scenarios, run_dir, deadline=started + a.timeout)
    setup: dict[str, Any] = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "engine": a.engine,
        "repeat": sizes.repeat,
        "fd_limit": limit,
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(sizes).items()},
    }
    keep = a.keep
    try:
        with database(Options(engine=a.engine), run_dir) as (db_url, redis_url):
            run.db_url, run.redis_url = db_url, redis_url
            progress(f"creating users ({a.engine})")
            setup.update(asyncio.run(setup_users(run)))
            uvloop.run(run_all(run))
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"perf.py exceeded its {a.timeout:.0f} s limit; servers stopped", file=sys.stderr)
        keep = True
        return 2
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"run directory (server logs) kept: {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    setup["total_seconds"] = time.monotonic() - started
    setup["server_log_problems"] = run.problems
    run.results.pop("_group_id", None)
    doc = {"setup": setup, "results": run.results, "summary": summarize(run.results)}
    out_dir = (
        a.out if a.out is not None else (Path(tempfile.mkdtemp(prefix="imperf-out-")) if a.quick else RESULTS)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    text = report(doc)
    print(text)
    (out_dir / f"perf-{a.engine}.txt").write_text(text + "\n")
    (out_dir / f"perf-{a.engine}.json").write_text(json.dumps(no_nan(doc), indent=1, default=str) + "\n")
    try:
        from benchmarks.plots import plot

        plot(doc, out_dir / f"perf-{a.engine}.png")
    except ImportError as exc:  # matplotlib is optional: .venv/bin/pip install matplotlib
        print(f"no plot: {exc}", file=sys.stderr)
    print(f"written: {out_dir}/perf-{a.engine}.txt, .json, .png", file=sys.stderr)
    bad = sum(doc["summary"]["violations"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
