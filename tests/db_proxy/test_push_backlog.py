"""Pushes of messages stored while no route server is linked wait, bounded,
and go out in order once one links (the multi-host bed found them dropped
after a db_proxy host's link came back)."""

from __future__ import annotations

import asyncio

from common.commands import OneWays
from common.link import Link, LinkServer
from common.pb import internal_pb2
from common.rpc import Commands
from db_proxy.server import PushBacklog, RoutePublisher


def push(n: int) -> internal_pb2.RouteDeliver:
    return internal_pb2.RouteDeliver(user_ids=[n], command_id=0x0301, body=b"m%d" % n)


async def test_pushes_wait_for_a_route_server_and_keep_their_order() -> None:
    received: list[bytes] = []
    arrived = asyncio.Event()

    def on_deliver(link: Link, msg: internal_pb2.RouteDeliver) -> None:
        received.append(msg.body)
        if len(received) == 8:
            arrived.set()

    route = LinkServer(
        {internal_pb2.ROLE_DB_PROXY: Commands().oneway(OneWays.ROUTE_DELIVER, on_deliver)},
        role=internal_pb2.ROLE_ROUTE_SERVER,
        node_id="route-1",
    )
    port = await route.listen("127.0.0.1", 0)
    publisher = RoutePublisher("db-1", [("127.0.0.1", port)], route.settings)
    try:
        for n in range(5):  # no link yet: they wait
            assert publisher.deliver(push(n))
        assert len(publisher.backlog) == 5
        publisher.start()
        assert await publisher.upstreams[0].wait_ready(5)
        for n in range(5, 8):
            assert publisher.deliver(push(n))
        async with asyncio.timeout(5):
            await arrived.wait()
        assert received == [b"m%d" % n for n in range(8)]
        assert len(publisher.backlog) == 0 and publisher.backlog.bytes == 0
    finally:
        await publisher.stop()
        await route.close()


def test_the_backlog_is_bounded_in_entries_and_bytes() -> None:
    by_count = PushBacklog(max_entries=2, max_bytes=1000)
    assert by_count.add(1, b"a") and by_count.add(2, b"b")
    assert not by_count.add(3, b"c")
    by_size = PushBacklog(max_entries=100, max_bytes=10)
    assert by_size.add(1, b"x" * 6)
    assert not by_size.add(2, b"y" * 6)
    assert len(by_size) == 1 and by_size.bytes == 6
