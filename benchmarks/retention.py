"""Retention's cost: how fast it deletes, and what it does to message saves meanwhile.

    python -m benchmarks.retention [--url mysql://root@127.0.0.1:3306/bench] [--rows 200000]

Fills a fresh database (SQLite in a temporary directory by default) with
``--rows`` old 1:1 messages over 1,000 conversations, then runs retention
(batches of ``--batch``) while a writer saves one new message at a time in
a loop, as a gateway's worker would; prints the deletion rate and the
save latencies during the run next to those of the same writer alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from db_proxy.retention import Policy, Retention
from db_proxy.storage import create_database_if_missing, open_store
from db_proxy.storage.model import SESSION_SINGLE, NewMessage
from db_proxy.storage.sql import SqlStore

NOW = int(time.time())
OLD = NOW - 100 * 86400


async def fill(store: SqlStore, rows: int, apart: bool) -> tuple[int, int]:
    users = [await store.create_user(f"u{i}", "h") for i in range(42)]
    pairs = [(a, b) for a in users[:25] for b in users[25:]][:1000]
    batch: list[NewMessage] = []
    for i in range(rows):
        a, b = pairs[i % len(pairs)]
        batch.append(NewMessage(a, SESSION_SINGLE, b, 1, b"x" * 100, OLD + i // 1000, i + 1))
        if len(batch) == 1000:
            await store.save_messages(batch)
            batch = []
    if batch:
        await store.save_messages(batch)
    # The writer's conversation: one being pruned, or (``apart``) one that is not.
    return (users[40], users[41]) if apart else (users[0], users[39])


async def writer(store: SqlStore, pair: tuple[int, int], stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        await store.save_messages([NewMessage(*pair[:1], SESSION_SINGLE, pair[1], 1, b"new", NOW)])
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    slow = sum(1 for x in ms if x > 100)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    median = statistics.median(ms)
    return f"{len(ms)} saves, median {median:.2f} ms, p99 {p99:.2f}, max {ms[-1]:.2f} ms, {slow} over 100 ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--apart", action="store_true", help="The writer in a conversation not pruned.")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = options.url or f"sqlite:///{tmp}/bench.db"
        await create_database_if_missing(url)
        async with open_store(url) as store:
            await store.migrate()
            pair = await fill(store, options.rows, options.apart)
            stop = asyncio.Event()
            alone = asyncio.create_task(writer(store, pair, stop))
            await asyncio.sleep(2)
            stop.set()
            baseline = await alone
            stop = asyncio.Event()
            during = asyncio.create_task(writer(store, pair, stop))
            retention = Retention(
                Policy(single_days=30, audit_days=0, batch_rows=options.batch), store, store
            )
            started = time.perf_counter()
            plan = await retention.run()
            took = time.perf_counter() - started
            stop.set()
            loaded = await during
    deleted = plan.deleted["single"]
    print(
        f"{store.engine}: deleted {deleted} messages (+{plan.deleted['dedup']} dedup rows) in {took:.1f} s "
        f"({plan.batches} batches of {options.batch}): {deleted / took:.0f} messages/s"
    )
    print(f"  saves alone:            {summary(baseline)}")
    print(f"  saves during retention: {summary(loaded)}")


if __name__ == "__main__":
    asyncio.run(main())
