"""Micro benchmark: many calls over one real loopback link, with and without write coalescing.

    PYTHONPATH=$PWD .venv/bin/python -m tests.protocol.bench_link_coalescing [--calls N] [--window W]

Two processes, uvloop: a LinkServer answering DB_LOGIN at once (a child
process) and an Upstream with W callers each making calls back to back.
"per frame" is the old behaviour (``Link._flush`` writes at once: one
``transport.write`` per frame), "coalesced" the new one (one write per
event-loop turn); both ends run the same mode. The modes alternate in the
same run and the best round of each is kept, so the ratio holds on a busy
machine. The calling side's writes are counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from typing import Any

import uvloop

from common.commands import Rpcs
from common.link import Identity, Link, LinkServer, LinkSettings, Timing, Upstream
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands

SECRET = (b"bench-cluster-secret-0123456789",)
TIMING = Timing(heartbeat_interval=5.0, heartbeat_misses=3, handshake_timeout=3.0)
COALESCED = Link._flush
WRITE_NOW = Link._write_now
MODES = ("per frame", "coalesced")


def set_mode(mode: str) -> None:
    Link._flush = WRITE_NOW if mode == "per frame" else COALESCED  # type: ignore[method-assign]


async def answer(link: Link, req: internal_pb2.DbLoginReq) -> internal_pb2.DbLoginRes:
    return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, result_string=req.user_name)


async def serve(ports: Any, stop: Any) -> None:
    server = LinkServer(
        {internal_pb2.ROLE_GATEWAY: Commands().rpc(Rpcs.DB_LOGIN, answer)},
        role=internal_pb2.ROLE_DB_PROXY,
        node_id="db-1",
        settings=LinkSettings(secrets=SECRET, timing=TIMING),
    )
    ports.put(await server.listen("127.0.0.1", 0))
    cpu = time.process_time()
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    ports.put(time.process_time() - cpu)  # the serving side's CPU seconds
    await server.close()


def server_process(mode: str, ports: Any, stop: Any) -> None:
    set_mode(mode)
    uvloop.run(serve(ports, stop))


async def calls_per_second(port: int, calls: int, window: int) -> tuple[float, float, int]:
    writes = 0

    def counted(link: Link) -> bool:
        nonlocal writes
        if link.session is not None and link.session._out:
            writes += 1
        return WRITE_NOW(link)

    Link._write_now = counted  # type: ignore[method-assign,assignment]
    if Link._flush is WRITE_NOW:
        Link._flush = counted  # type: ignore[method-assign,assignment]
    upstream = Upstream(
        "db",
        [("127.0.0.1", port)],
        Identity(internal_pb2.ROLE_GATEWAY, "msg-1"),
        settings=LinkSettings(secrets=SECRET, timing=TIMING),
        expect_role=internal_pb2.ROLE_DB_PROXY,
    )
    upstream.start()
    assert await upstream.wait_ready(5)
    req = internal_pb2.DbLoginReq(user_name="alice", password_md5="", peer="bench")
    each = calls // window

    async def caller() -> None:
        for _ in range(each):
            await upstream.call(Rpcs.DB_LOGIN, req, 10.0)

    writes = 0
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(window)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await upstream.stop()
    Link._write_now = WRITE_NOW  # type: ignore[method-assign]
    return each * window / elapsed, cpu, writes


def one_round(mode: str, calls: int, window: int) -> tuple[float, float, int]:
    """(calls/s, CPU µs per call on both sides together, the caller's writes)."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.SimpleQueue()
    stop = ctx.Event()
    child = ctx.Process(target=server_process, args=(mode, ports, stop), daemon=True)
    child.start()
    try:
        port = ports.get()
        set_mode(mode)
        rate, cpu, writes = uvloop.run(calls_per_second(port, calls, window))
        stop.set()
        server_cpu = ports.get()
        return rate, (cpu + server_cpu) / (calls // window * window) * 1e6, writes
    finally:
        stop.set()
        child.join(10)
        set_mode("coalesced")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=40_000)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {mode: [] for mode in MODES}
    for _ in range(a.rounds):
        for mode in MODES:
            results[mode].append(one_round(mode, a.calls, a.window))
    rate = {mode: max(r for r, _, _ in runs) for mode, runs in results.items()}
    cpu = {mode: min(c for _, c, _ in runs) for mode, runs in results.items()}
    for mode, runs in results.items():
        print(
            f"{mode:>10}: {rate[mode]:9,.0f} calls/s, {cpu[mode]:5.1f} CPU µs per call (both ends), "
            f"{runs[-1][2]:6d} writes by the caller for {a.calls} calls "
            f"(best of {a.rounds}, {a.window} callers)"
        )
    print(
        f"ratio coalesced / per frame: calls/s {rate['coalesced'] / rate['per frame']:.2f}, "
        f"CPU per call {cpu['coalesced'] / cpu['per frame']:.2f}"
    )


if __name__ == "__main__":
    main()
