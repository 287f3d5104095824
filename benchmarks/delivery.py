"""Delivery benchmark: acknowledged pushes from the delivery log next to fire-and-forget.

    python benchmarks/delivery.py [--pairs N] [--rate R] [--seconds S] [--repeat K]
        [--backends memory,redis,nats] [--baseline COMMIT] [--fault none|stop-route|kill-route]
        [--engine sqlite|mysql] [--json FILE] [--quick] [--keep]

Per repetition it runs one cluster per delivery path, one after the other, each
fresh (two route servers, one db_proxy, a login_server, gateways msg-1 and
msg-2) on its own database:

* ``baseline``: the code at ``--baseline`` (default 403b846, the parent of the
  issue 8 contract: pushes are fire-and-forget after the commit), run from a
  temporary ``git worktree`` of that commit (its servers get PYTHONPATH=that
  worktree, and run in a neutral directory so ``python -m`` does not pick up
  this checkout);
* one per ``--backends`` entry: this checkout, with ``db_proxy.delivery_log``
  set to ``memory://``, a Redis stream prefix of its own, or a JetStream stream
  of its own (removed afterwards).

N senders on msg-1 each send R messages/s (open loop, at fixed times) for S
seconds to their receiver on msg-2; each sender is also logged in on msg-2 as a
phone, which is pushed every message too (``--no-own-phone``: not). Measured by the client: **push after ack**
(the receiver's push minus the sender's ack, one monotonic clock), send to
push, acked messages never pushed (**missing**), pushes received twice, pushes
out of msg_id order. Read from every server's /metrics after the run:
redeliveries, retries, duplicates the gateways dropped, gaps they filled from
storage, and every ``*dropped*`` counter by reason. ``--fault stop-route``
freezes route-1 (SIGSTOP) for ``--fault-seconds`` from a third of the run;
``kill-route`` kills it (SIGKILL, not restarted).

The table shows medians over the repetitions, and each path's p50/p99 and
missing count as a ratio to the baseline's. Exit status 1 if a new-path run
missed, duplicated or reordered a push (the baseline's losses are its figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.measure import median, percentile  # noqa: E402
from benchmarks.settings import HOST, LOGIN_TIMEOUT, ONE_ADDRESS_NO_LIMITS, PASSWORD_MD5  # noqa: E402
from benchmarks.wire import BenchConn, Reply, connect_and_login, login_body  # noqa: E402
from common.commands import Cmd  # noqa: E402
from common.delivery import delete_delivery_log  # noqa: E402
from common.pb import base_pb2, login_pb2, message_pb2  # noqa: E402
from imctl.cluster import LocalCluster, write_secret_file  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"
NATS = "nats://127.0.0.1:4222"
BASELINE = "403b846"
BODY_SIZE = 64
DRAIN_TIMEOUT = 12.0  # after the last send: db_proxy gives a recipient up after push_give_up (10 s)
DUPLICATE_GRACE = 0.5  # and this long once everything arrived, for late duplicates
ACK_TIMEOUT = 15.0
MAX_IN_FLIGHT = 48  # below the gateway's max_pending_requests (64): an open loop must not pause it
KINDS = ("route", "db", "login", "msg")

# Figures read from /metrics: (column, metric name without _total, label filter).
METRICS = {
    "delivered": ("imcluster_push_delivered", ""),
    "redelivered": ("imcluster_push_redelivered", ""),
    "retries": ("imcluster_push_retries", ""),
    "dups_dropped": ("imcluster_gateway_pushes_dropped", 'reason="duplicate"'),
    "gaps_filled": ("imcluster_gateway_gaps_filled", ""),
}


@dataclass
class Options:
    pairs: int = 8
    rate: float = 25.0
    seconds: float = 10.0
    repeat: int = 3
    backends: tuple[str, ...] = ("memory", "redis", "nats")
    baseline: str = BASELINE
    routes: int = 2
    fault: str = "none"
    fault_seconds: float = 5.0
    own_phone: bool = True
    engine: str = "sqlite"
    timeout: float = 1800.0
    json_path: Path | None = None
    keep: bool = False


# -- the traffic ------------------------------------------------------------------------


class Flow:
    """One sender (msg-1), its receiver and the sender's own phone (both on msg-2), and what
    happened to each message at each recipient connection."""

    def __init__(self, index: int, count: int, recipients: Sequence[str]) -> None:
        self.index = index
        self.sender: BenchConn | None = None
        self.receiver: BenchConn | None = None
        self.conns: list[BenchConn] = []
        self.sent_ns = [0] * count
        self.ack_ns = [0] * count
        self.ack_id = [0] * count
        # per recipient connection: (seq, msg_id, arrival ns), in arrival order
        self.pushes: dict[str, list[tuple[int, int, int]]] = {name: [] for name in recipients}
        self.in_flight = 0
        self.sent = 0
        self.skipped = 0  # sends not made: MAX_IN_FLIGHT unacked (the cluster fell far behind)

    def on_push(self, recipient: str, command: int, body: bytes) -> None:
        if command != Cmd.MSG_DATA:
            return
        now = time.perf_counter_ns()
        msg = message_pb2.IMMsgData()
        msg.ParseFromString(body)
        head = msg.msg_data.split(b":", 2)
        with contextlib.suppress(ValueError, IndexError):
            if int(head[0]) == self.index:
                self.pushes[recipient].append((int(head[1]), msg.msg_id, now))

    def _on_ack(self, seq: int, command: int, body: bytes) -> None:
        self.in_flight -= 1
        if command == Cmd.MSG_DATA_ACK:
            ack = message_pb2.IMMsgDataAck()
            ack.ParseFromString(body)
            self.ack_id[seq] = ack.msg_id
            self.ack_ns[seq] = time.perf_counter_ns()

    async def send_at_rate(self, rate: float, started: float) -> None:
        conn, receiver = self.sender, self.receiver
        assert conn is not None and receiver is not None
        loop = asyncio.get_running_loop()
        pad = b"x" * BODY_SIZE
        for seq in range(len(self.sent_ns)):
            delay = started + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.in_flight >= MAX_IN_FLIGHT:
                self.skipped += 1
                continue
            head = b"%d:%d:" % (self.index, seq)
            body = message_pb2.IMMsgData(
                from_user_id=conn.user_id,
                to_session_id=receiver.user_id,
                msg_id=seq + 1,  # the client's own id, as TeamTalk clients send one
                create_time=0,
                msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
                msg_data=head + pad[len(head) :],
            ).SerializeToString()
            self.sent_ns[seq] = time.perf_counter_ns()
            self.in_flight += 1
            self.sent += 1
            conn.request(Cmd.MSG_DATA, body, functools.partial(self._on_ack, seq))

    def acked(self) -> set[int]:
        return {seq for seq, msg_id in enumerate(self.ack_id) if msg_id}

    def waiting(self) -> bool:
        """Some acked message has not reached some recipient connection yet."""
        acked = self.acked()
        return any(acked - {seq for seq, _, _ in pushes} for pushes in self.pushes.values())

    def check(self) -> dict[str, int]:
        acked = self.acked()
        result = {"sent": self.sent, "skipped": self.skipped, "acked": len(acked)}
        totals: Counter[str] = Counter()
        for pushes in self.pushes.values():
            copies = Counter(seq for seq, _, _ in pushes)
            ids = [msg_id for _, msg_id, _ in pushes]
            totals["expected_pushes"] += len(acked)
            totals["missing"] += len(acked - copies.keys())
            totals["received_twice"] += sum(n - 1 for n in copies.values())
            totals["out_of_order"] += sum(1 for a, b in itertools.pairwise(ids) if b <= a)
        return {**result, **totals}


async def phone_login(port: int, name: str, on_push: Reply) -> BenchConn:
    """A second, mobile session of ``name`` (TeamTalk's policy: one desktop and one mobile)."""
    conn = BenchConn(on_push)
    await asyncio.get_running_loop().create_connection(lambda: conn, HOST, port)
    command, body = await conn.call(
        Cmd.LOGIN_REQ, login_body(name, PASSWORD_MD5, base_pb2.CLIENT_TYPE_ANDROID), LOGIN_TIMEOUT
    )
    res = login_pb2.IMLoginRes()
    if command == Cmd.LOGIN_RES:
        res.ParseFromString(body)
    if command != Cmd.LOGIN_RES or res.result_code != 0:
        conn.close()
        raise RuntimeError(f"mobile login of {name} failed (command 0x{command:04x}, {res.result_code})")
    return conn


async def drive(cluster: LocalCluster, opts: Options, fault: str) -> dict[str, Any]:
    """Log the flows in, send for ``opts.seconds``, drain, and measure."""
    msg1 = int(str(cluster.by_name("msg-1").info["port"]))
    msg2 = int(str(cluster.by_name("msg-2").info["port"]))
    count = max(1, round(opts.rate * opts.seconds))
    recipients = ("receiver", "own_phone") if opts.own_phone else ("receiver",)
    flows = [Flow(i, count, recipients) for i in range(opts.pairs)]
    try:
        for flow in flows:
            sender, receiver = f"send{flow.index}", f"recv{flow.index}"
            flow.sender = await connect_and_login(HOST, msg1, sender, PASSWORD_MD5, LOGIN_TIMEOUT)
            flow.receiver = await connect_and_login(
                HOST, msg2, receiver, PASSWORD_MD5, LOGIN_TIMEOUT, functools.partial(flow.on_push, "receiver")
            )
            flow.conns += [flow.sender, flow.receiver]
            if opts.own_phone:  # the sender's other device: pushed to as well (not the sending one)
                on_phone = functools.partial(flow.on_push, "own_phone")
                flow.conns.append(await phone_login(msg2, sender, on_phone))
        await asyncio.sleep(1.0)  # the sessions reach both route servers
        await routes_settled(cluster)
        loop = asyncio.get_running_loop()
        started = loop.time() + 0.1
        injector = asyncio.create_task(inject(cluster, fault, started, opts))
        await asyncio.gather(*(f.send_at_rate(opts.rate, started) for f in flows))
        deadline = time.monotonic() + ACK_TIMEOUT
        while time.monotonic() < deadline and any(f.in_flight for f in flows):
            await asyncio.sleep(0.02)
        await injector
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline and any(f.waiting() for f in flows):
            await asyncio.sleep(0.02)
        await asyncio.sleep(DUPLICATE_GRACE)
    finally:
        for flow in flows:
            for conn in flow.conns:
                conn.close()
    checks: Counter[str] = Counter()
    after_ack: list[float] = []
    send_to_push: list[float] = []
    for flow in flows:
        checks.update(flow.check())
        for pushes in flow.pushes.values():
            first: dict[int, int] = {}
            for seq, _, arrived in pushes:
                first.setdefault(seq, arrived)
            for seq, arrived in first.items():
                if flow.ack_id[seq]:
                    after_ack.append((arrived - flow.ack_ns[seq]) / 1e6)
                    send_to_push.append((arrived - flow.sent_ns[seq]) / 1e6)
    after_ack.sort()
    send_to_push.sort()
    ack = sorted((f.ack_ns[i] - f.sent_ns[i]) / 1e6 for f in flows for i, got in enumerate(f.ack_id) if got)
    return {
        **dict(checks),
        "ack_p50_ms": percentile(ack, 50),
        "ack_p99_ms": percentile(ack, 99),
        "push_after_ack_p50_ms": percentile(after_ack, 50),
        "push_after_ack_p99_ms": percentile(after_ack, 99),
        "send_to_push_p50_ms": percentile(send_to_push, 50),
        "send_to_push_p99_ms": percentile(send_to_push, 99),
    }


async def inject(cluster: LocalCluster, fault: str, started: float, opts: Options) -> None:
    if fault == "none":
        return
    process = cluster.by_name("route-1").process
    assert process is not None
    await asyncio.sleep(max(0.0, started + opts.seconds / 3 - asyncio.get_running_loop().time()))
    if fault == "kill-route":
        process.kill()
        return
    process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(opts.fault_seconds)
    finally:
        process.send_signal(signal.SIGCONT)


# -- the servers' counters ---------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$")


async def scrape(port: int) -> dict[str, float]:
    """/metrics of one server as {name{labels}: value}; {} if it does not answer."""
    try:
        async with asyncio.timeout(5.0):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            raw = await reader.read(-1)
            writer.close()
    except (OSError, TimeoutError):
        return {}
    samples = {}
    for line in raw.partition(b"\r\n\r\n")[2].decode(errors="replace").splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            name, labels, value = match.groups()
            with contextlib.suppress(ValueError):
                samples[name + (labels or "")] = float(value)
    return samples


async def routes_settled(cluster: LocalCluster, timeout: float = 15.0) -> None:
    """Until every route server says it serves pushes (``imcluster_route_ready`` 1; a route server
    without that gauge, the baseline's, is taken as ready): a steady state, not a start-up."""
    deadline = time.monotonic() + timeout
    for server in cluster.servers:
        port = server.info.get("metrics_port")
        if server.kind != "route" or not isinstance(port, int):
            continue
        while time.monotonic() < deadline:
            ready = (await scrape(port)).get("imcluster_route_ready")
            if ready is None or ready >= 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"{server.name} still settling after {timeout:.0f} s")


