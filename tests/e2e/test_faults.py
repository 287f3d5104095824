"""kill -9 of server processes in the middle of traffic: nothing acked is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.commands import Cmd
from imctl.cluster import ServerProcess
from tests.e2e.conftest import ENGINES, Cluster, running_cluster
from tests.support.ttclient import ServerClosed, TTClient

# Pushes go through the delivery log: run on each of its backends (conftest).
EVERY_DELIVERY_LOG = True


@pytest.fixture(params=ENGINES)
def fresh_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own: these tests break it."""
    with running_cluster(request.param, tmp_path) as started:
        yield started


def kill9(server: ServerProcess) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def restart_on_same_port(cluster: Cluster, server: ServerProcess) -> None:
    server.overrides["port"] = str(server.info["port"])
    server.start(cluster.local.config_path)
    assert server.wait_ready(30), server.log_file.read_text()[-2000:]


async def send_stream(sender: TTClient, to: int, count: int, acked: dict[int, bytes], prefix: str) -> None:
    """Send ``count`` messages one after another; record what was acked."""
    for i in range(count):
        body = f"{prefix}-{i}".encode()
        try:
            ack = await sender.send_text(to, body, client_msg_id=10_000 + i, timeout=3)
        except (TimeoutError, ServerClosed):
            continue
        acked[ack.msg_id] = body
        await asyncio.sleep(0.005)


