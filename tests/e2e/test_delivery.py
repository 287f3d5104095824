"""Acknowledged delivery end to end (issue 8): every acked message reaches every
connection of its recipients, the sender's other devices included, exactly
once and in msg_id order; the sending connection does not get its own back;
and that holds across a kill -9 of a route server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.commands import Cmd
from common.pb import base_pb2
from tests.e2e.conftest import ENGINES, Cluster, running_cluster
from tests.support.ttclient import TTClient

# Pushes go through the delivery log: run on each of its backends (conftest).
EVERY_DELIVERY_LOG = True

MOBILE = base_pb2.CLIENT_TYPE_ANDROID  # a second device: TeamTalk's policy keeps one desktop and one mobile


def metric(cluster: Cluster, server: str, name: str) -> float:
    """The sum of one metric's samples (every label) on a server's /metrics."""
    port = cluster.local.by_name(server).info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def pushed_ids(client: TTClient, count: int, timeout: float = 10.0) -> list[int]:
    """The ids of the next ``count`` pushes, or of those that came within ``timeout``."""
    got: list[int] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(got) < count:
                got.append((await client.next_push(Cmd.MSG_DATA)).msg_id)
    return got


async def send_burst(sender: TTClient, to: int, count: int, tag: bytes, first_client_id: int) -> list[int]:
    """``count`` messages written one after another without waiting: their acks' ids, in send order."""
    sends = [
        asyncio.create_task(sender.send_text(to, tag + b" %d" % i, client_msg_id=first_client_id + i))
        for i in range(count)
    ]
    return [ack.msg_id for ack in await asyncio.gather(*sends)]


async def test_every_connection_gets_each_message_once_in_order(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("erin", "msg-1")
    alice_phone = await cluster.client("erin", "msg-2", MOBILE)
    bob = await cluster.client("frank", "msg-2")
    bob_phone = await cluster.client("frank", "msg-1", MOBILE)
    clients += [alice, alice_phone, bob, bob_phone]
    ids = await send_burst(alice, bob.user_id, 20, b"burst", 1000)
    # Stored in the order the connection sent them, consecutive.
    assert ids == list(range(ids[0], ids[0] + 20))
    for receiver in (bob, bob_phone, alice_phone):
        assert await pushed_ids(receiver, 20) == ids
    # The sending connection gets none of its own: the next push it sees is the reply.
    reply = await bob.send_text(alice.user_id, b"got them")
    assert reply.msg_id == ids[-1] + 1
    assert await pushed_ids(alice, 1) == [reply.msg_id]
    assert await pushed_ids(alice_phone, 1) == [reply.msg_id]
    assert await pushed_ids(bob_phone, 1) == [reply.msg_id]
    for client in (alice, alice_phone, bob, bob_phone):
        assert not client.pushed(Cmd.MSG_DATA), "a duplicate push"
    # The gateways timed the pushes from the commit: each of the 20 that msg-2 wrote to bob
    # was either pushed (and timed) or, when a later push overtook it under load, written
    # from storage to fill the gap first (counted, not timed: it has no commit time).
    timed = metric(cluster, "msg-2", "imcluster_gateway_push_latency_seconds_count")
    assert timed + metric(cluster, "msg-2", "imcluster_gateway_gaps_filled_total") >= 20
    assert timed >= 1


@pytest.fixture(params=ENGINES)
def two_routes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Two route servers, on each engine and delivery log."""
    with running_cluster(request.param, tmp_path, routes=2) as started:
        yield started


@pytest.mark.parametrize("fault", ["kill -9", "SIGSTOP"])
async def test_a_route_server_fault_loses_no_push_and_breaks_no_order(
    two_routes: Cluster, fault: str
) -> None:
    """Conversations are spread over both route servers; one dies or freezes while
    messages flow: every one still reaches its recipient once, in order."""
    cluster = two_routes
    alice = await cluster.client("alice", "msg-1")
    receivers = [await cluster.client(name, "msg-2") for name in ("bob", "carol", "dave", "erin")]
    route1 = cluster.local.by_name("route-1")
    assert route1.process is not None
    frozen = False
    try:
        acked: dict[int, list[int]] = {r.user_id: [] for r in receivers}
        for to in acked:
            acked[to] += await send_burst(alice, to, 5, b"before", 100 + to * 1000)
        if fault == "kill -9":
            os.kill(route1.process.pid, signal.SIGKILL)
        else:
            os.kill(route1.process.pid, signal.SIGSTOP)
            frozen = True
        loop = asyncio.get_running_loop()
        until = loop.time() + 4.0  # past the link layer's 3 s detection
        for round_ in range(100):
            if loop.time() > until:
                break
            for to in acked:
                acked[to] += await send_burst(alice, to, 2, b"after", 200 + to * 1000 + round_ * 10)
        for receiver in receivers:
            want = acked[receiver.user_id]
            # Every acked message, once, in msg_id order, within the guarantee's bound.
            assert await pushed_ids(receiver, len(want), timeout=5) == sorted(want)
            assert not receiver.pushed(Cmd.MSG_DATA), "a duplicate push"
        assert not alice.pushed(Cmd.MSG_DATA)
    finally:
        if frozen:
            os.kill(route1.process.pid, signal.SIGCONT)
        for client in (alice, *receivers):
            await client.close()


@pytest.fixture
def one_route(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster("sqlite", tmp_path, routes=1) as started:
        yield started


async def test_a_gateway_without_any_route_server_lets_its_clients_go(one_route: Cluster) -> None:
    """The route server dropped the gateways' sessions: their clients would miss every
    push. Past route_loss_grace (the detection time, 3 s) they are closed, to reconnect
    and sync."""
    cluster = one_route
    bob = await cluster.client("bob", "msg-2")
    try:
        route = cluster.local.by_name("route-1")
        assert route.process is not None
        loop = asyncio.get_running_loop()
        os.kill(route.process.pid, signal.SIGKILL)
        killed_at = loop.time()
        await asyncio.wait_for(bob.closed.wait(), 10)
        elapsed = loop.time() - killed_at
        assert 2.5 <= elapsed < 8, elapsed
        assert metric(cluster, "msg-2", "imcluster_gateway_clients_closed_route_lost_total") == 1
        await asyncio.to_thread(route.process.wait, 10)
    finally:
        await bob.close()
