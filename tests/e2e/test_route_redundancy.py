"""Two route servers side by side: either can die without stopping delivery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
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
