"""MySQL drivers on db_proxy's hot path: aiomysql (the old one), asyncmy, mysqlclient (MySQLdb, in threads).

Each driver runs the store's own code (:class:`~db_proxy.storage.sql.SqlStore`:
the same SQL, the same scripts of multi-statement queries): asyncmy through
db_proxy's own adapter (db_proxy/storage/mysql.py, on asyncmy since this
benchmark chose it), aiomysql and mysqlclient through the same adapter
written for them here, so what differs is the driver alone. Workloads:

* the group-commit transaction: ``save_messages`` of N new 1:1 messages,
  ``--concurrency`` of them at a time (db_proxy's message workers);
* the login's read: ``user_by_name``, one row by its unique name.

Every figure is the median of ``--runs`` runs (interleaved across drivers):
msgs/s (or reads/s), the median latency of one transaction (round trips
included), the CPU time of this process per operation (driver + store code;
threads included), and the ratios to aiomysql.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/mysql_drivers.py \\
        [--url mysql://root@127.0.0.1:3306/imcluster_bench_drivers]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib.metadata
import itertools
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from db_proxy.storage.model import SESSION_SINGLE, NewMessage
from db_proxy.storage.mysql import (
    MYSQL,
    MysqlDatabase,
    MysqlUrl,
    create_database_if_missing,
    drop_database,
    fast_literal,
)
from db_proxy.storage.sql import SqlStore
from db_proxy.storage.sql_base import Row, Step, Tx

DEFAULT_URL = "mysql://root@127.0.0.1:3306/imcluster_bench_drivers"
MULTI_STATEMENTS = 1 << 16  # CLIENT.MULTI_STATEMENTS, the same bit in every driver
SCRIPT_PACKET = 1024 * 1024


def _format(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _packets(statements: list[str]) -> list[str]:
    packets: list[list[str]] = [[]]
    size = 0
    for statement in statements:
        if packets[-1] and size + len(statement) > SCRIPT_PACKET:
            packets.append([])
            size = 0
        packets[-1].append(statement)
        size += len(statement) + 1
    return [";".join(p) for p in packets]


class _AsyncTx:
    """A transaction on an aiomysql connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.committed = False

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        async with self._conn.cursor() as cursor:
            return int(await cursor.execute(_format(sql), tuple(params)))

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(_format(sql), rows)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        async with self._conn.cursor() as cursor:
            await cursor.execute(_format(sql), tuple(params))
            return list(await cursor.fetchall())

    async def insert(self, sql: str, params: Sequence[object]) -> int:
        async with self._conn.cursor() as cursor:
            await cursor.execute(_format(sql), tuple(params))
            return int(cursor.lastrowid)

    async def script(self, steps: Sequence[Step], *, commit: bool = False) -> list[list[Row]]:
        literal = fast_literal(self._conn.literal)  # as db_proxy's adapter does
        statements = [_format(sql) % tuple(map(literal, params)) for sql, params in steps]
        if commit:
            statements.append("COMMIT")
        results: list[list[Row]] = []
        for packet in _packets(statements):
            async with self._conn.cursor() as cursor:
                await cursor.execute(packet)
                for _ in range(packet.count(";") + 1):
                    results.append(list(await cursor.fetchall()) if cursor.description else [])
                    await cursor.nextset()
        if commit:
            results.pop()
            self.committed = True
        return results


class AiomysqlDatabase:
    """aiomysql, as db_proxy/storage/mysql.py used it before the switch (same pool, same scripts)."""

    engine = "mysql"
    dialect = MYSQL

    def __init__(self, url: MysqlUrl, pool_size: int) -> None:
        self.url, self.pool_size = url, pool_size
        self._pool: Any = None

    async def open(self) -> None:
        import aiomysql

        # aiomysql 0.3.2 with PyMySQL >= 1.2.3 cannot escape bytes itself
        # (aio-libs/aiomysql#1080): the helper db_proxy supplied.
        if not callable(aiomysql.connection.escape_bytes_prefixed):
            aiomysql.connection.escape_bytes_prefixed = lambda value: "_binary X'" + value.hex() + "'"
        u = self.url
        self._pool = await aiomysql.create_pool(
            minsize=1,
            maxsize=self.pool_size,
            host=u.host,
            port=u.port,
            user=u.user,
            password=u.password,
            db=u.database,
            charset="utf8mb4",
            autocommit=False,
            client_flag=MULTI_STATEMENTS,
        )

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        return self._session(True)

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        return self._session(False)

    @asynccontextmanager
    async def _session(self, commit: bool) -> AsyncIterator[Tx]:
        conn = await self._pool.acquire()
        try:
            tx = _AsyncTx(conn)
            yield tx
            if tx.committed:
                pass
            elif commit:
                await conn.commit()
            else:
                await conn.rollback()
        except BaseException:
            await conn.rollback()
            raise
        finally:
            await self._pool.release(conn)


