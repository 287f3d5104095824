"""Acknowledged pushes (Rpcs.PUSH_MSG) through a real gateway on real sockets:
exactly once and in msg_id order per connection, gaps filled from storage,
the origin not echoed, the answer only after the write."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from prometheus_client import REGISTRY

from common.commands import Cmd
from common.pb import base_pb2, internal_pb2, message_pb2
from msg_server import push as push_module
from tests.msg_server.conftest import push_1to1, running
from tests.support.ttclient import TTClient

ALICE, BOB = 1, 2
KEY = (1, ALICE, BOB)


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("imcluster_gateway_pushes_dropped_total", {"reason": reason}) or 0.0


def gaps_filled() -> float:
    return REGISTRY.get_sample_value("imcluster_gateway_gaps_filled_total") or 0.0


async def ids_pushed(client: TTClient, count: int) -> list[int]:
    return [(await client.next_push(Cmd.MSG_DATA, timeout=5)).msg_id for _ in range(count)]


async def test_a_duplicate_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        before = dropped("duplicate")
        assert not (await bed.push(push_1to1(ALICE, BOB, 5))).retry_user_ids
        assert not (await bed.push(push_1to1(ALICE, BOB, 5))).retry_user_ids  # a redelivery
        assert not (await bed.push(push_1to1(ALICE, BOB, 4))).retry_user_ids  # a stale retry
        await bed.push(push_1to1(ALICE, BOB, 6))
        assert await ids_pushed(bob, 2) == [5, 6]
        assert not bob.pushed(Cmd.MSG_DATA)
        assert dropped("duplicate") - before == 2
        # Only the first looked back (for what was stored since the login: nothing).
        assert [list(r.msg_id_list) for r in bed.db.by_id_requests] == [[1, 2, 3, 4]]


async def test_a_gap_is_filled_from_storage_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        filled_before = gaps_filled()
        for msg_id in (6, 7):  # stored, but their pushes went through a route server that died
            bed.db.store(KEY, msg_id, ALICE if msg_id == 6 else BOB, b"stored %d" % msg_id)
        await bed.push(push_1to1(ALICE, BOB, 5))
        await bed.push(push_1to1(ALICE, BOB, 8))
        pushes = [await bob.next_push(Cmd.MSG_DATA, timeout=5) for _ in range(4)]
        assert [p.msg_id for p in pushes] == [5, 6, 7, 8]
        # As db_proxy pushes them: to_session_id is the recipient user.
        filled = pushes[1]
        assert (filled.from_user_id, filled.to_session_id, filled.msg_data) == (ALICE, BOB, b"stored 6")
        assert (pushes[2].from_user_id, pushes[2].to_session_id) == (BOB, ALICE)
        assert pushes[1].create_time == 1_700_000_006
        first, req = bed.db.by_id_requests
        assert list(first.msg_id_list) == [1, 2, 3, 4]
        assert (req.user_id, req.session_type, req.session_id, list(req.msg_id_list)) == (
            BOB,
            base_pb2.SESSION_TYPE_SINGLE,
            ALICE,
            [6, 7],
        )
        assert gaps_filled() - filled_before == 2


async def test_a_first_push_brings_what_was_stored_since_the_login_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No baseline: the messages just before may be on their way still, or retried
    after this one (a dispatcher goes on past a failed push); those stored after the
    login come first, the older ones the client synced at login."""
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        now = int(time.time())
        bed.db.store(KEY, 1, ALICE, b"synced at login").create_time = now - 60
        for msg_id in (2, 3):
            bed.db.store(KEY, msg_id, ALICE, b"since").create_time = now
        await bed.push(push_1to1(ALICE, BOB, 4))
        assert await ids_pushed(bob, 3) == [2, 3, 4]
        await bed.push(push_1to1(ALICE, BOB, 2))  # the late retry: a duplicate by now
        await bed.push(push_1to1(ALICE, BOB, 5))
        assert await ids_pushed(bob, 1) == [5]


async def test_a_first_push_stored_before_the_login_does_not_look_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        old = push_1to1(ALICE, BOB, 7)
        old.committed_at_us = (int(time.time()) - 60) * 1_000_000  # a late redelivery
        await bed.push(old)
        assert await ids_pushed(bob, 1) == [7]
        assert not bed.db.by_id_requests


