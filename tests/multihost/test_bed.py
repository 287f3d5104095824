"""First scenarios on the multi-host bed: it comes up, a gateway dies, a db_proxy's link goes down.

Each scenario prints its figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import pytest

from common.commands import Cmd
from common.conversation import conversation_key
from common.pb import base_pb2, message_pb2
from tests.multihost.client import Resender
from tests.multihost.conftest import MultiHost
from tests.support.ttclient import TTClient

DETECTION_BOUND = 6.0  # seconds: the link layer declares a silent peer dead after 3
PUSH_TIMEOUT = 10.0


async def delivered(receiver: TTClient, data: bytes) -> message_pb2.IMMsgData:
    """The push of ``data`` to ``receiver`` (other pushes stay queued)."""
    async with asyncio.timeout(PUSH_TIMEOUT):
        while True:
            push = await receiver.next_push(Cmd.MSG_DATA)
            assert isinstance(push, message_pb2.IMMsgData)
            if push.msg_data == data:
                return push


async def seen(receiver: TTClient, data: bytes) -> bool:
    """Until ``data`` was pushed to ``receiver`` (bounded), leaving the pushes in place to be counted."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PUSH_TIMEOUT):
            while not any(m.msg_data == data for m in receiver.pushed(Cmd.MSG_DATA)):
                await asyncio.sleep(0.05)
            return True
    return False


async def test_bed_comes_up_and_delivers_across_gateways(multihost: MultiHost) -> None:
    assert multihost.handed_out(1) == multihost.handed_out(2) == {"msg-1", "msg-2"}
    opened: list[tuple[TTClient, str]] = []
    try:
        # Discovery hands out the least loaded gateway: both get clients.
        for i, name in enumerate(["alice", "bob", "carol", "dave"]):
            opened.append(await multihost.client(name, login_server=1 + i % 2))
        by_gateway = {gateway: client for client, gateway in opened}
        assert set(by_gateway) == {"msg-1", "msg-2"}, [g for _, g in opened]
        sender, receiver = by_gateway["msg-1"], by_gateway["msg-2"]
        ack = await sender.send_text(receiver.user_id, b"across hosts", client_msg_id=1)
        assert ack.msg_id > 0
        push = await delivered(receiver, b"across hosts")
        assert (push.from_user_id, push.msg_id) == (sender.user_id, ack.msg_id)
    finally:
        for client, _ in opened:
            await client.close()


async def test_kill9_of_a_gateway_clients_move_through_discovery(multihost: MultiHost) -> None:
    resenders = [Resender(name, multihost.client) for name in ("erin", "frank", "grace", "heidi")]
    try:
        for resender in resenders:
            await resender.open()
        doomed = [r for r in resenders if r.gateway == "msg-1"]
        staying = [r for r in resenders if r.gateway == "msg-2"]
        assert doomed and staying, [r.gateway for r in resenders]

        server = multihost.servers["msg-1"]
        assert server.process is not None
        killed = time.monotonic()
        server.process.kill9()
        detection = multihost.wait_gateways({"msg-2"}, timeout=DETECTION_BOUND + 4)
        for resender in doomed:
            assert resender.client is not None
            async with asyncio.timeout(DETECTION_BOUND):
                await resender.client.closed.wait()

        # Each moved client sends to one that stayed: its resend reconnects it first.
        receiver = staying[0]
        assert receiver.client is not None
        for n, resender in enumerate(doomed):
            data = f"after the kill {n}".encode()
            ack = await resender.send(receiver.client.user_id, data)
            push = await delivered(receiver.client, data)
            assert push.msg_id == ack.msg_id
            assert resender.gateways == ["msg-1", "msg-2"], resender.gateways
        moved = time.monotonic() - killed
        print(
            f"\nkill -9 msg-1: discovery stopped handing it out after {detection:.2f}s "
            f"(bound {DETECTION_BOUND}s); {len(doomed)} clients moved to msg-2 and delivered "
            f"{moved:.2f}s after the kill; reconnects {sum(r.reconnects for r in doomed)}"
        )
        assert detection < DETECTION_BOUND
    finally:
        for resender in resenders:
            await resender.close()
        server = multihost.servers["msg-1"]
        if server.process is None or not server.process.running():
            multihost.start(server)  # the next scenario has both gateways again
        multihost.wait_gateways({"msg-1", "msg-2"})


def test_sigstop_of_a_gateway_discovery_stops_handing_it_out(multihost: MultiHost) -> None:
    """A frozen gateway closes nothing: only the link layer's heartbeats can tell."""
    process = multihost.servers["msg-2"].process
    assert process is not None and process.running()
    process.freeze()
    try:
        detection = multihost.wait_gateways({"msg-1"}, timeout=DETECTION_BOUND + 4)
    finally:
        process.thaw()
    rejoined = multihost.wait_gateways({"msg-1", "msg-2"})
    print(
        f"\nSIGSTOP msg-2: discovery stopped handing it out after {detection:.2f}s "
        f"(bound {DETECTION_BOUND}s); handed out again {rejoined:.2f}s after SIGCONT"
    )
    assert detection < DETECTION_BOUND


MESSAGES_PER_PHASE = 5  # per conversation: before the cut, during it, after it
# 6 s: past the link layer's 3 s detection and a resend, so db-1's conversations fail
# over to db-2 and come back. 4 s: the link is back just after it was declared dead, so
# gateways relink to db-1 while db-1 is still relinking to the route_servers.
CUTS = [6.0, 4.0]
OUT_OF_ORDER = (
    "pushed out of order: a conversation moved between db_proxies and back, and nothing orders "
    "its pushes across the move"
)
NOT_PUSHED = (
    "acked messages not pushed within the wait: db_proxy stores and acks messages while it has no "
    "route_server link (it relinks after a link-down); their pushes wait in its bounded backlog until "
    "a route link is back, which can be after the test stops waiting (no redelivery yet: issue 8)"
)


