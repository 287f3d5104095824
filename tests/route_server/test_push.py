"""PUSH_MSG through a route server on real links: a fake db_proxy asks, fake gateways answer."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.commands import Cmd, Rpcs
from common.errors import Unavailable
from common.pb import internal_pb2
from tests.route_server.conftest import (
    ANDROID,
    IOS,
    PUSH_TIMEOUT,
    TIMEOUT,
    WINDOWS,
    Bed,
    dropped,
    online,
    push_msg,
    until,
)


async def test_fan_out_is_narrowed_to_each_gateways_users(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1), online(2, 2)])
    b = await bed.gateway("gw-b", [online(2, 7, ANDROID), online(3, 8)])
    no_session = dropped("no_session")
    assert await bed.push([1, 2, 3, 4], msg_id=5) == []
    assert [(list(p.user_ids), p.msg_id, p.body) for p in a.pushes] == [([1, 2], 5, b"IMMsgData bytes")]
    assert [list(p.user_ids) for p in b.pushes] == [[2, 3]]
    assert dropped("no_session") == no_session + 1  # user 4: offline everywhere, done


async def test_answered_only_after_every_gateway_answered(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)])
    b.answer_gate.clear()
    call = asyncio.create_task(bed.db.call(Rpcs.PUSH_MSG, push_msg([1, 2]), TIMEOUT))
    async with asyncio.timeout(TIMEOUT):
        await b.push_arrived.wait()
    assert a.pushes  # a answered at once, b holds its answer
    done, _ = await asyncio.wait({call}, timeout=PUSH_TIMEOUT / 5)
    assert not done, "the route server answered before gw-b did"
    b.answer_gate.set()
    assert list((await call).retry_user_ids) == []


async def test_a_hung_gateways_users_are_handed_back_within_push_timeout(bed: Bed) -> None:
    bed.settle()
    await bed.gateway("gw-a", [online(1, 1), online(3, 3)])
    b = await bed.gateway("gw-b", [online(2, 1), online(3, 4, ANDROID)])
    b.answer_gate.clear()
    timeouts = dropped("gateway_timeout")
    started = time.monotonic()
    retry = await bed.push([1, 2, 3])
    elapsed = time.monotonic() - started
    # 3 has a session on gw-a too: it is pushed again everywhere; gw-a drops its duplicate.
    assert retry == [2, 3]
    assert PUSH_TIMEOUT <= elapsed < PUSH_TIMEOUT + 0.8, elapsed
    assert dropped("gateway_timeout") == timeouts + 2
    assert [list(p.user_ids) for p in bed.gateways[0].pushes] == [[1, 3]]


async def test_a_frozen_gateway_does_not_hold_the_others(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)])
    b.freeze()  # reads nothing any more: the request sits in its socket
    started = time.monotonic()
    retry = await bed.push([1, 2])
    assert retry == [2]
    assert time.monotonic() - started < PUSH_TIMEOUT + 0.8
    assert [list(p.user_ids) for p in a.pushes] == [[1]]
    assert b.pushes == []


async def test_a_gateways_own_hand_back_is_passed_on(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1), online(2, 2)])
    a.hand_back = {2}
    assert await bed.push([1, 2]) == [2]


async def test_users_of_a_gateway_just_lost_are_retried_not_called_offline(bed: Bed) -> None:
    bed.settle()
    await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)])
    assert b.link is not None
    await b.link.stop()
    await until(lambda: "gw-b" not in bed.server.gateway_links)
    no_link = dropped("no_gateway_link")
    assert await bed.push([1, 2]) == [2]  # gw-b may be alive, relinking or linked elsewhere
    assert dropped("no_gateway_link") == no_link + 1
    bed.clock.now += bed.server.config.settle_time  # past the hold: gw-b has closed its clients
    assert await bed.push([1, 2]) == []


async def test_users_of_a_gateway_that_relinked_are_pushed_again(bed: Bed) -> None:
    bed.settle()
    b = await bed.gateway("gw-b", [online(2, 1)])
    assert b.link is not None
    await b.link.stop()
    await until(lambda: "gw-b" not in bed.server.gateway_links)
    back = await bed.gateway("gw-b", [online(2, 1)])
    assert await bed.push([2]) == []
    assert [list(p.user_ids) for p in back.pushes] == [[2]]


async def test_refused_while_settling(bed: Bed) -> None:
    await bed.gateway("gw-a", [online(1, 1)])
    settling = dropped("settling")
    with pytest.raises(Unavailable, match="settling"):
        await bed.push([1])
    assert dropped("settling") == settling + 1
    assert bed.server.health()["ready"] is False
    bed.settle()
    assert bed.server.health()["ready"] is True
    assert await bed.push([1]) == []


async def test_ready_only_after_every_linked_gateway_sent_its_snapshot(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)], wait=False)  # linked, snapshot held back
    with pytest.raises(Unavailable, match="no snapshot yet from gw-b"):
        await bed.push([1, 2])
    assert a.pushes == []
    b.snapshot_gate.set()
    await until(lambda: bed.snapshot_seen("gw-b"))
    assert await bed.push([1, 2]) == []
    assert [list(p.user_ids) for p in b.pushes] == [[2]]


async def test_notices_stay_one_way(bed: Bed) -> None:
    """ROUTE_DELIVER from db_proxy (presence, group notices): relayed, no answer."""
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    no_session = dropped("no_session")
    deliver = internal_pb2.RouteDeliver(user_ids=[1, 9], command_id=Cmd.MSG_READ_NOTIFY, body=b"x")
    assert bed.db.send(Cmd.ROUTE_DELIVER, deliver)
    relayed = await a.next(Cmd.ROUTE_DELIVER)
    assert list(relayed.user_ids) == [1]
    assert dropped("no_session") == no_session + 1


async def test_login_policy_is_applied_again_when_a_partition_heals(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(8, 1, WINDOWS)])
    b = await bed.gateway("gw-b", [online(7, 5, ANDROID), online(8, 6, IOS)])
    assert b.link is not None
    await b.link.stop()  # gw-b cut off: the route server drops its sessions
    await until(lambda: "gw-b" not in bed.server.gateway_links)
    a.session_up(online(7, 2, IOS))  # the phone reconnected through gw-a meanwhile
    await until(lambda: bed.placed(7) == [("gw-a", 2)])
    # Healed: gw-b relinks and still reports the old phone session.
    healed = await bed.gateway("gw-b", [online(7, 5, ANDROID), online(8, 6, IOS)])
    kick = await healed.next(Cmd.ROUTE_KICK)
    assert (kick.user_id, kick.conn_id) == (7, 5)
    assert bed.placed(7) == [("gw-a", 2)]  # one mobile session
    assert bed.placed(8) == [("gw-a", 1), ("gw-b", 6)]  # a desktop and a phone may both stay
    assert Cmd.ROUTE_KICK not in a.received()
    assert await bed.push([7]) == []
    assert [list(p.user_ids) for p in a.pushes] == [[7]] and healed.pushes == []


async def test_a_route_server_that_lost_every_gateway_settles_again(bed: Bed) -> None:
    """Its host cut off (or it was frozen): the table is empty when links come back."""
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)])
    for gateway in (a, b):
        assert gateway.link is not None
        await gateway.link.stop()
    await until(lambda: not bed.server.gateway_links)
    with pytest.raises(Unavailable, match="no gateway linked"):
        await bed.push([1, 2])
    bed.clock.now += 60.0  # a long cut: the lost gateways' users are no longer held
    bed.settled = False
    back = await bed.gateway("gw-a", [online(1, 1)])
    with pytest.raises(Unavailable, match="joining"):
        await bed.push([1, 2])  # gw-b may be relinking still: 2 is not to be called offline
    await bed.gateway("gw-b", [online(2, 1)])
    bed.settle()
    assert await bed.push([1, 2]) == []
    assert [list(p.user_ids) for p in back.pushes] == [[1]]


async def test_pipelined_pushes_reach_a_gateway_in_the_order_they_came(bed: Bed) -> None:
    bed.settle()
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)])
    calls = [
        asyncio.create_task(bed.db.call(Rpcs.PUSH_MSG, push_msg([1, 2], i), TIMEOUT)) for i in range(1, 51)
    ]
    assert all(list(result.retry_user_ids) == [] for result in await asyncio.gather(*calls))
    for gateway in (a, b):
        assert [p.msg_id for p in gateway.pushes] == list(range(1, 51))