class _ThreadTx:
    """A transaction on a MySQLdb connection, every call in the thread pool."""

    def __init__(self, conn: Any, run: Callable[..., Any]) -> None:
        self._conn = conn
        self._run = run
        self.committed = False

    def _query(self, sql: str, params: Sequence[object]) -> tuple[int, list[Row], int]:
        cursor = self._conn.cursor()
        try:
            changed = cursor.execute(_format(sql), tuple(params))
            rows = list(cursor.fetchall()) if cursor.description else []
            return int(changed or 0), rows, int(cursor.lastrowid or 0)
        finally:
            cursor.close()

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return (await self._run(self._query, sql, params))[0]

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        def many() -> None:
            cursor = self._conn.cursor()
            cursor.executemany(_format(sql), [tuple(r) for r in rows])
            cursor.close()

        await self._run(many)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return (await self._run(self._query, sql, params))[1]

    async def insert(self, sql: str, params: Sequence[object]) -> int:
        return (await self._run(self._query, sql, params))[2]

    async def script(self, steps: Sequence[Step], *, commit: bool = False) -> list[list[Row]]:
        def run() -> list[list[Row]]:
            literal = self._conn.literal
            statements = [
                _format(sql) % tuple(literal(p).decode("utf-8", "surrogateescape") for p in params)
                for sql, params in steps
            ]
            if commit:
                statements.append("COMMIT")
            results: list[list[Row]] = []
            for packet in _packets(statements):
                cursor = self._conn.cursor()
                cursor.execute(packet.encode("utf-8", "surrogateescape"))
                for _ in range(packet.count(";") + 1):
                    results.append(list(cursor.fetchall()) if cursor.description else [])
                    cursor.nextset()
                cursor.close()
            return results

        results = await self._run(run)
        if commit:
            results.pop()
            self.committed = True
        return results


class MysqlclientDatabase:
    """MySQLdb (C, blocking) with one thread per connection: db_proxy would run it this way."""

    engine = "mysql"
    dialect = MYSQL

    def __init__(self, url: MysqlUrl, pool_size: int) -> None:
        self.url, self.pool_size = url, pool_size
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._threads = concurrent.futures.ThreadPoolExecutor(pool_size, thread_name_prefix="mysqlclient")

    async def open(self) -> None:
        import MySQLdb

        u = self.url
        for _ in range(self.pool_size):
            conn = MySQLdb.connect(
                host=u.host,
                port=u.port,
                user=u.user,
                password=u.password,
                database=u.database,
                charset="utf8mb4",
                autocommit=False,
                client_flag=MULTI_STATEMENTS,
            )
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()
        self._threads.shutdown()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        return self._session(True)

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        return self._session(False)

    @asynccontextmanager
    async def _session(self, commit: bool) -> AsyncIterator[Tx]:
        conn = await self._idle.get()
        try:
            tx = _ThreadTx(conn, self._run)
            yield tx
            if tx.committed:
                pass
            elif commit:
                await self._run(conn.commit)
            else:
                await self._run(conn.rollback)
        except BaseException:
            await self._run(conn.rollback)
            raise
        finally:
            self._idle.put_nowait(conn)


def make_database(driver: str, url: MysqlUrl, pool_size: int) -> Any:
    if driver == "aiomysql":
        return AiomysqlDatabase(url, pool_size)
    if driver == "asyncmy":  # db_proxy's own adapter
        return MysqlDatabase(url, pool_size=pool_size)
    if driver == "mysqlclient":
        return MysqlclientDatabase(url, pool_size)
    raise ValueError(driver)


@dataclass
class Figures:
    rate: float  # msgs/s or reads/s
    latency_ms: float  # median time of one transaction / read
    cpu_us: float  # process CPU per operation (a transaction or a read)


_conversations = itertools.count(1)
_keys = itertools.count(1 << 40)  # every message has an idempotency key, as db_proxy gives them