async def counters(cluster: LocalCluster) -> dict[str, float]:
    """The delivery figures and every ``*dropped*`` counter, summed over the servers."""
    total: Counter[str] = Counter()
    for server in cluster.servers:
        port = server.info.get("metrics_port")
        if server.process is not None and server.process.poll() is None and isinstance(port, int):
            total.update(await scrape(port))
    figures: dict[str, float] = {}
    for column, (name, label) in METRICS.items():
        found = [v for k, v in total.items() if re.match(rf"{name}(_total)?(\{{|$)", k) and label in k]
        family = any(re.match(rf"{name}(_total)?(\{{|$)", k) for k in total)
        # The gateway of the new path has the duplicate counter even when it has not counted yet.
        family = family or (column == "dups_dropped" and any("gateway_gaps_filled" in k for k in total))
        figures[column] = sum(found) if found else 0.0 if family else float("nan")  # a label not seen yet: 0
    for key, value in total.items():
        counted = "gateway_pushes_dropped" in key and 'reason="duplicate"' in key  # dups_dropped
        if "dropped" in key and "_created" not in key and value and not counted:
            figures[f"dropped:{key}"] = value
    return figures


# -- the clusters ------------------------------------------------------------------------


@dataclass
class Path_:
    """One delivery path: its code (PYTHONPATH) and its db_proxy settings."""

    name: str
    code: Path
    db: dict[str, str] = field(default_factory=dict)


