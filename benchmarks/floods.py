"""Flood benchmark: a victim's request latency under each flood, next to its idle baseline.

    python benchmarks/floods.py [--floods failed-logins,messages,requests,prelogin,profile]
        [--runs 3] [--seconds 3] [--samples 300] [--out FILE] [--keep]

Each run of each flood starts its own cluster (one db_proxy, route, login_server
and gateway msg-1 on SQLite, in a temporary directory, at the default limits of
msg_server/config.py and db_proxy/config.py), logs the victim in on msg-1 from
127.0.0.1 and measures ``--samples`` IMUsersInfoReq one after another (idle),
(``--samples`` + 10 + ``--samples`` stay within request_burst: the victim
sends as fast as it is answered and must not be limited itself), then starts
the flood from 127.0.0.2 in a process of its own
(``benchmarks/flooders.py``), waits until it is flooding, and measures again.

* ``failed-logins``: 50 connections at a time, each a wrong password for the victim's name;
* ``messages``: one logged-in connection writing IMMsgData to a third user as fast as it can;
* ``requests``: one logged-in connection writing IMUsersInfoReq as fast as it can;
* ``prelogin``: 15,000 connections that never log in;
* ``profile``: one logged-in connection writing IMChangeSignInfoReq as fast as it can.

The table shows, per flood, the medians over the runs of the idle and flooded
p50/p99 (ms), their ratios (flooded / idle, the figure the issue bounds at 2x
for p99), what the flooder did, and the gateway's refusal counters. The
victim's requests and the flood share this machine's CPUs with every server:
on a 2-CPU box the ratio includes that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.measure import percentile  # noqa: E402
from benchmarks.servers import create_users  # noqa: E402
from benchmarks.settings import PASSWORD_MD5  # noqa: E402
from common.commands import Cmd  # noqa: E402
from common.pb import base_pb2, buddy_pb2, login_pb2  # noqa: E402
from imctl.cluster import LocalCluster, write_secret_file  # noqa: E402
from tests.support.ttclient import TTClient  # noqa: E402

FLOODS = ("failed-logins", "messages", "requests", "prelogin", "profile")
FLOODER_SOURCE = "127.0.0.2"
COUNTERS = (
    "imcluster_gateway_rate_limited_total",
    "imcluster_gateway_connections_refused_total",
    "imcluster_gateway_refused_total",
)


def metric(port: object, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def login(port: int, name: str) -> TTClient:
    client = TTClient()
    await client.connect("127.0.0.1", port)
    req = login_pb2.IMLoginReq(
        user_name=name,
        password=PASSWORD_MD5,
        online_status=base_pb2.USER_STATUS_ONLINE,
        client_type=base_pb2.CLIENT_TYPE_WINDOWS,
    )
    _, res = await client.request(Cmd.LOGIN_REQ, req)
    assert isinstance(res, login_pb2.IMLoginRes) and res.result_code == 0, res
    client.user_id = res.user_info.user_id
    return client


async def latencies(client: TTClient, peer: int, count: int) -> list[float]:
    req = buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[peer])
    out = []
    for _ in range(count):
        t = time.perf_counter()
        await client.call(Cmd.USERS_INFO_REQ, req, timeout=10)
        out.append(time.perf_counter() - t)
    return out


def flooder_args(flood: str, port: int, peer: int, seconds: float) -> list[str]:
    args = [flood, "--port", str(port), "--source", FLOODER_SOURCE, "--seconds", str(seconds)]
    if flood == "failed-logins":
        return [*args, "--user", "victim", "--concurrency", "50"]
    if flood == "prelogin":
        return [*args, "--count", "15000", "--concurrency", "500"]
    return [*args, "--user", "flooder", "--password-md5", PASSWORD_MD5, "--peer", str(peer)]


async def one_run(cluster: LocalCluster, flood: str, opts: argparse.Namespace) -> dict[str, Any]:
    msg = cluster.by_name("msg-1")
    port, metrics_port = int(str(msg.info["port"])), msg.info["metrics_port"]
    victim = await login(port, "victim")
    peer = await login(port, "peer")
    peer_id = peer.user_id
    await peer.close()
    await latencies(victim, peer_id, 10)  # warm up
    idle = sorted(await latencies(victim, peer_id, opts.samples))
    before = {name: metric(metrics_port, name) for name in COUNTERS}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.flooders", *flooder_args(flood, port, peer_id, opts.seconds),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), 30)
        if ready.strip() != b"ready":
            raise RuntimeError(f"flooder did not start: {ready!r}")
        await asyncio.sleep(0.3)  # past its first burst
        t = time.monotonic()
        flooded = sorted(await latencies(victim, peer_id, opts.samples))
        measured_for = time.monotonic() - t
        out, err = await asyncio.wait_for(proc.communicate(), opts.seconds + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await victim.close()
    if proc.returncode != 0:
        raise RuntimeError(f"flooder failed: {err.decode()[-2000:]}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    counters = {name: metric(metrics_port, name) - before[name] for name in COUNTERS}
    result: dict[str, Any] = {
        "idle_p50": percentile(idle, 50),
        "idle_p99": percentile(idle, 99),
        "flood_p50": percentile(flooded, 50),
        "flood_p99": percentile(flooded, 99),
        "measured_during_flood": measured_for < opts.seconds - 0.3,
        "flooder": report,
        **{name.removeprefix("imcluster_gateway_"): value for name, value in counters.items()},
    }
    result["p50_ratio"] = result["flood_p50"] / result["idle_p50"]
    result["p99_ratio"] = result["flood_p99"] / result["idle_p99"]
    return result


def run_flood(flood: str, rep: int, opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    run_dir = work / f"{flood}-{rep + 1}"
    run_dir.mkdir(parents=True)
    db_url = f"sqlite:///{run_dir / 'im.db'}"
    asyncio.run(create_users(db_url, ["victim", "flooder", "peer"]))
    cluster = LocalCluster(
        run_dir,
        None,
        gateways=1,
        base_port=0,
        database_url=db_url,
        secret_file=write_secret_file(run_dir / "cluster.secret"),
        files=False,
    )
    try:
        cluster.start()
        return uvloop.run(one_run(cluster, flood, opts))
    finally:
        cluster.stop()


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for flood, results in runs.items():
        keys = {
            k for r in results for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        summary[flood] = {k: statistics.median(float(r[k]) for r in results) for k in sorted(keys)}
    return summary


def report(opts: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> str:
    summary = summarize(runs)
    lines = [
        f"victim: {opts.samples} IMUsersInfoReq one after another, idle then under each flood "
        f"({opts.seconds:g} s, from {FLOODER_SOURCE}); medians of {opts.runs} run(s); default limits",
        "",
        f"{'flood':14} {'idle p50 ms':>11} {'p99':>6} {'flood p50':>9} {'p99':>6} {'p50 x':>6} {'p99 x':>6}"
        f" {'rate-limited':>12} {'conns refused':>13} {'refused':>8}",
    ]
    for flood, s in summary.items():
        lines.append(
            f"{flood:14} {s['idle_p50'] * 1e3:11.2f} {s['idle_p99'] * 1e3:6.2f} {s['flood_p50'] * 1e3:9.2f}"
            f" {s['flood_p99'] * 1e3:6.2f} {s['p50_ratio']:6.2f} {s['p99_ratio']:6.2f}"
            f" {s['rate_limited_total']:12.0f} {s['connections_refused_total']:13.0f}"
            f" {s['refused_total']:8.0f}"
        )
    lines.append("")
    lines.append("what each flooder did (last run):")
    for flood, results in runs.items():
        lines.append(f"  {flood}: {json.dumps(results[-1]['flooder'])}")
    late = [f for f, results in runs.items() if not all(r["measured_during_flood"] for r in results)]
    if late:
        lines.append(f"  (the victim's samples outlasted the flood in: {', '.join(late)})")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--floods", default=",".join(FLOODS), help=f"comma-separated, of {', '.join(FLOODS)}")
    p.add_argument("--runs", type=int, default=3, help="runs of each flood; the table shows medians")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds each flood lasts")
    p.add_argument(
        "--samples",
        type=int,
        default=200,
        help="victim requests per measurement (10 + 2 x this stays within request_burst, 500: the "
        "victim, which sends as fast as it is answered, must not be rate-limited itself)",
    )
    p.add_argument("--out", type=Path, help="also write the table here (e.g. benchmarks/results/floods.txt)")
    p.add_argument("--json", type=Path, dest="json_path", help="also write every figure as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the run directories (server logs)")
    opts = p.parse_args(argv)
    opts.floods = [f for f in opts.floods.split(",") if f]
    unknown = set(opts.floods) - set(FLOODS)
    if unknown:
        p.error(f"unknown floods: {', '.join(sorted(unknown))}")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="imflood-"))
    runs: dict[str, list[dict[str, Any]]] = {flood: [] for flood in opts.floods}
    try:
        for rep in range(opts.runs):
            for flood in opts.floods:
                print(f"  .. run {rep + 1}/{opts.runs}: {flood}", flush=True)
                runs[flood].append(run_flood(flood, rep, opts, work))
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if opts.keep:
            print(f"run directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = report(opts, runs)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    text += f"\n(total {time.monotonic() - started:.1f} s, {now})"
    print(text)
    if opts.out is not None:
        opts.out.write_text(text + "\n")
    if opts.json_path is not None:
        document = {"options": {k: str(v) for k, v in vars(opts).items()}, "runs": runs}
        opts.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