async def all_messages(client: TTClient, peer: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    begin = 0
    while True:
        page = await client.msg_list(peer, begin=begin, count=50)
        for m in page.msg_list:
            found[m.msg_id] = m.msg_data
        # msg_id_begin 0 means "from the newest", so id 1 is the end too.
        if len(page.msg_list) < 50 or page.msg_list[-1].msg_id <= 1:
            return found
        begin = page.msg_list[-1].msg_id - 1


async def test_kill9_of_recipients_gateway_loses_nothing_acked(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    acked: dict[int, bytes] = {}
    sending = asyncio.create_task(send_stream(alice, bob.user_id, 150, acked, "k"))
    async with asyncio.timeout(20):
        while len(acked) < 30:
            await asyncio.sleep(0.01)
    kill9(cluster.local.by_name("msg-2"))
    await asyncio.wait_for(bob.closed.wait(), 5)
    pushed = {m.msg_id for m in bob.pushed(Cmd.MSG_DATA)}
    await bob.close()
    # Bob logs in again through login_server, which no longer hands out msg-2.
    async with asyncio.timeout(10):
        while True:
            bob = await cluster.client("bob")
            if bob.writer is not None and bob.writer.get_extra_info("peername")[1] == cluster.gateway_port(
                "msg-1"
            ):
                break
            await bob.close()
            await asyncio.sleep(0.2)
    await sending
    assert len(acked) >= 60  # alice's gateway never went away: most sends were acked
    stored = await all_messages(bob, alice.user_id)
    for msg_id, body in acked.items():
        assert stored.get(msg_id) == body, f"acked message {msg_id} lost"
    assert pushed <= set(stored)
    unread = await bob.unread()
    [info] = [u for u in unread.unreadinfo_list if u.session_id == alice.user_id]
    assert info.unread_cnt == len(stored)  # exact, including any stored whose ack we timed out on
    await alice.close()
    await bob.close()


async def test_kill9_of_db_proxy_loses_nothing_acked(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    alice = await cluster.client("alice", "msg-1")
    acked: dict[int, bytes] = {}
    bob_id = cluster.users["bob"]
    sending = asyncio.create_task(send_stream(alice, bob_id, 120, acked, "d"))
    async with asyncio.timeout(20):
        while len(acked) < 20:
            await asyncio.sleep(0.01)
    db = cluster.local.by_name("db-1")
    kill9(db)
    await asyncio.sleep(0.5)
    restart_on_same_port(cluster, db)
    await sending
    # Resend what was not acked: the store must dedupe the ones it had
    # committed before it died without answering.
    for i in range(120):
        body = f"d-{i}".encode()
        if body not in acked.values():
            ack = await alice.send_text(bob_id, body, client_msg_id=10_000 + i, timeout=10)
            acked[ack.msg_id] = body
    bob = await cluster.client("bob")
    stored = await all_messages(bob, alice.user_id)
    assert stored == acked  # every message exactly once, under the id its ack gave
    assert sorted(stored) == list(range(min(stored), min(stored) + len(stored)))  # no holes, no reuse
    await alice.close()
    await bob.close()


async def test_route_server_restart_resumes_delivery(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    await alice.send_text(bob.user_id, b"before")
    await bob.next_push(Cmd.MSG_DATA)
    route = cluster.local.by_name("route-1")
    kill9(route)
    during = await alice.send_text(bob.user_id, b"during")  # stored and acked without a route server
    restart_on_same_port(cluster, route)
    # The gateways relink and resend their sessions; pushes flow again. (The
    # push of the message stored meanwhile may be lost: pushes are not
    # acknowledged yet, issue 8's delivery log; its sync from storage is not.)
    pushed: list[int] = []
    for _ in range(15):  # bounded: one message a second at most
        ack = await alice.send_text(bob.user_id, b"after")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                while ack.msg_id not in pushed:
                    pushed.append((await bob.next_push(Cmd.MSG_DATA, timeout=1)).msg_id)
        if ack.msg_id in pushed:
            break
    else:
        raise AssertionError(f"no push after the route server came back; pushed {pushed}")
    stored = await all_messages(bob, alice.user_id)
    assert stored[during.msg_id] == b"during"
    await alice.close()
    await bob.close()


async def test_sigterm_drains_a_gateway_gracefully(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    bob = await cluster.client("bob", "msg-2")
    gateway = cluster.local.by_name("msg-2")
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(bob.closed.wait(), 10)  # its clients are let go...
    code = await asyncio.to_thread(gateway.process.wait, 15)
    assert code == 0  # ...and it exits by itself, cleanly
    await bob.close()
    # login_server no longer hands it out; the other gateway takes the user.
    for _ in range(5):
        again = await cluster.client("bob")
        assert again.writer is not None
        assert again.writer.get_extra_info("peername")[1] == cluster.gateway_port("msg-1")
        await again.close()


async def test_sigterm_answers_what_is_in_flight(fresh_cluster: Cluster) -> None:
    """Every message a stopping gateway stored is acked to its sender first (issue 8:
    8 committed messages were never acked when links closed before clients)."""
    cluster = fresh_cluster
    alice = await cluster.client("alice", "msg-2")
    bob = await cluster.client("bob", "msg-1")
    gateway = cluster.local.by_name("msg-2")
    assert gateway.process is not None
    acked: dict[int, int] = {}  # client msg id -> msg id

    async def one(client_msg_id: int) -> None:
        with contextlib.suppress(ServerClosed, TimeoutError, ConnectionError):
            ack = await alice.send_text(
                bob.user_id, b"in flight %d" % client_msg_id, client_msg_id, timeout=15
            )
            acked[client_msg_id] = ack.msg_id

    sends = [asyncio.create_task(one(i)) for i in range(1, 61)]  # all 60 in flight at once
    await asyncio.sleep(0)  # let them be written before the signal
    gateway.process.send_signal(signal.SIGTERM)
    await asyncio.gather(*sends)
    assert await asyncio.to_thread(gateway.process.wait, 15) == 0
    stored = await stored_from(cluster, alice.user_id, bob.user_id)
    assert stored, "nothing was stored: the test did not exercise the drain"
    assert set(stored) == set(acked.values()), (sorted(stored), sorted(acked.values()))
    await alice.close()
    await bob.close()


async def stored_from(cluster: Cluster, sender: int, to: int) -> list[int]:
    """The msg ids of what ``sender`` stored in its conversation with ``to``."""
    from db_proxy.storage import open_store

    async with open_store(cluster.database_url) as store:
        rows = await store.message_list(sender, 1, to, 0, 100)
    return [m.msg_id for m in rows if m.from_user_id == sender]
