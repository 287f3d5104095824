"""What the benchmark runs against and its set-up: the cluster and the echo baseline as
targets, the open-files limit, the database, the benchmark users and the servers' logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.settings import BENCH_LOG2_N, HOST, PASSWORD_MD5, Options
from benchmarks.wire import http_get_json
from db_proxy.passwords import hash_password
from db_proxy.storage import open_store
from imctl.cluster import LocalCluster, _die_with_parent

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"


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


def check_alive(cluster: LocalCluster, echo: EchoProcess) -> None:
    dead = [s.name for s in cluster.dead()]
    if echo.process is not None and echo.process.poll() is not None:
        dead.append("echo")
    if dead:
        raise RuntimeError(f"server process(es) died during the benchmark: {', '.join(dead)}")


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


@contextlib.contextmanager
def database(opts: Options, run_dir: Path) -> Iterator[tuple[str, str | None]]:
    if opts.engine == "sqlite":
        yield f"sqlite:///{run_dir / 'im.db'}", None
        return
    from tests.support.databases import fresh_mysql_url

    with fresh_mysql_url() as url:
        yield url, REDIS_URL


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
