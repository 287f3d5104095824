"""Who is offline: the route server names them; the dispatcher hands each over once."""

from __future__ import annotations

from collections.abc import Sequence

from common.link import Link
from common.pb import base_pb2, internal_pb2
from db_proxy.offline_push.build import notification_key
from db_proxy.push.dispatcher import _Recent
from route_server.push import Pusher
from route_server.table import RouteTable, Session
from tests.db_proxy.test_dispatcher import FakeRoute, FixedRoutes, dispatcher, push_entries, running, until


def msg(users: list[int], sender: int = 1) -> internal_pb2.PushMsg:
    return internal_pb2.PushMsg(
        user_ids=users,
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        from_user_id=sender,
        to_id=2,
        msg_id=9,
        body=b"",
    )


async def test_route_server_names_recipients_without_a_session() -> None:
    table = RouteTable()
    table.add(2, Session("gw-1", 1, base_pb2.CLIENT_TYPE_WINDOWS, base_pb2.USER_STATUS_ONLINE))
    # gw-1 has no link: user 2 is pushed again, not offline; 4 may be on a gateway that just dropped.
    pusher = Pusher(table, {}, timeout=0.5, held=lambda users: {u for u in users if u == 4})
    result = await pusher.push(msg([1, 2, 3, 4, 5, 3]))
    assert list(result.retry_user_ids) == [2, 4]
    assert list(result.offline_user_ids) == [3, 5]  # the sender (1) is not its own offline recipient


def test_recent_window_is_bounded() -> None:
    recent = _Recent(size=3, ttl=10.0)
    assert recent.first_time("a", 0.0) and not recent.first_time("a", 1.0)
    for key in "bcd":
        assert recent.first_time(key, 2.0)
    assert recent.first_time("a", 3.0)  # pushed out by size
    assert not recent.first_time("d", 11.0) and recent.first_time("b", 12.5)  # "b" expired


class Sink:
    def __init__(self) -> None:
        self.offered: list[tuple[int, list[int]]] = []

    def offer(self, push: internal_pb2.PushMsg, user_ids: Sequence[int]) -> None:
        self.offered.append((push.msg_id, list(user_ids)))


class OfflineRoute(FakeRoute):
    """Names user 2 offline on every push, and user 3 'retry' twice first (its gateway flaky)."""

    async def _push(self, link: Link, push: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        result = await super()._push(link, push)
        offline = [u for u in push.user_ids if u == 2]
        return internal_pb2.PushMsgResult(retry_user_ids=result.retry_user_ids, offline_user_ids=offline)


async def test_dispatcher_hands_offline_users_over_once() -> None:
    from common.delivery import open_delivery_log

    log = await open_delivery_log("memory://?partitions=2")
    route = await OfflineRoute("route-1").start()
    route.flaky = {3: 2}
    routes = FixedRoutes(route)
    await routes.start()
    sink = Sink()
    d = dispatcher(log, routes, "db-1", offline=sink, retry_initial=0.01)
    async with running(log, route, routes, d):
        d.start()
        entries = push_entries(log, 1, 3, users=(1, 2, 3))
        await log.append(entries)
        await until(lambda: _true(d.delivered >= 3))
        await log.append(entries[:1])  # the same message again (as after a take-over)
        await until(lambda: _true(sum(p.msg_id == 1 and 2 in p.user_ids for p in route.answered) == 2))
        await until(lambda: _true(d.delivered >= 4))
        assert sorted(sink.offered) == [(1, [2]), (2, [2]), (3, [2])]  # once each, retries or not
    push = internal_pb2.PushMsg.FromString(entries[0].payload)
    assert notification_key(push, 2) == "1.1.2.1.2"


async def _true(value: bool) -> bool:
    return value
