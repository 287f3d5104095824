"""Idle connections: N clients log in straight to one gateway; login rate and RSS per connection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from benchmarks.logins import close_all, login_many
from benchmarks.measure import cpu_percent, cpu_snapshot, rss_bytes
from benchmarks.servers import Target
from benchmarks.settings import HOST, Options
from benchmarks.wire import BenchConn
from common.commands import Cmd

HEARTBEAT_INTERVAL = 30.0


async def heartbeats(conns: list[BenchConn]) -> None:
    """Keep idle connections alive the way a TeamTalk client does (every 30 s)."""
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        for conn in conns:
            conn.send(Cmd.HEARTBEAT, b"", conn.next_seq())


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
