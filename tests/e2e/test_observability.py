"""Every server exposes Prometheus metrics and /healthz, and the counters move."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient, discover


def fetch(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def sample(text: str, name: str) -> float:
    """Sum of a metric's samples (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"{re.escape(name)}(\{{.*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def labelled(text: str, series: str) -> float:
    """The value of one exact series, e.g. ``name{label="x"}``."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


async def test_metrics_and_health_on_every_server(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    clients += [alice, bob]
    await alice.send_text(bob.user_id, b"measured")
    await bob.next_push(0x0301)
    ports = {s.name: s.info["metrics_port"] for s in cluster.local.servers}
    assert all(isinstance(p, int) for p in ports.values()), ports

    for name, port in ports.items():
        status, body = await asyncio.to_thread(fetch, port, "/healthz")  # type: ignore[arg-type]
        assert status == 200 and json.loads(body)["ok"] is True, (name, body)

    _, msg1 = await asyncio.to_thread(fetch, ports["msg-1"], "/metrics")  # type: ignore[arg-type]
    assert sample(msg1, "imcluster_gateway_messages_acked_total") >= 1
    assert sample(msg1, "imcluster_gateway_sessions") >= 1
    assert sample(msg1, "imcluster_gateway_ack_latency_seconds_count") >= 1
    assert labelled(msg1, 'imcluster_logins_total{result="ok"}') >= 1
    _, msg2 = await asyncio.to_thread(fetch, ports["msg-2"], "/metrics")  # type: ignore[arg-type]
    assert sample(msg2, "imcluster_gateway_frames_pushed_total") >= 1
    assert sample(msg2, "imcluster_gateway_relay_latency_seconds_count") >= 1
    _, db = await asyncio.to_thread(fetch, ports["db-1"], "/metrics")  # type: ignore[arg-type]
    assert sample(db, "imcluster_db_messages_committed_total") >= 1
    assert "imcluster_db_queue_depth" in db
    await asyncio.to_thread(discover, cluster.discovery_url)
    _, login = await asyncio.to_thread(fetch, ports["login-1"], "/metrics")  # type: ignore[arg-type]
    assert labelled(login, 'imcluster_login_discoveries_total{result="ok"}') >= 1
    assert labelled(login, "imcluster_login_gateways") == 2
    _, route = await asyncio.to_thread(fetch, ports["route-1"], "/metrics")  # type: ignore[arg-type]
    assert sample(route, "imcluster_route_pushes_relayed_total") >= 1
    assert sample(route, "imcluster_route_gateways") == 2
