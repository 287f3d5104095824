"""PushDispatcher with PUSH_MSGS (issue 12): what one read returned leaves as few frames as the
window allows, in order, per first-choice route server; users named are retried alone (PUSH_MSG);
a batch no route answers fails over whole, one refused is pushed entry by entry; offline users are
handed over once. Real links to fake route servers, the in-process log; nothing sleeps for an outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from common.conversation import ShardKey
from common.delivery import DeliveryLog, Entry
from common.errors import InvalidArgument
from common.link import Link, Upstream
from common.pb import base_pb2, internal_pb2
from tests.db_proxy.test_dispatcher import (
    FakeRoute,
    FixedRoutes,
    Logs,
    _is_zero,
    _true,
    dispatcher,
    pending,
    push_entries,
    running,
    until,
)


@pytest.fixture
async def log() -> AsyncIterator[DeliveryLog]:
    logs = Logs("memory")
    yield await logs.new(partitions=1)
    await logs.close()


class PickedRoutes(FixedRoutes):
    """Conversation (1, a, b) goes first to route ``a % 2``, then the other."""

    def in_order_for(self, key: ShardKey) -> list[Upstream]:
        ups = [u for u in self.upstreams if u.connected]
        assert isinstance(key, tuple)
        first = key[1] % len(ups) if ups else 0
        return ups[first:] + ups[:first]


class RefusingRoute(FakeRoute):
    """Refuses every PUSH_MSGS (as a route that cannot take it); answers PUSH_MSG."""

    async def _push_many(
        self, link: Link, batch: internal_pb2.PushMsgBatch
    ) -> internal_pb2.PushMsgBatchResult:
        self.batches.append(len(batch.pushes))
        raise InvalidArgument("no batches here")


class OfflineRoute(FakeRoute):
    """Names every recipient but the first as offline."""

    def _answer(self, push: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        result = super()._answer(push)
        result.offline_user_ids.extend(list(push.user_ids)[1:])
        return result


class Sink:
    def __init__(self) -> None:
        self.offered: list[tuple[int, list[int]]] = []

    def offer(self, push: internal_pb2.PushMsg, user_ids: Sequence[int]) -> None:
        self.offered.append((push.msg_id, list(user_ids)))


def conversation_entries(log: DeliveryLog, a: int, first: int, count: int) -> list[Entry]:
    out = []
    for msg_id in range(first, first + count):
        push = internal_pb2.PushMsg(
            user_ids=[a, a + 1000],
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            from_user_id=a,
            to_id=a + 1000,
            msg_id=msg_id,
            body=b"m%d" % msg_id,
        )
        out.append(Entry.of((1, a, a + 1000), msg_id, push.SerializeToString(), log.partitions))
    return out


async def started(*routes: FakeRoute, picked: bool = False) -> FixedRoutes:
    for route in routes:
        await route.start()
    fixed = PickedRoutes(*routes) if picked else FixedRoutes(*routes)
    await fixed.start()
    return fixed


async def test_a_read_leaves_as_few_frames_in_order(log: DeliveryLog) -> None:
    route = FakeRoute("route-1")
    routes = await started(route)
    d = dispatcher(log, routes, "db-1")
    await log.append(push_entries(log, 1, 40))  # there before the first read
    async with running(route, routes, d):
        d.start()
        await route.wait(lambda: len(route.answered) >= 40)
        assert route.ids() == list(range(1, 41))
        assert sum(route.batches) == 40 and len(route.batches) <= 2  # one read, the window's worth
        await until(lambda: _is_zero(pending(log)))
        assert d.delivered == 40 and d.dropped == 0


async def test_the_window_bounds_what_is_unanswered(log: DeliveryLog) -> None:
    route = FakeRoute("route-1")
    route.holding = True
    routes = await started(route)
    d = dispatcher(log, routes, "db-1", window=8, batch=64)
    await log.append(push_entries(log, 1, 30))
    async with running(route, routes, d):
        d.start()
        await route.wait(lambda: len(route.asked) >= 8)
        await d.lease_round.wait()
        await d.lease_round.wait()  # time for more, were the window not full
        assert len(route.asked) == 8 and route.batches == [8]


async def test_frames_are_bounded_in_recipients(log: DeliveryLog) -> None:
    route = FakeRoute("route-1")
    routes = await started(route)
    d = dispatcher(log, routes, "db-1", batch_users=6)  # 3 messages of 2 recipients
    await log.append(push_entries(log, 1, 10))
    async with running(route, routes, d):
        d.start()
        await route.wait(lambda: len(route.answered) >= 10)
        assert route.ids() == list(range(1, 11))
        assert max(route.batches) == 3


async def test_each_route_gets_its_conversations_in_one_frame_in_order(log: DeliveryLog) -> None:
    even, odd = FakeRoute("route-even"), FakeRoute("route-odd")
    routes = await started(even, odd, picked=True)
    d = dispatcher(log, routes, "db-1")
    entries = []
    for msg_id in range(1, 11):  # interleaved: conversation of 2 (even) and of 3 (odd)
        entries += conversation_entries(log, 2, msg_id, 1) + conversation_entries(log, 3, msg_id, 1)
    await log.append(entries)
    async with running(even, odd, routes, d):
        d.start()
        await even.wait(lambda: len(even.answered) >= 10)
        await odd.wait(lambda: len(odd.answered) >= 10)
        assert [(p.from_user_id, p.msg_id) for p in even.answered] == [(2, i) for i in range(1, 11)]
        assert [(p.from_user_id, p.msg_id) for p in odd.answered] == [(3, i) for i in range(1, 11)]
        assert even.batches == [10] and odd.batches == [10]
        await until(lambda: _is_zero(pending(log)))


async def test_named_users_are_retried_alone_without_holding_the_batch(log: DeliveryLog) -> None:
    route = FakeRoute("route-1")
    route.flaky = {2: 1}  # msg 1's user 2 misses once
    routes = await started(route)
    d = dispatcher(log, routes, "db-1", retry_initial=0.01, retry_cap=0.05)
    await log.append(push_entries(log, 1, 3))
    async with running(route, routes, d):
        d.start()
        await route.wait(lambda: len(route.answered) >= 4)
        assert [(p.msg_id, list(p.user_ids)) for p in route.answered] == [
            (1, [1, 2]),
            (2, [1, 2]),
            (3, [1, 2]),
            (1, [2]),  # alone, as a single PUSH_MSG
        ]
        assert route.batches == [3]
        await until(lambda: _is_zero(pending(log)))
        assert d.delivered == 3


async def test_a_batch_fails_over_whole_to_the_next_route(log: DeliveryLog) -> None:
    first, second = FakeRoute("route-1"), FakeRoute("route-2")
    routes = await started(first, second)
    d = dispatcher(log, routes, "db-1", push_timeout=5.0)
    async with running(second, first, routes, d):
        d.start()
        await until(lambda: _true(len(d.held) == log.partitions))
        first.holding = True
        await log.append(push_entries(log, 1, 6))
        await first.wait(lambda: len(first.asked) == 6)
        await first.close()  # its link drops: the batch goes to route-2, in order
        await second.wait(lambda: len(second.answered) >= 6)
        assert second.ids() == [1, 2, 3, 4, 5, 6]
        await until(lambda: _is_zero(pending(log)))
        assert d.delivered == 6 and d.dropped == 0


async def test_a_batch_refused_whole_is_pushed_entry_by_entry(log: DeliveryLog) -> None:
    route = RefusingRoute("route-1")
    routes = await started(route)
    d = dispatcher(log, routes, "db-1")
    await log.append(push_entries(log, 1, 4))
    async with running(route, routes, d):
        d.start()
        await route.wait(lambda: len(route.answered) >= 4)
        assert route.batches == [4]
        assert route.ids() == [1, 2, 3, 4]  # each alone, in order
        await until(lambda: _is_zero(pending(log)))
        assert d.delivered == 4 and d.dropped == 0


async def test_offline_users_of_a_batch_are_handed_over_once(log: DeliveryLog) -> None:
    route = OfflineRoute("route-1")
    routes = await started(route)
    sink = Sink()
    d = dispatcher(log, routes, "db-1", offline=sink)
    entries = push_entries(log, 1, 3)
    await log.append(entries)
    async with running(route, routes, d):
        d.start()
        await route.wait(lambda: len(route.answered) >= 3)
        await until(lambda: _is_zero(pending(log)))
        await log.append(entries[:1])  # msg 1 appended again (a resend): no second notification
        await route.wait(lambda: len(route.answered) >= 4)
        await until(lambda: _is_zero(pending(log)))
        assert sink.offered == [(1, [2]), (2, [2]), (3, [2])]


async def test_an_undecodable_entry_is_dropped_alone(log: DeliveryLog) -> None:
    route = FakeRoute("route-1")
    routes = await started(route)
    d = dispatcher(log, routes, "db-1")
    bad = Entry.of((1, 1, 2), 2, b"\xff\xff not a PushMsg", log.partitions)
    good = push_entries(log, 1, 3)
    await log.append([good[0], bad, good[1], good[2]])
    async with running(route, routes, d):
        d.start()
        await route.wait(lambda: len(route.answered) >= 3)
        await until(lambda: _is_zero(pending(log)))
        assert route.ids() == [1, 2, 3] and d.dropped == 1 and d.delivered == 3
