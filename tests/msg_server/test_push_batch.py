"""PUSH_MSGS through a real gateway on real sockets (issue 12): each push decided in the order
given (duplicates dropped, gaps filled first, the origin not echoed), answered push by push once
every write is done; too many behind a fill named for a retry in that push's result only."""

from __future__ import annotations

import asyncio

import pytest

from common.commands import Cmd, Rpcs
from common.pb import internal_pb2, message_pb2
from msg_server import push as push_module
from tests.msg_server.conftest import Bed, push_1to1, running
from tests.msg_server.test_push import ALICE, BOB, KEY, dropped, ids_pushed
from tests.support.ttclient import TTClient


async def push_many(bed: Bed, *pushes: internal_pb2.PushMsg) -> list[internal_pb2.PushMsgResult]:
    reply = await bed.link.call(Rpcs.PUSH_MSGS, internal_pb2.PushMsgBatch(pushes=list(pushes)), 5.0)
    assert len(reply.results) == len(pushes)
    return list(reply.results)


async def test_a_batch_is_written_in_order_with_duplicates_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        before = dropped("duplicate")
        results = await push_many(bed, *(push_1to1(ALICE, BOB, i) for i in (5, 6, 6, 7, 4, 8)))
        assert all(not r.retry_user_ids for r in results)
        assert await ids_pushed(bob, 4) == [5, 6, 7, 8]
        assert not bob.pushed(Cmd.MSG_DATA)
        assert dropped("duplicate") - before == 2


async def test_a_gap_in_a_batch_is_filled_before_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        await bed.push(push_1to1(ALICE, BOB, 1))
        assert await ids_pushed(bob, 1) == [1]
        bed.db.store(KEY, 3, ALICE, b"stored 3")
        bed.db.hold_by_id.clear()
        call = asyncio.create_task(push_many(bed, *(push_1to1(ALICE, BOB, i) for i in (2, 4, 5))))
        await asyncio.wait_for(bed.db.by_id_arrived.wait(), 5)
        assert not call.done()  # the answer waits for the fill and the writes behind it
        bed.db.hold_by_id.set()
        assert all(not r.retry_user_ids for r in await asyncio.wait_for(call, 5))
        assert await ids_pushed(bob, 4) == [2, 3, 4, 5]


async def test_the_origin_is_not_echoed_within_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as bed:
        alice = await bed.client(ALICE)
        bob = await bed.client(BOB)
        await push_many(
            bed,
            push_1to1(BOB, ALICE, 1),
            push_1to1(ALICE, BOB, 2, origin=("msg-t", bed.conn_id(alice))),
            push_1to1(BOB, ALICE, 3),
        )
        assert await ids_pushed(alice, 2) == [1, 3]
        assert await ids_pushed(bob, 3) == [1, 2, 3]


async def test_too_many_behind_a_fill_are_named_in_their_push_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_module, "MAX_WAITING", 1)  # the fill itself fills the chain
    async with running(monkeypatch) as bed:
        bob = await bed.client(BOB)
        await bed.push(push_1to1(ALICE, BOB, 1))
        assert await ids_pushed(bob, 1) == [1]
        bed.db.store(KEY, 2, ALICE, b"stored 2")
        bed.db.hold_by_id.clear()
        call = asyncio.create_task(
            push_many(bed, push_1to1(ALICE, BOB, 3), push_1to1(ALICE, BOB, 4), push_1to1(3, BOB, 1))
        )
        await asyncio.wait_for(bed.db.by_id_arrived.wait(), 5)
        bed.db.hold_by_id.set()
        results = await asyncio.wait_for(call, 5)
        assert [list(r.retry_user_ids) for r in results] == [[], [BOB], []]
        pushes = [await bob.next_push(Cmd.MSG_DATA, timeout=5) for _ in range(3)]
        mine = [p.msg_id for p in pushes if p.from_user_id == ALICE]
        assert mine == [2, 3] and [p.from_user_id for p in pushes].count(3) == 1


async def own_send_in_flight(bed: Bed) -> tuple[TTClient, asyncio.Task[message_pb2.IMMsgDataAck]]:
    """alice has bob's id 1; her own message is committed as id 2, its ack held back."""
    alice = await bed.client(ALICE)
    await bed.push(push_1to1(BOB, ALICE, 1))
    assert await ids_pushed(alice, 1) == [1]
    bed.db.hold_saves.clear()
    sending = asyncio.create_task(alice.send_text(BOB, b"mine, in flight", client_msg_id=7))
    await asyncio.wait_for(bed.db.save_arrived.wait(), 5)
    bed.db.store(KEY, 2, ALICE, b"mine, in flight")  # committed; the answer is still on its way
    return alice, sending


async def test_a_gap_fill_does_not_write_a_sender_its_own_message_still_unacked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both sides talking at once: alice's message is committed (id 2) but its ack is not back
    when bob's next one (id 3) is pushed to her; the gap fill fetches id 2, her own send, and
    must not write it to the connection that sent it (the benchmark's group fan-out saw 20
    such copies of 400 with a DB_SAVE_MSGS answer waiting for its whole frame)."""
    async with running(monkeypatch) as bed:
        alice, sending = await own_send_in_flight(bed)
        await bed.push(push_1to1(BOB, ALICE, 3))
        assert await ids_pushed(alice, 1) == [3]
        assert len(bed.db.by_id_requests) == 1  # the gap was looked at, and id 2 skipped
        assert not alice.pushed(Cmd.MSG_DATA)
        bed.db.hold_saves.set()
        await asyncio.wait_for(sending, 5)
        assert not alice.pushed(Cmd.MSG_DATA)


async def test_a_gap_fill_answered_after_the_ack_still_skips_the_senders_own_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same race, the other way round: the fill's fetch is answered only after alice's ack
    has come back (the multi-host bed's group traffic under a route server cut)."""
    async with running(monkeypatch) as bed:
        alice, sending = await own_send_in_flight(bed)
        bed.db.hold_by_id.clear()
        pushing = asyncio.create_task(bed.push(push_1to1(BOB, ALICE, 3)))
        await asyncio.wait_for(bed.db.by_id_arrived.wait(), 5)
        bed.db.hold_saves.set()
        await asyncio.wait_for(sending, 5)  # acked while the fill's fetch is still out
        bed.db.hold_by_id.set()
        await asyncio.wait_for(pushing, 5)
        assert await ids_pushed(alice, 1) == [3]
        assert not alice.pushed(Cmd.MSG_DATA)
