"""``imctl user import`` speed: N users with passwords into a local cluster on SQLite.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/user_import.py [--users 2000] [--repeat 3]
        [--hash-threads 0] [--chunk-size N] [--log2-n N]

Starts a LocalCluster (SQLite, file servers off, an admin token), then per run writes a
CSV of N new users (each with a password: one production-cost scrypt per row) and times
`imctl user import` as an admin runs it (a subprocess). Prints users/s for each run and
the median. Meanwhile one client logs in again and again (the login cache off, so each
login is a scrypt as a first one is) and the login latencies are printed: what an import
costs the people logging in. Every run imports new names into the same cluster; all on
127.0.0.1, every loop bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `imctl` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.wire import connect_and_login  # noqa: E402
from db_proxy.passwords import md5_hex  # noqa: E402
from imctl.cluster import LocalCluster, write_secret_file  # noqa: E402
from imctl.commands.local import init_database  # noqa: E402

TOKEN = "bench-import-token"
PROBE_USER, PROBE_PASSWORD = "probe", "probe-password"
LOGIN_TIMEOUT = 60.0
IMPORT_TIMEOUT = 900  # seconds for one run: bounded even at the old pace


def write_csv(path: Path, prefix: str, count: int) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "password", "nick", "department"])
        for i in range(count):
            writer.writerow([f"{prefix}{i:06d}", f"pw-{prefix}-{i}", f"User {i}", "Bench/Import"])


async def run_import(url: str, csv_path: Path, chunk_size: int = 0) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "imctl", "user", "import", str(csv_path), "--url", url, "--token", TOKEN),
        *(("--chunk-size", str(chunk_size)) if chunk_size else ()),
        "--strict",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), IMPORT_TIMEOUT)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {err.decode().strip()[-2000:]}")
    return elapsed


async def probe_logins(port: int, done: asyncio.Event) -> list[float]:
    """One login after another (each a full scrypt: the login cache is off) until ``done``."""
    latencies: list[float] = []
    for _ in range(100_000):
        if done.is_set():
            break
        started = time.perf_counter()
        conn = await connect_and_login("127.0.0.1", port, PROBE_USER, md5_hex(PROBE_PASSWORD), LOGIN_TIMEOUT)
        latencies.append(time.perf_counter() - started)
        conn.close()
    return latencies


async def measured_run(
    url: str, gateway: int, csv_path: Path, chunk_size: int, with_logins: bool = True
) -> tuple[float, list[float]]:
    if not with_logins:
        return await run_import(url, csv_path, chunk_size), [0.0]
    done = asyncio.Event()
    probe = asyncio.create_task(probe_logins(gateway, done))
    try:
        elapsed = await run_import(url, csv_path, chunk_size)
    finally:
        done.set()
    return elapsed, await probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hash-threads", type=int, default=0, help="db_proxy.hash_threads (0: one per core)")
    parser.add_argument("--chunk-size", type=int, default=0, help="rows per request (0: imctl's default)")
    parser.add_argument(
        "--log2-n",
        type=int,
        default=0,
        help="db_proxy.password_log2_n (0: the production cost); low: the overhead",
    )
    parser.add_argument("--no-logins", action="store_true", help="the import alone, no login meanwhile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        run_dir = Path(tmp)
        database_url = f"sqlite:///{run_dir / 'im.db'}"
        asyncio.run(init_database(database_url))
        cluster = LocalCluster(
            run_dir,
            None,
            gateways=1,
            base_port=0,
            database_url=database_url,
            files=False,
            secret_file=write_secret_file(run_dir / "cluster.secret"),
            environ={"login": {"IMCLUSTER_LOGIN_SERVER__ADMIN_TOKEN": TOKEN}},
        )
        # The login cache off: every probe login pays its scrypt, as a first login does.
        cluster.extra = {
            "db": {"hash_threads": str(args.hash_threads), "login_cache_ttl": "0"},
            "msg": {"login_rate_per_source": "10000", "login_burst_per_source": "100000"},
        }
        if args.log2_n:
            cluster.extra["db"]["password_log2_n"] = str(args.log2_n)
        cluster.start()
        try:
            url = f"http://127.0.0.1:{cluster.by_name('login-1').info['http_port']}"
            gateway = int(str(cluster.by_name("msg-1").info["port"]))
            probe_csv = run_dir / "probe.csv"
            probe_csv.write_text(f"name,password\n{PROBE_USER},{PROBE_PASSWORD}\n")
            asyncio.run(run_import(url, probe_csv, 1))
            rates: list[float] = []
            medians: list[float] = []
            worst: list[float] = []
            for run in range(args.repeat):
                csv_path = run_dir / f"run{run}.csv"
                write_csv(csv_path, f"r{run}u", args.users)
                elapsed, logins = asyncio.run(
                    measured_run(url, gateway, csv_path, args.chunk_size, not args.no_logins)
                )
                rates.append(args.users / elapsed)
                medians.append(statistics.median(logins) * 1000)
                worst.append(max(logins) * 1000)
                print(
                    f"run {run + 1}: {args.users} users in {elapsed:.1f} s = {rates[-1]:.1f} users/s; "
                    f"{len(logins)} logins meanwhile, median {medians[-1]:.0f} ms, max {worst[-1]:.0f} ms",
                    flush=True,
                )
        finally:
            cluster.stop()
    print(
        f"median of {args.repeat}: {statistics.median(rates):.1f} users/s, a login during the import "
        f"median {statistics.median(medians):.0f} ms, max {statistics.median(worst):.0f} ms "
        f"({args.users} users, chunks of {args.chunk_size or 'the default'}, "
        f"hash_threads {args.hash_threads}, "
        f"{os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