async def run_saves(store: SqlStore, batch: int, concurrency: int, seconds: float) -> Figures:
    """``concurrency`` workers, each committing batches of ``batch`` new messages for ``seconds``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        pair = next(_conversations)
        while time.perf_counter() < deadline:
            messages = [
                NewMessage(
                    pair * 10 + i % 8 + 1, SESSION_SINGLE, pair * 10 + 9, 1, b"x" * 100, 1, next(_keys)
                )
                for i in range(batch)
            ]
            started = time.perf_counter()
            await store.save_messages(messages)
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Figures(
        len(latencies) * batch / wall, statistics.median(latencies) * 1000, cpu / len(latencies) * 1e6
    )


async def run_reads(store: SqlStore, names: list[str], concurrency: int, seconds: float) -> Figures:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            user = await store.user_by_name(names[i % len(names)])
            latencies.append(time.perf_counter() - started)
            assert user is not None
            i += concurrency

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Figures(len(latencies) / wall, statistics.median(latencies) * 1000, cpu / len(latencies) * 1e6)


def _median(figures: list[Figures]) -> Figures:
    return Figures(
        statistics.median(f.rate for f in figures),
        statistics.median(f.latency_ms for f in figures),
        statistics.median(f.cpu_us for f in figures),
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="a scratch database (dropped and recreated)")
    parser.add_argument("--drivers", default="aiomysql,asyncmy,mysqlclient")
    parser.add_argument("--batches", default="1,16,64", help="messages per transaction")
    parser.add_argument("--concurrency", type=int, default=8, help="transactions at once (message workers)")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    url = MysqlUrl.parse(args.url)
    await drop_database(args.url)
    await create_database_if_missing(args.url)
    async with SqlStore(MysqlDatabase(url)) as setup:
        await setup.migrate()
        names = [f"bench{i}" for i in range(200)]
        for name in names:
            await setup.create_user(name, "h")

    drivers = []
    for driver in args.drivers.split(","):
        try:
            __import__({"mysqlclient": "MySQLdb"}.get(driver, driver))
        except ImportError as exc:
            print(f"{driver}: not installed ({exc}); skipped")
            continue
        drivers.append(driver)
    batches = [int(b) for b in args.batches.split(",")]
    workloads = [f"save x{b}" for b in batches] + ["user_by_name"]
    results: dict[tuple[str, str], Figures] = {}
    stores = {driver: SqlStore(make_database(driver, url, args.concurrency)) for driver in drivers}
    try:
        for store in stores.values():
            await store.open()
            await run_saves(store, 4, args.concurrency, 0.3)  # warm up: connections, caches
        # Interleaved (run 1 of every driver, then run 2...), so that the box's
        # load drifting during the benchmark falls on every driver alike.
        runs: dict[tuple[str, str], list[Figures]] = {}
        for _ in range(args.runs):
            for workload in workloads:
                for driver, store in stores.items():
                    if workload == "user_by_name":
                        figures = await run_reads(store, names, args.concurrency, args.seconds)
                    else:
                        batch = int(workload.removeprefix("save x"))
                        figures = await run_saves(store, batch, args.concurrency, args.seconds)
                    runs.setdefault((driver, workload), []).append(figures)
                    print(f"  .. {driver:<12} {workload:<13} {figures.rate:>9,.0f}/s", file=sys.stderr)
        results = {key: _median(values) for key, values in runs.items()}
    finally:
        for store in stores.values():
            await store.close()
    await drop_database(args.url)

    print(
        f"MySQL drivers on db_proxy's hot path: {time.strftime('%Y-%m-%dT%H:%M:%S')}, Python "
        f"{sys.version.split()[0]}, {args.concurrency} at a time, median of {args.runs} runs of "
        f"{args.seconds:g} s"
    )
    print("  " + ", ".join(f"{driver} {importlib.metadata.version(driver)}" for driver in drivers))
    print("  save xN: one group-commit transaction of N new 1:1 messages (2 round trips: ids, rows + COMMIT)")
    print("  user_by_name: the login's single-row user SELECT")
    print("  rate: msgs/s (save) or reads/s; latency: median per transaction/read; CPU: this process per op")
    print()
    header = f"{'rate/s':>10}{'latency ms':>12}{'CPU us/op':>11}{'rate':>8}{'CPU':>8}"
    print(f"  {'workload':<14}{'driver':<13}{header}")
    print(f"  {'':<14}{'':<13}{'':>10}{'':>12}{'':>11}{'vs aio':>8}{'vs aio':>8}")
    for workload in workloads:
        base = results.get(("aiomysql", workload))
        for driver in drivers:
            f = results[driver, workload]
            ratio = f"{f.rate / base.rate:.2f}" if base else "-"
            cpu_ratio = f"{f.cpu_us / base.cpu_us:.2f}" if base else "-"
            print(
                f"  {workload:<14}{driver:<13}{f.rate:>10,.0f}{f.latency_ms:>12.2f}{f.cpu_us:>11.0f}"
                f"{ratio:>8}{cpu_ratio:>8}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
