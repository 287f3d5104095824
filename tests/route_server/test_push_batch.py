"""PUSH_MSGS through a route server on real links (issue 12), and the sender's own copy:
one frame per gateway with its narrowed pushes in order, answered push by push; the
connection a message came from is not pushed its own message back."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from common.commands import Rpcs
from common.errors import Unavailable
from common.pb import internal_pb2
from tests.route_server.conftest import ANDROID, PUSH_TIMEOUT, TIMEOUT, Bed, dropped, online, push_msg


def skipped() -> float:
    return REGISTRY.get_sample_value("imcluster_route_origin_skipped_total") or 0.0


def batch(*pushes: internal_pb2.PushMsg) -> internal_pb2.PushMsgBatch:
    return internal_pb2.PushMsgBatch(pushes=list(pushes))


def from_origin(
    user_ids: list[int], msg_id: int, sender: int, gateway: str, conn: int
) -> internal_pb2.PushMsg:
    push = push_msg(user_ids, msg_id)
    push.from_user_id = sender
    push.origin.gateway_id, push.origin.conn_id = gateway, conn
    return push


async def push_many(bed: Bed, *pushes: internal_pb2.PushMsg) -> list[internal_pb2.PushMsgResult]:
    reply = await bed.db.call(Rpcs.PUSH_MSGS, batch(*pushes), TIMEOUT)
    assert len(reply.results) == len(pushes)
    return list(reply.results)


async def test_one_frame_per_gateway_narrowed_in_order_answered_push_by_push(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1), online(2, 2)])
    b = await bed.gateway("gw-b", [online(2, 7, ANDROID), online(3, 8)])
    b.hand_back = {3}
    no_session = dropped("no_session")
    results = await push_many(bed, push_msg([1, 2], 1), push_msg([3, 4], 2), push_msg([1, 3], 3))
    assert a.batches == [2] and b.batches == [3]
    assert [(p.msg_id, list(p.user_ids)) for p in a.pushes] == [(1, [1, 2]), (3, [1])]
    assert [(p.msg_id, list(p.user_ids)) for p in b.pushes] == [(1, [2]), (2, [3]), (3, [3])]
    assert [list(r.retry_user_ids) for r in results] == [[], [3], [3]]
    assert [list(r.offline_user_ids) for r in results] == [[], [4], []]  # 4: nowhere; the sender (1) never
    assert dropped("no_session") == no_session + 1


async def test_a_hung_gateway_hands_back_its_users_of_every_push(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1), online(3, 2)])
    b.answer_gate.clear()
    timeouts = dropped("gateway_timeout")
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await push_many(bed, push_msg([1, 2], 1), push_msg([1], 2), push_msg([3], 3))
    assert loop.time() - started < PUSH_TIMEOUT + 0.8
    assert [list(r.retry_user_ids) for r in results] == [[2], [], [3]]
    assert dropped("gateway_timeout") == timeouts + 2
    assert [p.msg_id for p in a.pushes] == [1, 2]


async def test_a_batch_is_refused_while_settling(bed: Bed) -> None:
    await bed.gateway("gw-a", [online(1, 1)])
    settling = dropped("settling")
    with pytest.raises(Unavailable, match="settling"):
        await push_many(bed, push_msg([1], 1), push_msg([1, 2], 2))
    assert dropped("settling") == settling + 3


async def test_pipelined_batches_reach_a_gateway_in_the_order_they_came(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)])
    calls = [
        asyncio.create_task(
            bed.db.call(Rpcs.PUSH_MSGS, batch(*(push_msg([1, 2], i * 5 + k) for k in range(1, 6))), TIMEOUT)
        )
        for i in range(20)
    ]
    for reply in await asyncio.gather(*calls):
        assert all(not r.retry_user_ids for r in reply.results)
    for gateway in (a, b):
        assert [p.msg_id for p in gateway.pushes] == list(range(1, 101))


async def test_the_origin_only_session_gets_no_copy_and_nothing_is_counted_lost(bed: Bed) -> None:
    """Alice (1) sends from her only session on gw-a: gw-a hears nothing of her copy,
    bob (2) on gw-b gets his, and no drop is counted for alice."""
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 11)])
    b = await bed.gateway("gw-b", [online(2, 21)])
    before = {r: dropped(r) for r in ("no_session", "no_gateway_link", "gateway_error", "gateway_timeout")}
    skips = skipped()
    results = await push_many(bed, from_origin([1, 2], 1, 1, "gw-a", 11))
    assert (list(results[0].retry_user_ids), list(results[0].offline_user_ids)) == ([], [])
    assert a.pushes == [] and a.batches == []
    assert [list(p.user_ids) for p in b.pushes] == [[2]]
    assert {r: dropped(r) for r in before} == before
    assert skipped() == skips + 1
    # The single PUSH_MSG (the retry path) skips it too.
    single = await bed.db.call(Rpcs.PUSH_MSG, from_origin([1, 2], 2, 1, "gw-a", 11), TIMEOUT)
    assert list(single.retry_user_ids) == [] and a.pushes == []
    assert skipped() == skips + 2


async def test_the_senders_other_device_on_the_origins_gateway_still_gets_its_copy(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 11), online(1, 12, ANDROID), online(3, 13)])
    skips = skipped()
    await push_many(bed, from_origin([1, 3], 1, 1, "gw-a", 11))
    # Alice's phone there (12) needs it; the gateway itself skips conn 11.
    assert [list(p.user_ids) for p in a.pushes] == [[1, 3]]
    assert skipped() == skips


async def test_the_senders_other_device_on_another_gateway_still_gets_its_copy(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 11), online(3, 13)])
    b = await bed.gateway("gw-b", [online(1, 21, ANDROID), online(2, 22)])
    skips = skipped()
    await push_many(bed, from_origin([1, 2, 3], 1, 1, "gw-a", 11))
    assert [list(p.user_ids) for p in a.pushes] == [[3]]
    assert [list(p.user_ids) for p in b.pushes] == [[1, 2]]
    assert skipped() == skips + 1
    # Sent from the phone: the desktop on gw-a gets it, gw-b only bob's.
    await push_many(bed, from_origin([1, 2], 2, 1, "gw-b", 21))
    assert [list(p.user_ids) for p in a.pushes][-1] == [1]
    assert [list(p.user_ids) for p in b.pushes][-1] == [2]
    assert skipped() == skips + 2


async def test_an_origin_the_table_does_not_know_skips_nothing(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 11)])
    await push_many(bed, from_origin([1], 1, 1, "gw-a", 99))  # an older connection of hers, gone
    assert [list(p.user_ids) for p in a.pushes] == [[1]]