async def test_the_origin_is_not_echoed_and_not_refetched(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        alice = await bed.client(ALICE)
        bob = await bed.client(BOB)
        await bed.push(push_1to1(BOB, ALICE, 4))
        assert await ids_pushed(alice, 1) == [4]
        assert await ids_pushed(bob, 1) == [4]  # the sender's connection: no origin named here
        await bed.push(push_1to1(ALICE, BOB, 5, origin=("msg-t", bed.conn_id(alice))))
        await bed.push(push_1to1(BOB, ALICE, 6))
        assert await ids_pushed(alice, 1) == [6]  # not 5: it sent it
        assert await ids_pushed(bob, 2) == [5, 6]
        # 5 was not fetched back for alice (only the first push looked back).
        assert [(r.user_id, list(r.msg_id_list)) for r in bed.db.by_id_requests] == [
            (ALICE, [1, 2, 3]),
            (BOB, [1, 2, 3]),
        ]


async def test_an_acked_send_raises_the_highest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's own message, acked before a push of the conversation reaches it."""
    async with running(monkeypatch) as bed:
        alice = await bed.client(ALICE)
        await bed.client(BOB)
        bed.db.store(KEY, 1, BOB, b"first")
        await bed.push(push_1to1(BOB, ALICE, 1))
        assert await ids_pushed(alice, 1) == [1]
        ack = await alice.send_text(BOB, b"mine")
        assert ack.msg_id == 2
        await bed.push(push_1to1(BOB, ALICE, 3))
        assert await ids_pushed(alice, 1) == [3]
        # Bob never got 2 (this fake route server did not push it): fetched for him only.
        assert [(r.user_id, list(r.msg_id_list)) for r in bed.db.by_id_requests] == [(BOB, [2])]


async def test_the_answer_waits_for_the_write_and_later_pushes_wait_behind_a_fill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        for msg_id in (2, 3):
            bed.db.store(KEY, msg_id, ALICE, b"s%d" % msg_id)
        await bed.push(push_1to1(ALICE, BOB, 1))
        assert await ids_pushed(bob, 1) == [1]
        bed.db.hold_by_id.clear()
        with_gap = asyncio.create_task(bed.push(push_1to1(ALICE, BOB, 4)))
        await asyncio.wait_for(bed.db.by_id_arrived.wait(), 5)
        behind = asyncio.create_task(bed.push(push_1to1(ALICE, BOB, 5)))
        # A push of another conversation does not wait.
        other = push_1to1(3, BOB, 1)
        await bed.push(other)
        assert await ids_pushed(bob, 1) == [1]
        assert not with_gap.done() and not behind.done()
        assert not bob.pushed(Cmd.MSG_DATA)
        bed.db.hold_by_id.set()
        await asyncio.wait_for(asyncio.gather(with_gap, behind), 5)
        assert await ids_pushed(bob, 4) == [2, 3, 4, 5]


async def test_an_unfilled_gap_is_written_past_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        await bed.push(push_1to1(ALICE, BOB, 1))
        before = dropped("gap_unfilled")
        bed.db.fail_by_id = True
        await bed.push(push_1to1(ALICE, BOB, 4))
        assert await ids_pushed(bob, 2) == [1, 4]
        assert dropped("gap_unfilled") - before == 2


async def test_group_push_reaches_every_member_connection_once(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        alice = await bed.client(ALICE)
        bob = await bed.client(BOB)
        bob2 = await bed.client(BOB)  # a second device
        group = 900
        body = message_pb2.IMMsgData(
            from_user_id=ALICE,
            to_session_id=group,
            msg_id=1,
            create_time=1,
            msg_type=base_pb2.MSG_TYPE_GROUP_TEXT,
            msg_data=b"g",
        )
        for msg_id in (1, 3):
            body.msg_id = msg_id
            push = push_1to1(ALICE, group, msg_id)
            push.user_ids[:] = [ALICE, BOB, 77]  # 77: not here
            push.session_type = base_pb2.SESSION_TYPE_GROUP
            push.body = body.SerializeToString()
            push.origin.gateway_id, push.origin.conn_id = "msg-t", bed.conn_id(alice)
            if msg_id == 3:
                bed.db.store((2, group, 0), 2, BOB, b"g2")
            await bed.push(push)
        for client in (bob, bob2):
            pushes = [await client.next_push(Cmd.MSG_DATA, timeout=5) for _ in range(3)]
            assert [(p.msg_id, p.to_session_id) for p in pushes] == [(1, group), (2, group), (3, group)]
        assert not alice.pushed(Cmd.MSG_DATA)
        assert {(r.user_id, r.session_type, r.session_id) for r in bed.db.by_id_requests} == {
            (BOB, base_pb2.SESSION_TYPE_GROUP, group)
        }


async def test_too_many_behind_a_fill_are_handed_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_module, "MAX_WAITING", 2)
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        await bed.push(push_1to1(ALICE, BOB, 1))
        bed.db.hold_by_id.clear()
        with_gap = asyncio.create_task(bed.push(push_1to1(ALICE, BOB, 3)))
        await asyncio.wait_for(bed.db.by_id_arrived.wait(), 5)
        behind = asyncio.create_task(bed.push(push_1to1(ALICE, BOB, 4)))
        chains = bed.gateway.pusher._chains
        async with asyncio.timeout(5):
            while not any(chain.waiting == 2 for chain in chains.values()):
                await asyncio.sleep(0.01)
        # The third waiter is not queued: the route server is told to push to bob again later.
        assert list((await bed.push(push_1to1(ALICE, BOB, 5))).retry_user_ids) == [BOB]
        bed.db.hold_by_id.set()
        await asyncio.wait_for(asyncio.gather(with_gap, behind), 5)
        await bed.push(push_1to1(ALICE, BOB, 5))  # the retry
        assert await ids_pushed(bob, 4) == [1, 3, 4, 5]  # 2 was never stored: written past


@pytest.mark.parametrize("seed", range(20))
async def test_shuffled_and_repeated_pushes_in_flight_at_once(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Redeliveries, retries and failover in any order, many in flight at once:
    from its first write on, each connection gets every id once, in order."""
    rng = random.Random(seed)
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        bob_phone = await bed.client_without_route(BOB)
        for msg_id in range(1, 32):
            bed.db.store(KEY, msg_id, ALICE, b"m%d" % msg_id)
        order = [rng.randint(1, 30) for _ in range(60)] + [30]
        # Sent in this order on one link, all in flight at once.
        results = await asyncio.gather(*(bed.push(push_1to1(ALICE, BOB, m)) for m in order))
        assert not any(r.retry_user_ids for r in results)
        await bed.push(push_1to1(ALICE, BOB, 31))  # a marker: nothing may come after it
        for client in (bob, bob_phone):
            assert await ids_pushed(client, 31 - order[0] + 1) == list(range(order[0], 32)), order
            assert not client.pushed(Cmd.MSG_DATA)


async def test_a_gap_of_250_is_fetched_whole_in_chunks_of_100(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway frozen 10 s at 10 msg/s and more: a connection that stayed up misses
    250 ids; all are fetched (db_proxy answers at most 100 ids a request), in order."""
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        await bed.push(push_1to1(ALICE, BOB, 1))
        assert await ids_pushed(bob, 1) == [1]
        for msg_id in range(2, 252):
            bed.db.store(KEY, msg_id, ALICE, b"s%d" % msg_id)
        unfilled, filled = dropped("gap_unfilled"), gaps_filled()
        bed.db.by_id_requests.clear()
        assert not (await bed.push(push_1to1(ALICE, BOB, 252))).retry_user_ids
        await bed.push(push_1to1(ALICE, BOB, 253))
        assert await ids_pushed(bob, 252) == list(range(2, 254))
        assert not bob.pushed(Cmd.MSG_DATA)
        assert [len(r.msg_id_list) for r in bed.db.by_id_requests] == [100, 100, 50]
        assert [i for r in bed.db.by_id_requests for i in r.msg_id_list] == list(range(2, 252))
        assert gaps_filled() - filled == 250
        assert dropped("gap_unfilled") == unfilled


async def test_a_hole_given_up_to_bound_own_sends_ahead_is_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group member that sends while another member's pushes are delayed: past the
    bound of ahead ranges the oldest hole is no longer waited for; it is fetched
    before the next push, and the delayed pushes are then duplicates."""
    group = 900
    gkey = (2, group, 0)

    def group_push(sender: int, msg_id: int) -> internal_pb2.PushMsg:
        push = push_1to1(sender, group, msg_id)
        push.user_ids[:] = [ALICE]  # bob's own connection is not what this test is about
        push.session_type = base_pb2.SESSION_TYPE_GROUP
        body = message_pb2.IMMsgData.FromString(push.body)
        body.msg_type = base_pb2.MSG_TYPE_GROUP_TEXT
        push.body = body.SerializeToString()
        return push

    async with running(monkeypatch) as bed:
        alice = await bed.client(ALICE)
        await bed.client(BOB)
        bed.db.store(gkey, 1, BOB, b"g1")
        await bed.push(group_push(BOB, 1))
        assert await ids_pushed(alice, 1) == [1]
        unfilled = dropped("gap_unfilled")
        # Bob's messages (even ids) are stored, their pushes delayed; alice's own (odd) acked.
        (conn,) = bed.gateway.sessions[ALICE]
        for msg_id in range(2, 42):
            if msg_id % 2:
                assert conn.order().raise_to(gkey, msg_id) == 0
            else:
                bed.db.store(gkey, msg_id, BOB, b"g%d" % msg_id)
        assert dropped("gap_unfilled") == unfilled
        # Bob's next message is pushed: everything alice lacks comes first, in order.
        bed.db.store(gkey, 42, BOB, b"g42")
        await bed.push(group_push(BOB, 42))
        assert await ids_pushed(alice, 21) == list(range(2, 43, 2))
        for msg_id in range(2, 42, 2):  # the delayed pushes, at last
            await bed.push(group_push(BOB, msg_id))
        await bed.push(group_push(BOB, 43))
        assert await ids_pushed(alice, 1) == [43]
        assert dropped("gap_unfilled") == unfilled


async def test_storage_failing_mid_gap_writes_the_rest_past_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        await bed.push(push_1to1(ALICE, BOB, 1))
        assert await ids_pushed(bob, 1) == [1]
        for msg_id in range(2, 252):
            bed.db.store(KEY, msg_id, ALICE, b"s%d" % msg_id)
        unfilled = dropped("gap_unfilled")
        bed.db.by_id_requests.clear()
        bed.db.fail_by_id_after = 1  # the first chunk comes, the second fails
        await bed.push(push_1to1(ALICE, BOB, 252))
        assert await ids_pushed(bob, 101) == [*range(2, 102), 252]
        # Not a request per chunk left while storage fails: the rest is written past.
        assert len(bed.db.by_id_requests) == 2
        assert dropped("gap_unfilled") - unfilled == 150


async def test_a_send_stored_without_its_ack_is_not_filled_back_to_its_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Storage stored bob's message and then failed (the ack never came): a later push's gap
    fill must not write bob's own message back to bob's connection (the bed's cut10-database
    once saw three)."""
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        for msg_id in range(1, 6):
            bed.db.store(KEY, msg_id, ALICE, b"before %d" % msg_id)
        await bed.push(push_1to1(ALICE, BOB, 5))
        assert await ids_pushed(bob, 1) == [5]
        bed.db.lose_save_answers = True
        bed.db.save_arrived.clear()
        bob.send(
            Cmd.MSG_DATA,
            message_pb2.IMMsgData(
                from_user_id=BOB,
                to_session_id=ALICE,
                msg_id=77,
                create_time=0,
                msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
                msg_data=b"stored, never acked",
            ),
        )
        await asyncio.wait_for(bed.db.save_arrived.wait(), 5)
        assert 6 in bed.db.stored[KEY]
        bed.db.lose_save_answers = False
        await bed.push(push_1to1(ALICE, BOB, 7))
        assert await ids_pushed(bob, 1) == [7]  # 6 is bob's own: not written back to it
        assert not bob.pushed(Cmd.MSG_DATA)
