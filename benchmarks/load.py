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
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.wire import CLOSED, BenchConn, connect_and_login, http_get_json  # noqa: E402
from common.commands import Cmd  # noqa: E402
from common.pb import base_pb2, message_pb2  # noqa: E402
from db_proxy.passwords import hash_password, md5_hex  # noqa: E402
from db_proxy.storage import open_store  # noqa: E402
from imctl.cluster import LocalCluster, _die_with_parent  # noqa: E402

HOST = "127.0.0.1"
PASSWORD_MD5 = md5_hex("bench-password")
BENCH_LOG2_N = 4  # cheap scrypt for thousands of benchmark users; load tests only
REDIS_URL = "redis://127.0.0.1:6379/0"
BODY_SIZE = 64  # bytes of msg_data; TeamTalk clients send base64 of AES, a few dozen bytes for a line
LOGIN_TIMEOUT = 15.0
STALL_TIMEOUT = 15.0  # a sender with no ack for this long gives up (the gateway's own limit is 10 s)
DRAIN_TIMEOUT = 10.0  # after the last ack, wait this long at most for outstanding deliveries
DUPLICATE_GRACE = 0.5  # and this long after everything arrived, to catch late duplicates
HEARTBEAT_INTERVAL = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- small helpers ---------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
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


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


# -- options ----------------------------------------------------------------------------------


@dataclass
class Options:
    engine: str = "sqlite"
    idle: int = 5000
    discovery: int = 2000
    pairs: int = 50
    messages: int = 200
    window: int = 8
    repeat: int = 3
    concurrency: int = 200
    timeout: float = 300.0
    json_path: Path | None = None
    quick: bool = False
    keep: bool = False


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


# -- users ------------------------------------------------------------------------------------


def idle_names(n: int) -> list[str]:
    return [f"idle{i}" for i in range(n)]


def pair_names(p: int) -> list[tuple[str, str]]:
    return [(f"send{i}", f"recv{i}") for i in range(p)]


async def create_users(database_url: str, names: list[str]) -> float:
    """Create the users directly in the store, 32 at a time; returns seconds taken."""
    started = time.monotonic()
    store = open_store(database_url)
    await store.open()
    try:
        await store.migrate()
        hashed = hash_password(PASSWORD_MD5, log2_n=BENCH_LOG2_N)  # one salt for all: load test only
        pending = iter(names)

        async def worker() -> None:
            for name in pending:
                await store.create_user(name, hashed)

        await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        await store.close()
    return time.monotonic() - started


# -- the two targets: the cluster and the echo baseline ---------------------------------------


@dataclass
class Target:
    name: str  # "cluster" or "echo"
    idle_port: int
    sender_port: int
    receiver_port: int
    idle_pid: int  # the process whose RSS per connection is measured
    pids: dict[str, int]  # every server process, for CPU accounting
    settled: Callable[[int], Awaitable[bool]]  # wait until the idle gateway holds that many connections
    http_port: int = 0  # login_server's discovery port (cluster only)


def cluster_target(cluster: LocalCluster) -> Target:
    http_port = int(str(cluster.by_name("login-1").info["http_port"]))
    pids = {s.name: s.process.pid for s in cluster.servers if s.process is not None}

    async def settled(count: int) -> bool:
        """Until login_server hears from msg-1 that it holds ``count`` logged-in clients."""
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            rows = await http_get_json(HOST, http_port, "/gateways", 5.0)
            if any(r["node_id"] == "msg-1" and r["connections"] == count for r in rows):
                return True
            await asyncio.sleep(0.1)
        return False

    return Target(
        name="cluster",
        idle_port=int(str(cluster.by_name("msg-1").info["port"])),
        sender_port=int(str(cluster.by_name("msg-1").info["port"])),
        receiver_port=int(str(cluster.by_name("msg-2").info["port"])),
        idle_pid=pids["msg-1"],
        pids=pids,
        settled=settled,
        http_port=http_port,
    )


