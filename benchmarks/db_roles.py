"""db_proxy tiers benchmark: logins/s on a login-only db_proxy, msgs/s on a message-only one.

    PYTHONPATH=. .venv/bin/python benchmarks/db_roles.py [--quick] [--logins L] [--first F]
        [--pairs N] [--messages M] [--window K] [--repeat R] [--out FILE]

Starts one split cluster on MariaDB + Redis (two fresh databases, dropped
afterwards): ``db-login`` serves login, directory and admin on the first,
``db-msg`` serves messages on the second, behind two gateways, one route
server and a login_server, each its own process. Then, R times:

1. **First-time logins.** F users never seen before log in (half on each
   gateway, ``--concurrency`` at a time): the verified-password cache is cold,
   so each costs db-login a full scrypt at the production cost (log2 n = 14).
2. **Returning logins.** L users log in again whose password db-login has
   verified before: the cache (in Redis) is hot, no scrypt.
3. **Messages.** N senders on msg-1 each send M 1:1 messages to a receiver
   on msg-2, at most K un-acked (closed loop); every acked message must be
   delivered once, in order (benchmarks/messages.py checks it).

Each phase reports its rate and the CPU seconds every server process used
during it (/proc/<pid>/stat); the table shows medians of the R runs. The
exit status is 0 only if no login failed and no message was lost,
duplicated, reordered or left unacked. Reuses load.py's client and helpers
(benchmarks/wire.py, logins.py, messages.py, measure.py, servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.logins import close_all, login_many  # noqa: E402
from benchmarks.measure import cpu_seconds, median  # noqa: E402
from benchmarks.messages import UNACKED, VIOLATIONS, Pair, login_pairs, throughput_phase  # noqa: E402
from benchmarks.servers import REDIS_URL, cluster_target, log_problems, pair_names  # noqa: E402
from benchmarks.settings import BENCH_LOG2_N, HOST, ONE_ADDRESS_NO_LIMITS, PASSWORD_MD5, Options  # noqa: E402
from db_proxy.passwords import LOG2_N, hash_password  # noqa: E402
from db_proxy.storage import open_store  # noqa: E402
from imctl.cluster import DbNode, LocalCluster, write_secret_file  # noqa: E402
from tests.support.databases import fresh_mysql_url  # noqa: E402

LOGIN_ROLES = ("login", "directory", "admin")
MESSAGE_ROLES = ("messages",)
FULL = {"logins": 2000, "first": 200, "pairs": 50, "messages": 200, "window": 8, "repeat": 3}
# Each first login costs db-login a production scrypt (tens of ms on one of its hashing
# threads): more in flight only queue there, past the gateway's request timeout.
FIRST_IN_FLIGHT = 8
QUICK = {"logins": 200, "first": 20, "pairs": 5, "messages": 40, "window": 4, "repeat": 1}


def parse_args(argv: Sequence[str] | None) -> tuple[Options, dict[str, int], Path | None]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--logins", type=int, help=f"returning logins per run (default {FULL['logins']})")
    p.add_argument("--first", type=int, help=f"first-time logins per run (default {FULL['first']})")
    p.add_argument("--pairs", type=int, help=f"sender/receiver pairs (default {FULL['pairs']})")
    p.add_argument("--messages", type=int, help=f"messages per sender (default {FULL['messages']})")
    p.add_argument("--window", type=int, help=f"un-acked messages per sender (default {FULL['window']})")
    p.add_argument("--repeat", type=int, help=f"runs; the table shows medians (default {FULL['repeat']})")
    p.add_argument("--concurrency", type=int, default=100, help="returning logins in flight (default 100)")
    p.add_argument(
        "--first-concurrency",
        type=int,
        default=FIRST_IN_FLIGHT,
        help=f"first-time logins in flight (default {FIRST_IN_FLIGHT})",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="limit for the whole run (default 600 s)")
    p.add_argument("--quick", action="store_true", help="a small run for the smoke test")
    p.add_argument("--keep", action="store_true", help="keep the run directory (server logs)")
    p.add_argument("--out", type=Path, help="also write the report here")
    a = p.parse_args(argv)
    counts = {key: getattr(a, key) or default for key, default in (QUICK if a.quick else FULL).items()}
    counts["first_in_flight"] = a.first_concurrency
    if min(counts.values()) < 1 or a.concurrency < 1:
        p.error("every count must be at least 1")
    opts = Options(
        engine="mysql",
        pairs=counts["pairs"],
        messages=counts["messages"],
        window=counts["window"],
        repeat=counts["repeat"],
        concurrency=a.concurrency,
        timeout=a.timeout,
        quick=a.quick,
        keep=a.keep,
    )
    return opts, counts, a.out


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# -- set-up ---------------------------------------------------------------------------------


def first_names(rep: int, count: int) -> list[str]:
    return [f"first{rep}_{i}" for i in range(count)]


async def create_users(directory_url: str, counts: dict[str, int]) -> None:
    """The benchmark's users, straight into the directory database, before the cluster starts.

    The login users share one production-cost hash (one salt for all: a benchmark only),
    so each first login pays a real scrypt; the message pairs get a cheap one.
    """
    store = open_store(directory_url)
    await store.open()
    try:
        await store.migrate()
        real = hash_password(PASSWORD_MD5)  # LOG2_N, the production cost
        cheap = hash_password(PASSWORD_MD5, log2_n=BENCH_LOG2_N)
        names = [(n, real) for rep in range(counts["repeat"]) for n in first_names(rep, counts["first"])]
        names += [(n, cheap) for pair in pair_names(counts["pairs"]) for n in pair]
        todo = iter(names)

        async def worker() -> None:
            for name, hashed in todo:
                await store.create_user(name, hashed)

        await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        await store.close()


@contextlib.contextmanager
def split_cluster(run_dir: Path, counts: dict[str, int]) -> Iterator[LocalCluster]:
    with fresh_mysql_url() as directory_url, fresh_mysql_url() as messages_url:
        asyncio.run(create_users(directory_url, counts))
        layout = (
            DbNode("db-login", LOGIN_ROLES, directory_url, messages_url),
            DbNode("db-msg", MESSAGE_ROLES, directory_url, messages_url),
        )
        cluster = LocalCluster(
            run_dir,
            None,
            gateways=2,
            base_port=0,
            database_url=directory_url,
            redis_url=REDIS_URL,
            secret_file=write_secret_file(run_dir / "cluster.secret"),
            files=False,
            extra={"msg": ONE_ADDRESS_NO_LIMITS},
            db_layout=layout,
        )
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


# -- the phases -------------------------------------------------------------------------------


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


async def login_phase(cluster: LocalCluster, rounds: list[list[str]], concurrency: int) -> dict[str, Any]:
    """Log each round's names in (alternating gateways), then out: logins/s and CPU seconds.

    A name appears once per round: db_proxy's throttle counts a user's logins still being
    checked as failures (so parallel guesses cannot slip through), and a user logging in
    many times at once would measure that instead.
    """
    ports = [int(str(cluster.by_name(g).info["port"])) for g in ("msg-1", "msg-2")]
    turn = iter(range(sum(map(len, rounds)) * 2))

    async def address(name: str) -> tuple[str, int]:
        return HOST, ports[next(turn) % 2]

    pids = cluster_target(cluster).pids
    before = cpu_of(pids)
    logins, seconds, errors = 0, 0.0, list[str]()
    for names in rounds:
        conns, failed, took = await login_many(names, concurrency, address)
        logins, seconds, errors = logins + len(conns), seconds + took, errors + failed
        await close_all(conns)
    cpu = cpu_used(before, cpu_of(pids))
    return {
        "logins": logins,
        "errors": errors[:5],
        "error_count": len(errors),
        "seconds": seconds,
        "per_s": logins / seconds if seconds > 0 else float("nan"),
        "cpu_s": cpu,
    }


async def one_run(
    cluster: LocalCluster, pairs: list[Pair], counts: dict[str, int], rep: int, opts: Options
) -> dict[str, Any]:
    label = f"run {rep + 1}/{opts.repeat}"
    first = first_names(rep, counts["first"])
    progress(f"{label}: {len(first)} first-time logins")
    cold = await login_phase(cluster, [first], counts["first_in_flight"])
    # Returning users: the same users again, round after round (their passwords are verified now).
    returning = [first[i % len(first)] for i in range(counts["logins"])]
    rounds = [returning[i : i + len(first)] for i in range(0, len(returning), len(first))]
    progress(f"{label}: {len(returning)} returning logins")
    hot = await login_phase(cluster, rounds, opts.concurrency)
    progress(f"{label}: {opts.pairs}x{opts.messages} messages, {opts.window} in flight")
    target = cluster_target(cluster)
    messages = await throughput_phase(target, pairs, rep, opts)
    wall = messages["seconds"]
    # throughput_phase reports CPU as percent of one core over its wall time.
    messages["cpu_s"] = {
        name: pct * wall / 100 for name, pct in messages.pop("cpu_percent").items() if name in target.pids
    }
    return {"first": cold, "returning": hot, "messages": messages}


async def all_runs(cluster: LocalCluster, counts: dict[str, int], opts: Options) -> list[dict[str, Any]]:
    target = cluster_target(cluster)
    pairs = [Pair(i) for i in range(opts.pairs)]
    await login_pairs(target, pairs, opts)
    try:
        return [await one_run(cluster, pairs, counts, rep, opts) for rep in range(opts.repeat)]
    finally:
        await close_all([c for p in pairs for c in (p.sender, p.receiver) if c is not None])


# -- the report ----------------------------------------------------------------------------------


def cpu_line(runs: list[dict[str, Any]], phase: str) -> str:
    names = sorted(runs[0][phase]["cpu_s"])
    return ", ".join(f"{name} {median([r[phase]['cpu_s'][name] for r in runs]):.2f}" for name in names)


def report(
    runs: list[dict[str, Any]], counts: dict[str, int], opts: Options, problems: dict[str, int]
) -> str:
    def med(phase: str, key: str) -> float:
        return median([float(r[phase][key]) for r in runs])

    checks: Counter[str] = Counter()
    for r in runs:
        checks.update(r["messages"]["checks"])
    lines = [
        f"db_proxy tiers: db-login ({', '.join(LOGIN_ROLES)}) and db-msg ({', '.join(MESSAGE_ROLES)}) "
        "on two MariaDB databases, Redis, 2 gateways",
        f"medians of {len(runs)} run(s); CPU seconds per process during each phase (/proc); "
        f"{datetime.date.today()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
        f"first-time logins  {med('first', 'per_s'):8.1f} logins/s  ({counts['first']} users, cold "
        f"verified-password cache: scrypt log2_n={LOG2_N} each, {counts['first_in_flight']} in flight)",
        f"  cpu s: {cpu_line(runs, 'first')}",
        f"returning logins   {med('returning', 'per_s'):8.1f} logins/s  ({counts['logins']} logins, "
        f"cache hot: no scrypt, {opts.concurrency} in flight)",
        f"  cpu s: {cpu_line(runs, 'returning')}",
        f"1:1 messages       {med('messages', 'msgs_per_s'):8.1f} msgs/s    ({opts.pairs} pairs x "
        f"{opts.messages}, {opts.window} in flight each, msg-1 -> msg-2; ack p50 "
        f"{med('messages', 'ack_p50_ms'):.1f} ms, p99 {med('messages', 'ack_p99_ms'):.1f} ms)",
        f"  cpu s: {cpu_line(runs, 'messages')}",
        "",
        "checks (all runs): "
        + ", ".join(f"{key} {checks[key]}" for key in (*VIOLATIONS, *UNACKED))
        + f"; login errors {sum(r[p]['error_count'] for r in runs for p in ('first', 'returning'))}",
    ]
    errors = [e for r in runs for p in ("first", "returning") for e in r[p]["errors"]]
    if errors:
        lines.append("first login errors: " + "; ".join(errors[:5]))
    if problems:
        lines.append(f"server log warnings: {problems}")
    return "\n".join(lines)


def clean(runs: list[dict[str, Any]]) -> bool:
    bad = sum(r[p]["error_count"] for r in runs for p in ("first", "returning"))
    bad += sum(r["messages"]["checks"].get(key, 0) for r in runs for key in (*VIOLATIONS, *UNACKED))
    return bad == 0


def main(argv: Sequence[str] | None = None) -> int:
    opts, counts, out = parse_args(argv)
    # The servers (imctl run) must run this tree's code too, not an installed copy.
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    run_dir = Path(tempfile.mkdtemp(prefix="imbench-roles-"))
    started = time.monotonic()
    try:
        with split_cluster(run_dir, counts) as cluster:
            runs = uvloop.run(asyncio.wait_for(all_runs(cluster, counts, opts), opts.timeout))
    except BaseException:
        opts.keep = True  # the logs are what one needs after a failure
        raise
    finally:
        if opts.keep:
            print(f"run directory (server logs) kept: {run_dir}", file=sys.stderr)
    text = report(runs, counts, opts, log_problems(run_dir))
    if not opts.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    text += f"\n(total {time.monotonic() - started:.1f} s)"
    print(text)
    if out is not None:
        out.write_text(text + "\n")
    return 0 if clean(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
