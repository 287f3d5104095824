"""Two route servers side by side: either can die without stopping delivery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2
from tests.e2e.conftest import Cluster, running_cluster


@pytest.fixture
def two_routes(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster("sqlite", tmp_path, routes=2) as started:
        yield started


async def test_delivery_survives_kill9_of_a_route_server(two_routes: Cluster) -> None:
    cluster = two_routes
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    watcher = await cluster.client("carol", "msg-1")
    res = await watcher.call(
        Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[alice.user_id])
    )
    assert res.user_stat_list[0].status == base_pb2.USER_STATUS_ONLINE
    first = await alice.send_text(bob.user_id, b"two routes")
    assert (await bob.next_push(Cmd.MSG_DATA)).msg_id == first.msg_id
    # Both route servers know the users, and each publishes presence: the
    # gateway passes one copy on, not two.
    dave = await cluster.client("dave", "msg-2")
    await watcher.call(Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[dave.user_id]))
    await dave.close()
    offline = await watcher.next_push(Cmd.USER_STAT_NOTIFY)
    assert offline.user_stat.status == base_pb2.USER_STATUS_OFFLINE
    await asyncio.sleep(0.5)
    assert not watcher.pushed(Cmd.USER_STAT_NOTIFY)

    route1 = cluster.local.by_name("route-1")
    assert route1.process is not None
    os.kill(route1.process.pid, signal.SIGKILL)
    route1.process.wait(10)
    # No restart: db_proxy and the gateways go on through route-2.
    async with asyncio.timeout(10):
        while True:
            ack = await alice.send_text(bob.user_id, b"after the kill")
            with contextlib.suppress(TimeoutError):
                push = await bob.next_push(Cmd.MSG_DATA, timeout=1)
                if push.msg_id == ack.msg_id:
                    break
    # A new login is still policed cluster-wide by the surviving route server.
    alice_again = await cluster.client("alice", "msg-2")
    kick = await alice.next_push(Cmd.KICK_USER)
    assert kick.kick_reason == base_pb2.KICK_REASON_DUPLICATE_USER
    for client in (alice, alice_again, bob, watcher):
        await client.close()


async def test_both_route_servers_carry_pushes(two_routes: Cluster) -> None:
    """Active-active for real: conversations are spread over the route servers
    (issue 8 found every push going through the first one)."""
    cluster = two_routes
    names = ["alice", "bob", "carol", "dave", "erin", "frank"]
    senders = [await cluster.client(name, "msg-1") for name in names[:3]]
    receivers = [await cluster.client(name, "msg-2") for name in names[3:]]
    for sender in senders:
        for receiver in receivers:  # nine conversations
            ack = await sender.send_text(receiver.user_id, b"spread")
            assert (await receiver.next_push(Cmd.MSG_DATA)).msg_id == ack.msg_id
    relayed = {name: await asyncio.to_thread(route_relayed, cluster, name) for name in ("route-1", "route-2")}
    assert all(count >= 1 for count in relayed.values()), relayed
    for client in senders + receivers:
        await client.close()


def route_relayed(cluster: Cluster, name: str) -> float:
    port = cluster.local.by_name(name).info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("imcluster_route_pushes_relayed_total")
    )
