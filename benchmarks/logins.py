"""Many clients logging in at once, and closing them: shared by the idle and discovery phases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from benchmarks.settings import LOGIN_TIMEOUT, PASSWORD_MD5
from benchmarks.wire import BenchConn, connect_and_login


async def login_many(
    names: Sequence[str],
    concurrency: int,
    address: Callable[[str], Awaitable[tuple[str, int]]],
    timeout: float = LOGIN_TIMEOUT,
) -> tuple[list[BenchConn], list[str], float]:
    """Log every name in, ``concurrency`` at a time, each within ``timeout``.

    Answers (connections, errors, seconds)."""
    conns: list[BenchConn] = []
    errors: list[str] = []
    todo = iter(names)

    async def worker() -> None:
        for name in todo:
            try:
                host, port = await address(name)
                conns.append(await connect_and_login(host, port, name, PASSWORD_MD5, timeout))
            except Exception as exc:  # counted and reported; the run goes on
                errors.append(f"{name}: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(names)))))
    return conns, errors, time.perf_counter() - started


async def close_all(conns: list[BenchConn]) -> None:
    for conn in conns:
        conn.close()
    await asyncio.sleep(0)  # let the transports run their close callbacks