class EchoProcess:
    def __init__(self, run_dir: Path) -> None:
        self.ready = run_dir / "echo.ready"
        self.log = run_dir / "echo.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 15.0) -> None:
        path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.echo_server", str(self.ready)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.ready.exists():
                self.port = int(json.loads(self.ready.read_text())["port"])
                return
            time.sleep(0.05)
        raise RuntimeError(f"echo server did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def target(self) -> Target:
        assert self.process is not None

        async def settled(count: int) -> bool:
            await asyncio.sleep(0.5)  # no load report to ask; closes are seen within a loop turn
            return True

        pid = self.process.pid
        return Target("echo", self.port, self.port, self.port, pid, {"echo": pid}, settled)


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


# -- phase 1: idle connections and login rate ---------------------------------------------------


async def login_many(
    names: Sequence[str],
    concurrency: int,
    address: Callable[[str], Awaitable[tuple[str, int]]],
) -> tuple[list[BenchConn], list[str], float]:
    """Log every name in, ``concurrency`` at a time; (connections, errors, seconds)."""
    conns: list[BenchConn] = []
    errors: list[str] = []
    todo = iter(names)

    async def worker() -> None:
        for name in todo:
            try:
                host, port = await address(name)
                conns.append(await connect_and_login(host, port, name, PASSWORD_MD5, LOGIN_TIMEOUT))
            except Exception as exc:  # counted and reported; the run goes on
                errors.append(f"{name}: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(names)))))
    return conns, errors, time.perf_counter() - started


async def heartbeats(conns: list[BenchConn]) -> None:
    """Keep idle connections alive the way a TeamTalk client does (every 30 s)."""
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        for conn in conns:
            conn.send(Cmd.HEARTBEAT, b"", conn.next_seq())


async def close_all(conns: list[BenchConn]) -> None:
    for conn in conns:
        conn.close()
    await asyncio.sleep(0)  # let the transports run their close callbacks


async def idle_phase(target: Target, names: list[str], opts: Options, baseline_conns: int) -> dict[str, Any]:
    await asyncio.sleep(0.5)
    before = rss_bytes(target.idle_pid)
    others_before = {name: rss_bytes(pid) for name, pid in target.pids.items()}

    async def direct(_name: str) -> tuple[str, int]:
        return HOST, target.idle_port

    cpu_before = cpu_snapshot(target)
    conns, errors, seconds = await login_many(names, opts.concurrency, direct)
    cpu = cpu_percent(cpu_before, cpu_snapshot(target), seconds)
    beat = asyncio.create_task(heartbeats(conns))
    try:
        settled = await target.settled(baseline_conns + len(conns))
        await asyncio.sleep(1.0)  # let allocations from the login burst settle
        after = rss_bytes(target.idle_pid)
        others_after = {name: rss_bytes(pid) for name, pid in target.pids.items()}
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        await close_all(conns)
    drained = await target.settled(baseline_conns)
    return {
        "connections": len(conns),
        "login_errors": len(errors),
        "first_errors": errors[:3],
        "login_seconds": seconds,
        "logins_per_s": len(conns) / seconds if seconds > 0 else float("nan"),
        "rss_before": before,
        "rss_after": after,
        "rss_per_conn": (after - before) / len(conns) if conns else float("nan"),
        "rss_delta_by_process": {name: others_after[name] - others_before[name] for name in others_after},
        "cpu_percent": cpu,
        "load_report_matched": settled,
        "drained": drained,
    }


async def discovery_phase(
    target: Target, names: list[str], opts: Options, baseline_conns: int
) -> dict[str, Any]:
    """GET /msg_server, then TCP login to the gateway it names: what a desktop client does."""
    gateways: Counter[int] = Counter()

    async def discover(_name: str) -> tuple[str, int]:
        reply = await http_get_json(HOST, target.http_port, "/msg_server", LOGIN_TIMEOUT)
        if reply.get("code") != 0:
            raise ValueError(f"discovery answered {reply}")
        if reply["priorIP"] != HOST:
            raise ValueError(f"discovery named {reply['priorIP']}; this benchmark only talks to {HOST}")
        port = int(reply["port"])
        gateways[port] += 1
        return reply["priorIP"], port

    cpu_before = cpu_snapshot(target)
    conns, errors, seconds = await login_many(names, opts.concurrency, discover)
    cpu = cpu_percent(cpu_before, cpu_snapshot(target), seconds)
    await close_all(conns)
    drained = await target.settled(baseline_conns)
    return {
        "logins": len(conns),
        "login_errors": len(errors),
        "first_errors": errors[:3],
        "seconds": seconds,
        "logins_per_s": len(conns) / seconds if seconds > 0 else float("nan"),
        "by_gateway_port": {str(port): count for port, count in sorted(gateways.items())},
        "cpu_percent": cpu,
        "drained": drained,
    }


# -- phase 2: 1:1 messages across two gateways ------------------------------------------------------


class Stalled(Exception):
    pass


class Pair:
    """One sender (on msg-1) and one receiver (on msg-2) and what happened to each message."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.sender: BenchConn | None = None
        self.receiver: BenchConn | None = None
        self.rep = -1
        self.reset(-1, 0)

    def reset(self, rep: int, messages: int) -> None:
        self.rep = rep
        self.sent = 0
        self.sent_ns = [0] * messages
        self.ack_id = [0] * messages
        self.ack_ns = [0] * messages
        self.deliveries: list[tuple[int, int, int]] = []  # (seq, msg_id, latency ns) in arrival order
        self.inflight = 0
        self.wake: asyncio.Future[None] | None = None
        self.stalled = False
        self.bad_replies = 0  # a reply to a message that is not an ack (or the connection closed)
        self.foreign = 0  # deliveries of messages this pair did not send in this repetition
        self.sender_copies = 0  # the sending connection got its own message pushed back

    # callbacks from the connections

    def on_sender_push(self, command: int, body: bytes) -> None:
        if command == Cmd.MSG_DATA:
            self.sender_copies += 1

    def on_receiver_push(self, command: int, body: bytes) -> None:
        if command != Cmd.MSG_DATA:
            return  # presence and the like
        now = time.perf_counter_ns()
        msg = message_pb2.IMMsgData()
        msg.ParseFromString(body)
        parts = msg.msg_data.split(b":", 4)
        try:
            rep, index, seq, sent = int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])
        except (ValueError, IndexError):
            self.foreign += 1
            return
        sender = self.sender.user_id if self.sender is not None else 0
        if rep != self.rep or index != self.index or msg.from_user_id != sender or seq >= len(self.ack_id):
            self.foreign += 1
            return
        self.deliveries.append((seq, msg.msg_id, now - sent))

    def _on_ack(self, seq: int, command: int, body: bytes) -> None:
        self.inflight -= 1
        if command == Cmd.MSG_DATA_ACK:
            ack = message_pb2.IMMsgDataAck()
            ack.ParseFromString(body)
            self.ack_id[seq] = ack.msg_id
            self.ack_ns[seq] = time.perf_counter_ns()
        else:
            self.bad_replies += 1
            if command == CLOSED:
                self.stalled = True
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    # the sender

    async def _wait_for_ack(self) -> None:
        self.wake = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self.wake, STALL_TIMEOUT)
        except TimeoutError:
            self.stalled = True
            raise Stalled from None

    async def send_all(self, messages: int, window: int) -> None:
        conn, receiver = self.sender, self.receiver
        assert conn is not None and receiver is not None
        to_user = receiver.user_id
        pad = b"x" * BODY_SIZE
        text = base_pb2.MSG_TYPE_SINGLE_TEXT
        try:
            for seq in range(messages):
                while self.inflight >= window:
                    await self._wait_for_ack()
                if self.stalled:
                    return
                sent = time.perf_counter_ns()
                head = b"%d:%d:%d:%d:" % (self.rep, self.index, seq, sent)
                body = message_pb2.IMMsgData(
                    from_user_id=conn.user_id,
                    to_session_id=to_user,
                    msg_id=seq + 1,  # the client's own id, as TeamTalk clients send one
                    create_time=0,
                    msg_type=text,
                    msg_data=head + pad[: max(0, BODY_SIZE - len(head))],
                ).SerializeToString()
                self.sent_ns[seq] = sent
                self.inflight += 1
                self.sent += 1
                conn.request(Cmd.MSG_DATA, body, functools.partial(self._on_ack, seq))
            while self.inflight > 0 and not self.stalled:
                await self._wait_for_ack()
        except Stalled:
            return

    # the verdict

    def acked(self) -> int:
        return sum(1 for i in self.ack_id[: self.sent] if i)

    def delivered_seqs(self) -> int:
        return len({seq for seq, _, _ in self.deliveries})

    def check(self) -> dict[str, int]:
        sent = self.sent
        acked = {seq: msg_id for seq, msg_id in enumerate(self.ack_id[:sent]) if msg_id}
        copies = Counter(seq for seq, _, _ in self.deliveries)
        order = 0
        for (_, prev, _), (_, cur, _) in itertools.pairwise(self.deliveries):
            if cur <= prev:
                order += 1
        id_order = 0
        ids = [acked[seq] for seq in sorted(acked)]
        for prev, cur in itertools.pairwise(ids):
            if cur <= prev:
                id_order += 1
        return {
            "sent": sent,
            "acked": len(acked),
            "unacked": sent - len(acked),
            "lost": sum(1 for seq in acked if seq not in copies),
            "duplicates": sum(n - 1 for n in copies.values() if n > 1),
            "delivered_unacked": sum(1 for seq in copies if seq not in acked),
            "id_mismatch": sum(
                1 for seq, msg_id, _ in self.deliveries if seq in acked and acked[seq] != msg_id
            ),
            "delivery_order_violations": order,
            "ack_id_order_violations": id_order,
            "bad_replies": self.bad_replies,
            "foreign_deliveries": self.foreign,
            "sender_copies": self.sender_copies,
            "stalled_pairs": int(self.stalled),
        }


async def login_pairs(target: Target, pairs: list[Pair], opts: Options) -> None:
    names = pair_names(len(pairs))

    async def one(pair: Pair) -> None:
        sender, receiver = names[pair.index]
        pair.sender = await connect_and_login(
            HOST, target.sender_port, sender, PASSWORD_MD5, LOGIN_TIMEOUT, pair.on_sender_push
        )
        pair.receiver = await connect_and_login(
            HOST, target.receiver_port, receiver, PASSWORD_MD5, LOGIN_TIMEOUT, pair.on_receiver_push
        )

    semaphore = asyncio.Semaphore(opts.concurrency)

    async def bounded(pair: Pair) -> None:
        async with semaphore:
            await one(pair)

    await asyncio.gather(*(bounded(p) for p in pairs))


async def throughput_phase(target: Target, pairs: list[Pair], rep: int, opts: Options) -> dict[str, Any]:
    for pair in pairs:
        pair.reset(rep, opts.messages)
    cpu_before = cpu_snapshot(target)
    started = time.perf_counter_ns()
    await asyncio.gather(*(pair.send_all(opts.messages, opts.window) for pair in pairs))
    last_ack = max((max(p.ack_ns) for p in pairs), default=started)
    cpu_after = cpu_snapshot(target)
    # Deliveries may trail the acks: wait (bounded) for every acked message, then a little longer.
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and any(p.delivered_seqs() < p.acked() for p in pairs):
        await asyncio.sleep(0.02)
    await asyncio.sleep(DUPLICATE_GRACE)

    checks: Counter[str] = Counter()
    for pair in pairs:
        checks.update(pair.check())
    ack_lat = sorted((p.ack_ns[i] - p.sent_ns[i]) / 1e6 for p in pairs for i in range(p.sent) if p.ack_id[i])
    first_seen: dict[tuple[int, int], float] = {}
    for p in pairs:
        for seq, _, latency in p.deliveries:
            first_seen.setdefault((p.index, seq), latency / 1e6)
    delivery_lat = sorted(first_seen.values())
    wall = (last_ack - started) / 1e9
    acked = checks["acked"]
    return {
        "acked": acked,
        "seconds": wall,
        "msgs_per_s": acked / wall if wall > 0 else float("nan"),
        "ack_p50_ms": percentile(ack_lat, 50),
        "ack_p99_ms": percentile(ack_lat, 99),
        "delivery_p50_ms": percentile(delivery_lat, 50),
        "delivery_p99_ms": percentile(delivery_lat, 99),
        "checks": dict(checks),
        "cpu_percent": cpu_percent(cpu_before, cpu_after, wall),
    }


# Must be 0 whatever the load: an acked message delivered exactly once, in msg id order, ids
# increasing per conversation, and only to whom it was sent.
VIOLATIONS = (
    "lost",  # acked, never delivered
    "duplicates",  # delivered more than once
    "id_mismatch",  # delivered with another msg id than the sender's ack named
    "delivery_order_violations",  # a delivery whose msg id is not above the previous one's
    "ack_id_order_violations",  # an ack whose msg id is not above the previous message's
    "foreign_deliveries",  # the receiver got a message nobody sent it in this run
    "sender_copies",  # the sending connection got its own message pushed back
)
# 0 below saturation; under overload the gateway drops a message the store refuses, without an
# ack (the client would resend it): counted, reported, not a correctness violation.
UNACKED = (
    "unacked",  # sent, no ack within the stall timeout (15 s)
    "delivered_unacked",  # stored and delivered, but the sender never got the ack
    "bad_replies",  # a reply that was not an ack, or the connection closed under it
    "stalled_pairs",  # pairs that gave up waiting for an ack
)


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Results:
    setup: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)


def check_alive(cluster: LocalCluster, echo: EchoProcess) -> None:
    dead = [s.name for s in cluster.dead()]
    if echo.process is not None and echo.process.poll() is not None:
        dead.append("echo")
    if dead:
        raise RuntimeError(f"server process(es) died during the benchmark: {', '.join(dead)}")


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


LOG_LEVEL = re.compile(rb"^\S+ \S+ (WARNING|ERROR|CRITICAL) ")


def log_problems(run_dir: Path) -> dict[str, int]:
    """WARNING/ERROR/CRITICAL lines per server log (the gateway warns on every refused message)."""
    counts: dict[str, int] = {}
    for log in sorted(run_dir.glob("*.log")):
        n = sum(
            1
            for line in log.read_bytes().splitlines()
            if LOG_LEVEL.match(line) and b"advertise" not in line  # 127.0.0.1 is what we want here
        )
        if n:
            counts[log.stem] = n
    return counts


@contextlib.contextmanager
def database(opts: Options, run_dir: Path) -> Iterator[tuple[str, str | None]]:
    if opts.engine == "sqlite":
        yield f"sqlite:///{run_dir / 'im.db'}", None
        return
    from tests.support.databases import fresh_mysql_url

    with fresh_mysql_url() as url:
        yield url, REDIS_URL


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
                cluster = LocalCluster(
                    rep_dir, None, gateways=2, base_port=0, database_url=db_url, redis_url=redis_url
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


def no_nan(value: Any) -> Any:
    """NaN (an empty measurement) as JSON null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nan(v) for v in value]
    return value


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
