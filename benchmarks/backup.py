"""How long `imctl backup` and `imctl restore` take, and how big the archive is.

    python -m benchmarks.backup [--url mysql://root@127.0.0.1:3306/bench_backup] [--rows 200000] [--repeat 3]

Fills a fresh database (SQLite in a temporary directory by default) with
``--rows`` 1:1 messages of 100 bytes over 1,000 conversations (the same
filler as benchmarks/retention.py), then runs ``imctl backup`` and ``imctl
restore --force`` as an admin would, ``--repeat`` times each, and prints
the median time, rows per second and the archive's size. The baseline in
the same run is copying the SQLite file (or, on MariaDB, a plain
``SELECT *`` of the messages table): what reading the data alone costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.retention import fill
from db_proxy.storage import create_database_if_missing, open_store
from db_proxy.storage.sql import SqlStore


async def prepare(url: str, rows: int) -> None:
    if url.startswith("mysql://"):
        await create_database_if_missing(url)
    store = open_store(url)
    assert isinstance(store, SqlStore)
    await store.open()
    try:
        await store.migrate()
        await fill(store, rows, apart=False)
    finally:
        await store.close()


async def read_all(url: str) -> None:
    """The baseline on MariaDB: every message row read once, as the backup must."""
    store = open_store(url)
    assert isinstance(store, SqlStore)
    await store.open()
    try:
        async with store.db.reading() as tx:
            await tx.fetchall("SELECT * FROM messages")
    finally:
        await store.close()


def imctl(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imctl", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="", help="A MariaDB URL (dropped and refilled); default SQLite.")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = args.url or f"sqlite:///{work}/bench.db"
        if url.startswith("mysql://"):
            name = url.rsplit("/", 1)[1]
            drop = f"DROP DATABASE IF EXISTS {name}"
            subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", drop], check=True)
        asyncio.run(prepare(url, args.rows))
        store_dir = work / "files"
        store_dir.mkdir()
        archive = work / "backup.tar.gz"
        common = ["--database-url", url, "--store", str(store_dir)]
        base, backups, restores = [], [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            if url.startswith("sqlite:///"):
                shutil.copyfile(url.removeprefix("sqlite:///"), work / "copy.db")
            else:
                asyncio.run(read_all(url))
            base.append(time.perf_counter() - started)
            archive.unlink(missing_ok=True)
            backups.append(imctl("backup", str(archive), *common))
            restores.append(imctl("restore", str(archive), "--force", *common))
        engine = "mysql" if url.startswith("mysql://") else "sqlite"
        size = os.path.getsize(archive)
        b, r, c = (statistics.median(x) for x in (backups, restores, base))
        print(f"{engine}: {args.rows} messages, archive {size / 1e6:.1f} MB (gzip), medians of {args.repeat}")
        print(f"  baseline (read the data once): {c:.2f} s")
        print(f"  imctl backup:  {b:.2f} s, {args.rows / b:,.0f} messages/s, {b / c:.1f}x the baseline")
        print(f"  imctl restore: {r:.2f} s, {args.rows / r:,.0f} messages/s, {r / c:.1f}x the baseline")


if __name__ == "__main__":
    main()