def log_url(backend: str, tag: str) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "redis":
        return f"{REDIS}?prefix=imbench:{tag}"
    if backend == "nats":
        return f"{NATS}?stream=IMBENCH_{tag}&subject_prefix=imbench.{tag}"
    raise SystemExit(f"unknown backend {backend!r} (memory, redis, nats)")


def run_python(code: Path, cwd: Path, script: str, *args: str) -> None:
    """``script`` in a child with that code first on its path (users, schema of that version)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env, check=True, timeout=120)


CREATE_USERS = """
import asyncio, sys
from benchmarks.servers import create_users
asyncio.run(create_users(sys.argv[1], sys.argv[2:]))
"""


@contextlib.contextmanager
def database(opts: Options, run_dir: Path) -> Iterator[str]:
    if opts.engine == "sqlite":
        yield f"sqlite:///{run_dir / 'im.db'}"
        return
    from tests.support.databases import fresh_mysql_url

    with fresh_mysql_url() as url:
        yield url


def one_cluster(path: Path_, opts: Options, run_dir: Path) -> dict[str, Any]:
    run_dir.mkdir(parents=True)
    names = [n for i in range(opts.pairs) for n in (f"send{i}", f"recv{i}")]
    with database(opts, run_dir) as db_url:
        run_python(path.code, run_dir, CREATE_USERS, db_url, *names)
        env = {"PYTHONPATH": str(path.code)}
        cluster = LocalCluster(
            run_dir,
            None,
            gateways=2,
            base_port=0,
            routes=opts.routes,
            database_url=db_url,
            redis_url=REDIS if opts.engine == "mysql" else None,
            # The baseline's gateways predate the rate limits and would refuse their settings.
            extra={
                **({"msg": ONE_ADDRESS_NO_LIMITS} if path.code == ROOT else {}),
                **({"db": path.db} if path.db else {}),
            },
            environ={kind: env for kind in KINDS},
            secret_file=write_secret_file(run_dir / "cluster.secret"),
            files=False,  # file transfer is not what this measures
        )
        try:
            cluster.start()
            result: dict[str, Any] = uvloop.run(drive(cluster, opts, opts.fault))
            result.update(uvloop.run(counters(cluster)))
            result["died"] = [
                s.name for s in cluster.dead() if not (opts.fault == "kill-route" and s.name == "route-1")
            ]
        finally:
            cluster.stop()
            url = path.db.get("delivery_log", "memory://")
            with contextlib.suppress(Exception):
                uvloop.run(delete_delivery_log(url))
    return result


@contextlib.contextmanager
def baseline_tree(commit: str, parent: Path) -> Iterator[Path]:
    """A temporary ``git worktree`` of ``commit``, removed afterwards."""
    tree = parent / f"baseline-{commit}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
            timeout=60,
        )


# -- the report --------------------------------------------------------------------------

COLUMNS = (
    ("acked", "acked", "{:.0f}"),
    ("expected_pushes", "pushes due", "{:.0f}"),
    ("ack_p50_ms", "ack p50 ms", "{:.1f}"),
    ("ack_p99_ms", "p99", "{:.1f}"),
    ("push_after_ack_p50_ms", "push-ack p50 ms", "{:.1f}"),
    ("push_after_ack_p99_ms", "p99 ms", "{:.1f}"),
    ("send_to_push_p50_ms", "send-push p50", "{:.1f}"),
    ("send_to_push_p99_ms", "p99", "{:.1f}"),
    ("missing", "missing", "{:.0f}"),
    ("received_twice", "twice", "{:.0f}"),
    ("out_of_order", "reordered", "{:.0f}"),
    ("redelivered", "redelivered", "{:.0f}"),
    ("retries", "retries", "{:.0f}"),
    ("dups_dropped", "dups dropped", "{:.0f}"),
    ("gaps_filled", "gaps filled", "{:.0f}"),
)
# Push after ack is about 0 on the baseline (push and ack leave db_proxy together): no ratio of it.
RATIOS = ("ack_p99_ms", "send_to_push_p50_ms", "send_to_push_p99_ms", "missing")


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        keys = {k for r in results for k, v in r.items() if isinstance(v, int | float)}
        summary[name] = {k: median([float(r.get(k, 0.0)) for r in results]) for k in sorted(keys)}
    return summary


def report(opts: Options, summary: dict[str, dict[str, float]]) -> str:
    def cell(value: float, fmt: str) -> str:
        return "-" if value != value else fmt.format(value)

    head = ["path", *(title for _, title, _ in COLUMNS)]
    rows = [head]
    for name, figures in summary.items():
        rows.append([name, *(cell(figures.get(key, float("nan")), fmt) for key, _, fmt in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        f"{opts.pairs} pairs x {opts.rate:g} msg/s for {opts.seconds:g} s, {opts.routes} route servers, "
        f"{opts.engine}, fault {opts.fault}; medians of {opts.repeat} run(s)",
        "",
        *(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ),
    ]
    base = summary.get("baseline")
    if base is not None:
        lines += ["", "ratio to baseline (ack p99; send to push p50, p99; missing):"]
        for name, figures in summary.items():
            if name != "baseline":
                ratios = [
                    figures.get(k, float("nan")) / base[k] if base.get(k) else float("nan") for k in RATIOS
                ]
                lines.append(f"  {name}: " + " / ".join(cell(r, "{:.2f}") for r in ratios))
    drops = sorted({k for figures in summary.values() for k in figures if k.startswith("dropped:")})
    if drops:
        lines += ["", "dropped (medians):"]
        for key in drops:
            values = ", ".join(f"{n} {cell(f.get(key, 0.0), '{:.0f}')}" for n, f in summary.items())
            lines.append(f"  {key.removeprefix('dropped:')}: {values}")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--pairs", type=int, default=8, help="sender/receiver pairs (default 8)")
    p.add_argument("--rate", type=float, default=25.0, help="messages per second per sender (default 25)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of sending per run (default 10)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each path; the table shows medians")
    p.add_argument("--backends", default="memory,redis,nats", help="delivery logs of the new path ('' none)")
    p.add_argument("--baseline", default=BASELINE, help="commit of the fire-and-forget path ('' none)")
    p.add_argument("--routes", type=int, default=2, help="route servers (default 2)")
    p.add_argument("--fault", choices=("none", "stop-route", "kill-route"), default="none")
    p.add_argument("--fault-seconds", type=float, default=5.0, help="how long stop-route freezes route-1")
    p.add_argument(
        "--no-own-phone", dest="own_phone", action="store_false", help="no second device of the senders"
    )
    p.add_argument("--engine", choices=("sqlite", "mysql"), default="sqlite")
    p.add_argument("--timeout", type=float, default=1800.0, help="limit for the whole run (default 1800 s)")
    p.add_argument("--json", type=Path, dest="json_path", help="also write every figure as JSON here")
    p.add_argument("--quick", action="store_true", help="4 pairs x 20 msg/s for 3 s, one run")
    p.add_argument("--keep", action="store_true", help="keep the run directory (server logs)")
    a = p.parse_args(argv)
    o = Options(
        pairs=a.pairs,
        rate=a.rate,
        seconds=a.seconds,
        repeat=a.repeat,
        backends=tuple(b for b in a.backends.split(",") if b),
        baseline=a.baseline,
        routes=a.routes,
        fault=a.fault,
        fault_seconds=a.fault_seconds,
        own_phone=a.own_phone,
        engine=a.engine,
        timeout=a.timeout,
        json_path=a.json_path.resolve() if a.json_path else None,
        keep=a.keep,
    )
    if a.quick:
        o.pairs, o.rate, o.seconds, o.repeat = 4, 20.0, 3.0, 1
    if o.pairs < 1 or o.rate <= 0 or o.seconds <= 0 or o.repeat < 1 or o.routes < 1:
        p.error("--pairs, --rate, --seconds, --repeat and --routes must be positive")
    for backend in o.backends:
        log_url(backend, "x")
    return o


def run(opts: Options) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]]]:
    deadline = time.monotonic() + opts.timeout
    work = Path(tempfile.mkdtemp(prefix="imbench-delivery-"))
    os.chdir(work)  # `python -m imctl` puts the working directory first on the servers' path
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        with contextlib.ExitStack() as stack:
            paths = []
            if opts.baseline:
                paths.append(Path_("baseline", stack.enter_context(baseline_tree(opts.baseline, work))))
            for backend in opts.backends:
                paths.append(Path_(backend, ROOT, {"delivery_log": ""}))
            for rep in range(opts.repeat):
                for path in paths:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    if "delivery_log" in path.db:
                        path.db["delivery_log"] = log_url(path.name, secrets.token_hex(4))
                    print(f"  .. run {rep + 1}/{opts.repeat}: {path.name}", file=sys.stderr, flush=True)
                    result = one_cluster(path, opts, work / f"run{rep + 1}-{path.name}")
                    runs.setdefault(path.name, []).append(result)
    except BaseException:
        opts.keep = True
        raise
    finally:
        os.chdir(ROOT)
        if opts.keep:
            print(f"run directory (server logs) kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return runs, summarize(runs)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        runs, summary = run(opts)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"benchmark exceeded its {opts.timeout:.0f} s limit; servers stopped", file=sys.stderr)
        return 2
    print(report(opts, summary))
    print(
        f"(total {time.monotonic() - started:.1f} s, {datetime.datetime.now().isoformat(timespec='seconds')})"
    )
    if opts.json_path is not None:
        document = {"options": {k: str(v) for k, v in vars(opts).items()}, "runs": runs, "summary": summary}
        opts.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    bad = [
        f"{name}: {key} {value}"
        for name, results in runs.items()
        if name != "baseline"
        for r in results
        for key, value in r.items()
        if key in ("missing", "received_twice", "out_of_order", "died") and value
    ]
    for line in bad:
        print(f"VIOLATION {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
