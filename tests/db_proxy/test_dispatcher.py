"""PushDispatcher against fake route servers: real LinkServers on 127.0.0.1
answering Rpcs.PUSH_MSG, over the real delivery logs (memory, Redis, JetStream).

Nothing sleeps for an outcome: tests wait on the fake routes' events, or poll
with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from common.commands import OneWays, Rpcs
from common.conversation import ShardKey
from common.delivery import DeliveryLog, Entry, open_delivery_log
from common.errors import Unavailable
from common.link import Identity, Link, LinkServer, LinkSettings, Upstream
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands
from db_proxy.push import PushDispatcher, RouteLinks
from db_proxy.push.dispatcher import GROUP
from tests.delivery.conftest import log_url

DEADLINE_S = 15.0
TTL = 0.6

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("nats", marks=pytest.mark.nats),
]


class FakeRoute:
    """A route server that records the pushes it answers (or holds them unanswered)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.answered: list[internal_pb2.PushMsg] = []
        self.asked: list[internal_pb2.PushMsg] = []
        #: user -> how many more times to name it in retry_user_ids
        self.flaky: dict[int, int] = {}
        self.holding = False  # take pushes, never answer (a frozen gateway behind it)
        self.notices: list[internal_pb2.RouteDeliver] = []
        self.changed = asyncio.Event()
        self._never = asyncio.Event()
        #: PUSH_MSGS frames, by how many pushes each carried
        self.batches: list[int] = []
        table = (
            Commands()
            .rpc(Rpcs.PUSH_MSG, self._push)
            .rpc(Rpcs.PUSH_MSGS, self._push_many)
            .oneway(OneWays.ROUTE_DELIVER, self._notice)
        )
        self.server = LinkServer(
            {internal_pb2.ROLE_DB_PROXY: table},
            role=internal_pb2.ROLE_ROUTE_SERVER,
            node_id=node_id,
        )
        self.port = 0

    async def start(self) -> FakeRoute:
        self.port = await self.server.listen("127.0.0.1", 0)
        return self

    async def close(self) -> None:
        await self.server.close()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def _notice(self, link: Link, notice: internal_pb2.RouteDeliver) -> None:
        self.notices.append(notice)
        self._notify()

    async def _push(self, link: Link, push: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        self.asked.append(push)
        self._notify()
        if self.holding:
            await self._never.wait()
        return self._answer(push)

    async def _push_many(
        self, link: Link, batch: internal_pb2.PushMsgBatch
    ) -> internal_pb2.PushMsgBatchResult:
        self.batches.append(len(batch.pushes))
        if self.holding:  # every push of it taken, none answered
            self.asked.extend(batch.pushes)
            self._notify()
            await self._never.wait()
        # Push by push, as a subclass answers a single PUSH_MSG.
        return internal_pb2.PushMsgBatchResult(
            results=[await self._push(link, push) for push in batch.pushes]
        )

    def _answer(self, push: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        retry = []
        for user in push.user_ids:
            if self.flaky.get(user, 0) > 0:
                self.flaky[user] -= 1
                retry.append(user)
        self.answered.append(push)
        self._notify()
        return internal_pb2.PushMsgResult(retry_user_ids=retry)

    def ids(self) -> list[int]:
        return [p.msg_id for p in self.answered]

    async def wait(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not done():
                await self.changed.wait()


class FixedRoutes:
    """Route servers in a fixed order of preference (the test decides who gets what)."""

    def __init__(self, *routes: FakeRoute) -> None:
        me = Identity(internal_pb2.ROLE_DB_PROXY, f"db-{secrets.token_hex(3)}")
        self.upstreams = [
            Upstream(
                r.node_id,
                [("127.0.0.1", r.port)],
                me,
                settings=LinkSettings(),
                expect_role=internal_pb2.ROLE_ROUTE_SERVER,
            )
            for r in routes
        ]

    def in_order_for(self, key: ShardKey) -> list[Upstream]:
        return [u for u in self.upstreams if u.connected]

    async def start(self) -> None:
        for u in self.upstreams:
            u.start()
        for u in self.upstreams:
            assert await u.wait_ready(DEADLINE_S)

    async def stop(self) -> None:
        for u in self.upstreams:
            await u.stop()


class Logs:
    """Fresh delivery logs on one backend, and more clients of them (as other processes)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.opened: list[tuple[str, DeliveryLog]] = []

    async def new(self, partitions: int = 4) -> DeliveryLog:
        # A long ack wait: a take-over on JetStream must not wait for it.
        return await self._open(log_url(self.backend, partitions, 10_000, ack_wait=30.0))

    async def client_of(self, log: DeliveryLog) -> DeliveryLog:
        if self.backend == "memory":
            return log  # one process's log
        url = next(u for u, opened in self.opened if opened is log)
        return await self._open(url)

    async def _open(self, url: str) -> DeliveryLog:
        log = await open_delivery_log(url)
        self.opened.append((url, log))
        return log

    async def close(self) -> None:
        owners: dict[str, DeliveryLog] = {}
        for url, log in self.opened:
            owners.setdefault(url, log)
        for url, log in self.opened:
            if owners[url] is not log:
                await log.close()
        for log in owners.values():
            delete: Any = getattr(log, "delete", None)
            if delete is not None:
                with contextlib.suppress(Exception):
                    await delete()
            await log.close()


@pytest.fixture(params=BACKENDS)
async def logs(request: pytest.FixtureRequest) -> AsyncIterator[Logs]:
    opened = Logs(str(request.param))
    yield opened
    await opened.close()


@contextlib.asynccontextmanager
async def running(*things: Any) -> AsyncIterator[None]:
    """Stop (in reverse) whatever was started here, however the test ends."""
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                await (thing.stop() if hasattr(thing, "stop") else thing.close())


def dispatcher(log: DeliveryLog, routes: Any, node_id: str, **kw: Any) -> PushDispatcher:
    options: dict[str, Any] = {"lease_ttl": TTL, "push_timeout": 0.5, "give_up": 30.0, "block_s": 0.2}
    options.update(kw)
    return PushDispatcher(log, routes, node_id, **options)


def push_entries(log: DeliveryLog, first: int, count: int, users: tuple[int, ...] = (1, 2)) -> list[Entry]:
    out = []
    for msg_id in range(first, first + count):
        push = internal_pb2.PushMsg(
            user_ids=list(users),
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            from_user_id=1,
            to_id=2,
            msg_id=msg_id,
            body=b"m%d" % msg_id,
            committed_at_us=1,
        )
        out.append(Entry.of((1, 1, 2), msg_id, push.SerializeToString(), log.partitions))
    return out


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not await check():
            await asyncio.sleep(0.02)  # a poll interval, bounded by the deadline


async def pending(log: DeliveryLog) -> int:
    return sum([await log.pending(GROUP, p) for p in range(log.partitions)])


async def test_pushes_go_out_in_order_and_are_acked(logs: Logs) -> None:
    log = await logs.new()
    route = await FakeRoute("route-1").start()
    routes = FixedRoutes(route)
    await routes.start()
    d = dispatcher(log, routes, "db-1")
    async with running(route, routes, d):
        d.start()
        await until(lambda: _true(len(d.held) == log.partitions))  # alone: every partition is its share
        await log.append(push_entries(log, 1, 30))
        await route.wait(lambda: len(route.answered) >= 30)
        assert route.ids() == list(range(1, 31))  # one conversation: in order
        await until(lambda: _is_zero(pending(log)))
        assert d.delivered == 30 and d.dropped == 0


async def test_an_entry_is_acked_only_once_the_route_answered_and_survives_its_death(logs: Logs) -> None:
    log = await logs.new()
    first = await FakeRoute("route-1").start()
    second = await FakeRoute("route-2").start()
    routes = FixedRoutes(first, second)  # route-1 first, route-2 when it fails
    await routes.start()
    d = dispatcher(log, routes, "db-1", push_timeout=5.0)
    async with running(second, first, routes, d):
        d.start()
        await until(lambda: _true(len(d.held) == log.partitions))
        await log.append(push_entries(log, 1, 5))
        await first.wait(lambda: len(first.answered) == 5)
        first.holding = True  # route-1 takes pushes and never answers
        await log.append(push_entries(log, 6, 5))
        await first.wait(lambda: len(first.asked) == 10)
        # The first five are acked (once their answers are in); the next five are not.
        await until(lambda: _equals(pending(log), 5))
        assert second.asked == []
        await first.close()  # killed mid-way: its links drop, the calls fail
        await second.wait(lambda: len(second.answered) >= 5)
        assert first.ids() == [1, 2, 3, 4, 5] and second.ids() == [6, 7, 8, 9, 10]
        await until(lambda: _is_zero(pending(log)))


async def test_users_a_route_names_are_retried_alone(logs: Logs) -> None:
    log = await logs.new()
    route = await FakeRoute("route-1").start()
    route.flaky = {2: 2}  # user 2's gateway misses twice
    routes = FixedRoutes(route)
    await routes.start()
    d = dispatcher(log, routes, "db-1", retry_initial=0.01, retry_cap=0.05)
    async with running(route, routes, d):
        d.start()
        await until(lambda: _true(len(d.held) == log.partitions))
        await log.append(push_entries(log, 1, 1, users=(1, 2, 3)))
        await route.wait(lambda: len(route.answered) == 3)
        assert [list(p.user_ids) for p in route.answered] == [[1, 2, 3], [2], [2]]
        await until(lambda: _is_zero(pending(log)))
        assert d.delivered == 1


async def test_a_recipient_never_answered_is_given_up_and_counted(logs: Logs) -> None:
    if logs.backend != "memory":
        pytest.skip("the same code on every backend; once is enough")
    log = await logs.new()
    route = await FakeRoute("route-1").start()
    route.flaky = {2: 1_000_000}
    routes = FixedRoutes(route)
    await routes.start()
    d = dispatcher(log, routes, "db-1", give_up=0.3, retry_initial=0.01, retry_cap=0.05)
    async with running(route, routes, d):
        d.start()
        await log.append(push_entries(log, 1, 2))
        await until(lambda: _true(d.dropped == 2))  # user 2 of each message
        await until(lambda: _is_zero(pending(log)))
        assert sorted(set(route.ids())) == [1, 2]


async def test_with_no_route_the_partition_waits_then_goes_on_in_order(logs: Logs) -> None:
    if logs.backend != "memory":
        pytest.skip("the same code on every backend; once is enough")
    log = await logs.new(partitions=1)
    route = FakeRoute("route-1")
    await route.start()
    await route.close()  # not there yet: nothing is linked
    d = dispatcher(log, FixedRoutes(), "db-1", retry_initial=0.01, retry_cap=0.05)
    async with running(d):
        d.start()
        await log.append(push_entries(log, 1, 5))
        await until(lambda: _true(len(d.held) == 1))
        await until(lambda: _equals(pending(log), 5))  # taken, none answered
        late = await FakeRoute("route-late").start()
        routes = FixedRoutes(late)
        await routes.start()
        d.routes = routes
        async with running(late, routes):
            await late.wait(lambda: len(late.answered) >= 5)
            assert late.ids() == [1, 2, 3, 4, 5]


async def test_a_dispatcher_that_stops_renewing_is_taken_over(logs: Logs) -> None:
    if logs.backend == "memory":
        pytest.skip("the in-process log is one process's: no other dispatcher to take over")
    log = await logs.new(partitions=2)
    other_log = await logs.client_of(log)
    frozen = await FakeRoute("route-frozen").start()
    frozen.holding = True
    alive = await FakeRoute("route-alive").start()
    routes_a, routes_b = FixedRoutes(frozen), FixedRoutes(alive)
    await routes_a.start()
    await routes_b.start()
    a = dispatcher(log, routes_a, "db-a", push_timeout=30.0)
    b = dispatcher(other_log, routes_b, "db-b")
    async with running(frozen, alive, routes_a, routes_b, a, b):
        a.start()
        await until(lambda: _true(len(a.held) == 2))
        b.start()
        await b.lease_round.wait()
        assert b.held == set()  # a holds both: b waits
        entries = push_entries(log, 1, 6)
        await log.append(entries)
        await frozen.wait(lambda: len(frozen.asked) == 6)
        await until(lambda: _equals(pending(log), 6))
        assert alive.asked == []
        loop = asyncio.get_running_loop()
        died = loop.time()
        await a.halt()  # dies: stops renewing, its leases lapse, its pushes unacked
        await alive.wait(lambda: len(set(alive.ids())) == 6)
        # Its ttl (0.6 s) and a lease round, not JetStream's ack wait (30 s).
        assert loop.time() - died < 3.0
        assert sorted(set(alive.ids())) == [1, 2, 3, 4, 5, 6]
        assert b.held == {0, 1}
        await until(lambda: _is_zero(pending(other_log)))


async def test_a_clean_stop_hands_over_at_once(logs: Logs) -> None:
    if logs.backend == "memory":
        pytest.skip("the in-process log is one process's: no other dispatcher to take over")
    log = await logs.new(partitions=2)
    other_log = await logs.client_of(log)
    slow = await FakeRoute("route-slow").start()
    slow.holding = True
    alive = await FakeRoute("route-alive").start()
    routes_a, routes_b = FixedRoutes(slow), FixedRoutes(alive)
    await routes_a.start()
    await routes_b.start()
    a = dispatcher(log, routes_a, "db-a", push_timeout=30.0)
    b = dispatcher(other_log, routes_b, "db-b")
    async with running(slow, alive, routes_a, routes_b, a, b):
        a.start()
        await until(lambda: _true(len(a.held) == 2))
        await log.append(push_entries(log, 1, 4))
        await slow.wait(lambda: len(slow.asked) == 4)
        b.start()
        await b.lease_round.wait()
        assert b.held == set()
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await a.stop()  # releases its leases, gives back what it held
        assert await log.holders() == {}
        await alive.wait(lambda: len(set(alive.ids())) == 4)
        # Well within a's ttl (0.6 s), let alone JetStream's ack wait (30 s): handed over.
        assert loop.time() - stopped < 1.5


async def test_route_links_share_the_work_among_ready_route_servers() -> None:
    routes = RouteLinks("db-1", [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)], LinkSettings())
    assert routes.in_order_for((1, 1, 2)) == []  # none ready
    for upstream in routes.upstreams:  # as if linked and ready
        upstream.link = _OpenLink()  # type: ignore[assignment]
        upstream._ready.set()
    firsts = {routes.in_order_for((1, a, a + 1))[0].name for a in range(1, 60)}
    assert len(firsts) == 3  # every route server gets conversations
    order = routes.in_order_for((1, 5, 6))
    assert sorted(u.name for u in order) == sorted(u.name for u in routes.upstreams)
    assert routes.in_order_for((1, 5, 6)) == order  # stable


class _OpenLink:
    is_open = True


def _true(value: bool) -> Awaitable[bool]:
    future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


async def _is_zero(count: Awaitable[int]) -> bool:
    return await _equals(count, 0)


async def _equals(count: Awaitable[int], want: int) -> bool:
    try:
        return await count == want
    except Unavailable:
        return False
