"""Issue 8's scenarios: one fault of one host kind while traffic runs, on each delivery log backend.

Each scenario opens every device, checks the bed delivers (warm-up), sends
1:1 and group traffic, injects its fault a few seconds in, stops sending,
waits (bounded) for the stragglers, then asserts on what the clients saw
and what MariaDB stored; it prints its figures in one line (run with -s).
Whatever happens, the bed is healed afterwards for the next scenario: links
up, processes thawed, dead servers started again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from tests.multihost.conftest import PLAN, MultiHost, metric_changes
from tests.multihost.traffic import LATE, Figures, Traffic

FAULT_AFTER = 3.0  # seconds of traffic before the fault
TAIL = 5.0  # seconds of traffic after the fault ended (a kill: after the kill)
DETECTION = 3.0  # the link layer's detection time (cluster.heartbeat_interval * heartbeat_misses)
DISCOVERY_BOUND = DETECTION + 1.0  # plus the poll here and one load report
GATEWAY_OF_HOST = {"gw-1": "msg-1", "gw-2": "msg-2"}


@dataclass(frozen=True)
class Fault:
    name: str
    host: str
    action: str  # kill9 | sigstop | cut | restart (of the route server on host)
    seconds: float = 0.0  # how long it lasts (sigstop, cut)


FAULTS = [
    Fault("kill9-login-route", "login-route-1", "kill9"),
    Fault("kill9-gateway", "gw-1", "kill9"),
    Fault("kill9-db-proxy", "dbp-1", "kill9"),
    Fault("sigstop-login-route", "login-route-1", "sigstop", 10.0),
    Fault("sigstop-gateway", "gw-1", "sigstop", 10.0),
    Fault("sigstop-db-proxy", "dbp-1", "sigstop", 10.0),
    Fault("cut10-login-route", "login-route-1", "cut", 10.0),
    Fault("cut10-gateway", "gw-1", "cut", 10.0),
    Fault("cut10-db-proxy", "dbp-1", "cut", 10.0),
    Fault("cut10-database", "db", "cut", 10.0),
    Fault("cut30-login-route", "login-route-1", "cut", 30.0),
    Fault("restart-route", "login-route-1", "restart"),
]


async def inject(multihost: MultiHost, fault: Fault) -> None:
    """The fault itself; it returns when the fault is over (the kill: at once)."""
    servers = multihost.processes_on(fault.host)
    processes = [s.process for s in servers if s.process is not None]
    if fault.action == "kill9":
        for process in processes:
            process.kill9()
    elif fault.action == "sigstop":
        for process in processes:
            process.freeze()
        try:
            await asyncio.sleep(fault.seconds)  # the fault's length, not a wait for an outcome
        finally:
            for process in processes:
                process.thaw()
    elif fault.action == "cut":
        multihost.bed.cut(fault.host)
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            multihost.bed.restore(fault.host)
    elif fault.action == "restart":
        route = next(s for s in servers if s.kind == "route")
        assert route.process is not None
        route.process.kill9()
        await multihost.start_async(route)
    else:
        raise ValueError(fault.action)


async def discovery_drops(
    multihost: MultiHost, gateway: str, since: list[float], timeout: float
) -> float | None:
    """Seconds from the fault until neither login server hands ``gateway`` out (polled), or None."""
    while not since:
        await asyncio.sleep(0.01)
    while time.monotonic() - since[0] < timeout:
        handed: set[str] = set()
        for index in (1, 2):
            try:
                handed |= await asyncio.to_thread(multihost.handed_out, index)
            except OSError:
                pass
        if gateway not in handed:
            return time.monotonic() - since[0]
        await asyncio.sleep(0.1)
    return None


def stored(multihost: MultiHost, tag: str) -> dict[bytes, tuple[int, int]]:
    """Data -> (rows, lowest msg_id) of this run's messages in MariaDB."""
    rows = multihost.sql(
        "SELECT msg_data, COUNT(*), MIN(msg_id) FROM imcluster.messages "
        f"WHERE msg_data LIKE 'mh {tag} %' GROUP BY msg_data"
    )
    assert rows is not None
    return {data.encode(): (int(count), int(msg_id)) for data, count, msg_id in rows}


def failures(f: Figures, discovery: float | None, gateway: str | None) -> list[str]:
    found = [
        f"{name} {value}"
        for name, value in [
            ("acked lost", f.lost),
            ("stored twice", f.twice),
            ("stored with another msg_id than acked", f.wrong_id),
            ("stored out of send order", f.source_order),
            ("duplicate pushes", f.duplicates),
            ("pushed out of order", f.out_of_order),
            ("pushed back to their sending connection", f.echoed),
            ("acked, not pushed to a connection that stayed up", f.missing),
        ]
        if value
    ]
    if f.p99 >= LATE:
        found.append(f"push p99 {f.p99:.2f}s >= {LATE}s")
    if gateway is not None and (discovery is None or discovery >= DISCOVERY_BOUND):
        found.append(f"discovery handed out the dead {gateway}: dropped {discovery}")
    return found


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_fault(multihost: MultiHost, backend: str, fault: Fault) -> None:
    tag = f"{time.time_ns()}"
    traffic = Traffic(multihost.connector, multihost.users, multihost.group_id, PLAN, tag)
    gateway = GATEWAY_OF_HOST.get(fault.host) if fault.action != "restart" else None
    since: list[float] = []
    wall: list[str] = []

    async def timed_fault() -> None:
        since.append(time.monotonic())
        wall.append(time.strftime("%H:%M:%S"))
        await inject(multihost, fault)
        wall.append(time.strftime("%H:%M:%S"))

    before = await asyncio.to_thread(multihost.push_metrics)
    try:
        await traffic.open()
        watching = asyncio.ensure_future(
            discovery_drops(multihost, gateway, since, 10.0) if gateway else asyncio.sleep(0, None)
        )
        await traffic.run(FAULT_AFTER + fault.seconds + TAIL, timed_fault, FAULT_AFTER)
        await traffic.finish()
        discovery = await watching
        figures = traffic.figures(stored(multihost, tag), {gateway} if gateway else set())
        after = await asyncio.to_thread(multihost.push_metrics)
    finally:
        await traffic.close()
        multihost.heal()  # in this thread: see MultiHost.spawn
    dropped = "never (10 s)" if discovery is None else f"after {discovery:.2f}s"
    shown = f", discovery dropped {gateway} {dropped}" if gateway else ""
    print(f"\n[{backend}] {fault.name}: {figures.line()}{shown}")
    print(f"    fault {' to '.join(wall)} (server logs: {multihost.bed.run_dir})")
    print(f"    counters: {metric_changes(before, after)}")
    for example in figures.examples:
        print(f"    {example}")
    found = failures(figures, discovery, gateway)
    assert figures.acked > len(traffic.streams) * FAULT_AFTER, "hardly any traffic was acked"
    assert not found, "; ".join(found)