@pytest.mark.parametrize("cut_seconds", CUTS, ids=[f"cut{c:.0f}s" for c in CUTS])
async def test_db_proxy_link_down_no_acked_message_lost_or_stored_twice(
    multihost: MultiHost, cut_seconds: float
) -> None:
    users = multihost.users
    sender_id = users["alice"]
    peers = [name for name in users if name != "alice"]

    def db_index(peer: str) -> int:  # the gateway's choice of db_proxy (msg_server.gateway.db_for)
        return hash(conversation_key(base_pb2.SESSION_TYPE_SINGLE, sender_id, users[peer])) % 2

    on_cut_proxy = [p for p in peers if db_index(p) == 0][:2]
    elsewhere = [p for p in peers if db_index(p) == 1][:2]
    assert on_cut_proxy, "no conversation of alice's lands on db-1"
    chosen = on_cut_proxy + elsewhere

    sender = Resender("alice", multihost.client)
    receivers = {peer: (await multihost.client(peer))[0] for peer in chosen}
    cut, restored = asyncio.Event(), asyncio.Event()
    reached_cut: Counter[str] = Counter()
    all_reached = asyncio.Event()
    times: dict[str, float] = {}
    first_ack_after: dict[str, float] = {}
    run_tag = f"{time.time_ns()}"

    async def conversation(peer: str) -> None:
        for n in range(3 * MESSAGES_PER_PHASE):
            if n == MESSAGES_PER_PHASE:
                reached_cut[peer] += 1
                if len(reached_cut) == len(chosen):
                    all_reached.set()
                await cut.wait()
            if n == 2 * MESSAGES_PER_PHASE:
                await restored.wait()
            acked = await sender.send(users[peer], f"mh {run_tag} {peer} {n}".encode())
            if cut.is_set() and peer in on_cut_proxy:
                first_ack_after.setdefault(peer, acked.at)

    async def fault() -> None:
        await all_reached.wait()
        multihost.bed.cut("dbp-1")
        times["cut"] = time.monotonic()
        cut.set()
        await asyncio.sleep(cut_seconds)  # the fault's length, not a wait for an outcome
        multihost.bed.restore("dbp-1")
        times["restored"] = time.monotonic()
        restored.set()

    try:
        await sender.open()
        async with asyncio.timeout(90):
            await asyncio.gather(fault(), *(conversation(peer) for peer in chosen))
        done = time.monotonic()

        # Every acked message is stored exactly once, with the msg_id its ack gave.
        rows = multihost.sql(
            "SELECT msg_data, COUNT(*), MIN(msg_id) FROM imcluster.messages "
            f"WHERE from_user_id = {sender_id} AND msg_data LIKE 'mh {run_tag} %' GROUP BY msg_data"
        )
        assert rows is not None
        stored = {data.encode(): (int(count), int(msg_id)) for data, count, msg_id in rows}
        twice = [data for data, (count, _) in stored.items() if count > 1]
        lost = [a.data for a in sender.acked if a.data not in stored]
        wrong_id = [a.data for a in sender.acked if a.data in stored and stored[a.data][1] != a.msg_id]

        # Every acked message reached its receiver, once and in order.
        for peer, receiver in receivers.items():
            await seen(receiver, f"mh {run_tag} {peer} {3 * MESSAGES_PER_PHASE - 1}".encode())
        duplicates = out_of_order = missing = pushed_total = 0
        for peer, receiver in receivers.items():
            got = [m.msg_data for m in receiver.pushed(Cmd.MSG_DATA)]
            sent = [a.data for a in sender.acked if a.peer == users[peer]]
            once = list(dict.fromkeys(got))
            pushed_total += len(once)
            duplicates += len(got) - len(once)
            missing += len(set(sent) - set(got))
            # Of the acked messages pushed: in the order they were acked (a missing one is counted apart).
            pushed_acked = [d for d in once if d in set(sent)]
            expected = [d for d in sent if d in set(got)]
            out_of_order += sum(1 for a, b in zip(pushed_acked, expected, strict=True) if a != b)
            if set(sent) - set(got):
                print(f"{peer} (db-{db_index(peer) + 1}): not pushed {sorted(set(sent) - set(got))}")

        failover = max((first_ack_after[p] - times["cut"] for p in on_cut_proxy), default=0.0)
        print(
            f"\nlink-down of dbp-1 for {cut_seconds}s: {len(sender.acked)} acked, {sender.resent} resent, "
            f"{len(stored)} stored, {len(twice)} stored twice, {len(lost)} acked lost, "
            f"{pushed_total} pushed, {missing} acked not pushed, {duplicates} duplicate pushes, "
            f"{out_of_order} out of order; "
            f"db-1's conversations acked again {failover:.2f}s after the cut; "
            f"all sent {done - times['restored']:.2f}s after the link came back"
        )
        assert len(sender.acked) == len(chosen) * 3 * MESSAGES_PER_PHASE
        assert not lost and not twice and not wrong_id, (lost, twice, wrong_id)
        assert duplicates == 0
        if missing or out_of_order:
            # Issue 8's live-delivery guarantees (a delivery log with redelivery,
            # gap filling at the gateway) are not built yet: known, and counted.
            pytest.xfail(f"{missing} {NOT_PUSHED}; {out_of_order} {OUT_OF_ORDER}")
    finally:
        multihost.bed.restore("dbp-1")
        await sender.close()
        for receiver in receivers.values():
            await receiver.close()
