"""One client cannot hurt another: a flooder is rate-limited, a crowd of
connections that never log in does not keep a real user out.

The floods run in processes of their own (``benchmarks/flooders.py``): the
victim's latency is measured here, and must not be this process's event loop
busy writing the flood. Both run against the module's cluster at the default
limits (msg_server/config.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from common.commands import Cmd
from common.pb import buddy_pb2
from db_proxy.passwords import md5_hex
from tests.e2e.conftest import PASSWORD, Cluster
from tests.support.ttclient import TTClient

# Floods of connections and frames, with the victims' latency timed: alone on the machine.
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIMITS = True  # the module's cluster runs msg_server's default limits (see conftest)
SAMPLES = 150  # x3 + the warm-up and waits stay within request_burst (500): the victim is not limited
ROUNDS = 2  # of SAMPLES while flooded, the first that holds counts
FLOOR = 0.005  # s: idle p99 on loopback is ~1 ms, where scheduler noise alone doubles it


def metric(cluster: Cluster, server: str, name: str) -> float:
    port = cluster.local.by_name(server).info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


@asynccontextmanager
async def flooder(*args: str) -> AsyncIterator[asyncio.Future[dict[str, Any]]]:
    """A flooder process, flooding once this yields; the future: its report."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.flooders", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready", line + await proc.stderr.read()
        report: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(_report(proc))
        yield report
        await asyncio.wait_for(report, 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _report(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def latencies(client: TTClient, peer: int, count: int = SAMPLES) -> list[float]:
    req = buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[peer])
    out = []
    for _ in range(count):
        t = time.perf_counter()
        await client.call(Cmd.USERS_INFO_REQ, req, timeout=10)
        out.append(time.perf_counter() - t)
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_a_flooding_connection_is_limited_and_the_victims_p99_holds(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    victim = await cluster.client("alice", "msg-1")
    clients.append(victim)
    await latencies(victim, cluster.users["bob"], 10)  # warm up
    idle = p99(await latencies(victim, cluster.users["bob"]))
    before = metric(cluster, "msg-1", "imcluster_gateway_rate_limited_total")
    args = ["mixed", "--port", str(cluster.gateway_port("msg-1")), "--user", "bob"]
    args += ["--password-md5", md5_hex(PASSWORD), "--peer", str(cluster.users["carol"]), "--seconds", "2.5"]
    async with flooder(*args) as report:
        # Measure once the flooder is past its bursts (request_burst and msg_burst are allowed, and
        # take db_proxy a moment to serve) and held back: it was refused, and the victim is served
        # at its idle pace again.
        async with asyncio.timeout(5):
            while metric(cluster, "msg-1", "imcluster_gateway_rate_limited_total") == before:
                await asyncio.sleep(0.05)
            while max(await latencies(victim, cluster.users["bob"], 3)) > 2 * idle + FLOOR:
                pass
        # Up to ROUNDS rounds while the flood lasts: one scheduler hiccup on a shared
        # machine (CI saw one 9 ms sample) must not fail it; a victim the flood holds
        # back fails every round.
        for _ in range(ROUNDS):
            flooded = p99(await latencies(victim, cluster.users["bob"]))
            if flooded <= 2 * idle + FLOOR:
                break
        assert not report.done(), "the flood ended before the victim's samples did"
    done = await report
    limited = metric(cluster, "msg-1", "imcluster_gateway_rate_limited_total") - before
    assert limited > 0 and done["sent"] > limited
    assert flooded <= 2 * idle + FLOOR, f"victim p99 {flooded * 1e3:.1f} ms, idle {idle * 1e3:.1f} ms"


async def test_25000_connections_that_never_log_in_do_not_stop_a_real_login(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    """Three processes from 127.0.0.2/.3/.4 (this one may hold 20,000 files).

    At the defaults each address keeps 64 pre-login connections
    (max_unauthenticated_per_source) and the rest are closed on accept, far
    below max_unauthenticated (2000) and the file limit, so the login from
    127.0.0.1 finds room; were there enough addresses to fill
    max_unauthenticated, the oldest of the address holding the most would be
    closed to make room (tests/msg_server/test_admission.py).
    """
    port = str(cluster.gateway_port("msg-1"))
    refused_before = metric(cluster, "msg-1", "imcluster_gateway_connections_refused_total")
    crowd = [("127.0.0.2", 8334), ("127.0.0.3", 8333), ("127.0.0.4", 8333)]

    def prelogin(source: str, count: int) -> Any:
        return flooder(
            "prelogin", "--port", port, "--source", source, "--count", str(count), "--seconds", "5"
        )

    async with prelogin(*crowd[0]) as a, prelogin(*crowd[1]) as b, prelogin(*crowd[2]) as c:
        # Once the crowd is being refused, a real user logs in, within a bound.
        async with asyncio.timeout(10):
            while metric(cluster, "msg-1", "imcluster_gateway_connections_refused_total") == refused_before:
                await asyncio.sleep(0.02)
        t = time.monotonic()
        user = await cluster.client("dave", "msg-1")
        clients.append(user)
        login_seconds = time.monotonic() - t
        reports = [await r for r in (a, b, c)]
    assert sum(r["opened"] for r in reports) == 25_000, reports
    # Most of the crowd was turned away while it was there. On a slow machine the
    # gateway may still be refusing the last of them when the crowd is done, and
    # some never reach it (the kernel's accept queue, 4096, overflowed and the
    # crowd gave up first), so each close it saw is waited for, not 25,000.
    closed = sum(r["closed_by_server"] for r in reports)
    assert closed >= 25_000 // 2, reports
    async with asyncio.timeout(15):
        refused = "imcluster_gateway_connections_refused_total"
        while metric(cluster, "msg-1", refused) - refused_before < closed:
            await asyncio.sleep(0.05)
    assert login_seconds < 2.0
    # And the user is served.
    assert (await user.unread()).user_id == user.user_id
