"""Discovery logins: the login rate through login_server's HTTP discovery (GET /msg_server)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from benchmarks.logins import close_all, login_many
from benchmarks.measure import cpu_percent, cpu_snapshot
from benchmarks.servers import Target
from benchmarks.settings import HOST, LOGIN_TIMEOUT, Options
from benchmarks.wire import http_get_json


async def discovery_phase(
    target: Target, names: list[str], opts: Options, baseline_conns: int
) -> dict[str, Any]:
    """GET /msg_server, then TCP login to the gateway it names: what a desktop client does."""
    gateways: Counter[int] = Counter()

    async def discover(_name: str) -> tuple[str, int]:
        reply = await http_get_json(HOST, target.http_port, "/msg_server", LOGIN_TIMEOUT)
        if reply.get("code") != 0:
            raise ValueError(f"discovery answered {reply}")
        if reply["priorIP"] != HOST:
            raise ValueError(f"discovery named {reply['priorIP']}; this benchmark only talks to {HOST}")
        port = int(reply["port"])
        gateways[port] += 1
        return reply["priorIP"], port

    cpu_before = cpu_snapshot(target)
    conns, errors, seconds = await login_many(names, opts.concurrency, discover)
    cpu = cpu_percent(cpu_before, cpu_snapshot(target), seconds)
    await close_all(conns)
    drained = await target.settled(baseline_conns)
    return {
        "logins": len(conns),
        "login_errors": len(errors),
        "first_errors": errors[:3],
        "seconds": seconds,
        "logins_per_s": len(conns) / seconds if seconds > 0 else float("nan"),
        "by_gateway_port": {str(port): count for port, count in sorted(gateways.items())},
        "cpu_percent": cpu,
        "drained": drained,
    }
