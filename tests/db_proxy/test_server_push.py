"""db_proxy's serve() end to end: a message saved by a gateway (or sent by the
admin API) is appended to the configured delivery log before the ack and
pushed with Rpcs.PUSH_MSG to a (fake) route server; group-change notices still
go one-way (ROUTE_DELIVER). On every backend of the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.commands import Cmd, Rpcs
from common.delivery import open_delivery_log
from common.link import Identity, Upstream
from common.pb import base_pb2, internal_pb2, message_pb2
from db_proxy.config import DbProxyConfig
from db_proxy.server import serve
from db_proxy.storage import open_store
from tests.db_proxy.test_dispatcher import BACKENDS, FakeRoute
from tests.delivery.conftest import log_url
from tests.support.databases import sqlite_url

TIMEOUT = 10.0
ORIGIN = internal_pb2.Origin(gateway_id="gw-1", conn_id=3)


@contextlib.asynccontextmanager
async def db_proxy(config: DbProxyConfig) -> AsyncIterator[int]:
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, stop, ready.set_result))
    waiting: set[asyncio.Future[Any]] = {ready, task}
    await asyncio.wait(waiting, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield int(ready.result()["port"])
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def linked(port: int, role: int, node_id: str) -> Upstream:
    upstream = Upstream(node_id, [("127.0.0.1", port)], Identity(role, node_id))
    upstream.start()
    assert await upstream.wait_ready(TIMEOUT)
    return upstream


def save(sender: int, to: int, text: bytes, client_msg_id: int) -> internal_pb2.DbSaveMsgReq:
    msg = message_pb2.IMMsgData(
        from_user_id=sender,
        to_session_id=to,
        msg_id=client_msg_id,
        create_time=0,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=text,
    )
    return internal_pb2.DbSaveMsgReq(msg=msg, session_type=base_pb2.SESSION_TYPE_SINGLE, origin=ORIGIN)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_saved_messages_are_pushed_through_the_log(backend: str, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with open_store(url) as store:
        await store.migrate()
        alice = await store.create_user("alice", "h")
        bob = await store.create_user("bob", "h")
        group = (await store.create_group("team", "", alice, 1, [bob])).id
    route = await FakeRoute("route-1").start()
    delivery_log = log_url(backend, 4, 10_000, ack_wait=30.0)
    config = DbProxyConfig(
        node_id="db-push",
        host="127.0.0.1",
        port=0,
        database_url=url,
        route_servers=(f"127.0.0.1:{route.port}",),
        metrics_port=-1,
        delivery_log=delivery_log,
        delivery_lease_ttl=0.6,
    )
    links: list[Upstream] = []
    try:
        async with db_proxy(config) as port:
            gateway = await linked(port, internal_pb2.ROLE_GATEWAY, "gw-1")
            admin = await linked(port, internal_pb2.ROLE_ADMIN, "admin-1")
            links += [gateway, admin]
            acks = [
                await gateway.call(Rpcs.DB_SAVE_MSG, save(alice, bob, b"m%d" % i, 0 if i % 2 else i), TIMEOUT)
                for i in range(1, 5)
            ]
            assert [a.msg_id for a in acks] == [1, 2, 3, 4]
            resend = await gateway.call(Rpcs.DB_SAVE_MSG, save(alice, bob, b"m2", 2), TIMEOUT)
            assert (resend.msg_id, resend.duplicate) == (2, True)
            call = internal_pb2.AdminCall(
                method="send", args_json=json.dumps({"from": "alice", "to_user": "bob", "text": "hello"})
            )
            await admin.call(Rpcs.ADMIN_CALL, call, TIMEOUT)
            await route.wait(lambda: len(route.answered) >= 6)
            # In commit order; the duplicate pushed again (the gateway drops what it has).
            assert route.ids() == [1, 2, 3, 4, 2, 5]
            first = route.answered[0]
            assert sorted(first.user_ids) == sorted([alice, bob]) and first.origin == ORIGIN
            assert message_pb2.IMMsgData.FromString(first.body).msg_data == b"m1"
            assert route.answered[-1].origin.gateway_id == "admin"
            # A group change is a one-way notice, not a stored message.
            members = internal_pb2.AdminCall(
                method="groups.members", args_json=json.dumps({"id": group, "remove": ["bob"]})
            )
            await admin.call(Rpcs.ADMIN_CALL, members, TIMEOUT)
            await route.wait(
                lambda: any(n.command_id == Cmd.GROUP_CHANGE_MEMBER_NOTIFY for n in route.notices)
            )
    finally:
        for link in links:
            await link.stop()
        await route.close()
        cleanup = await open_delivery_log(delivery_log)
        delete: Any = getattr(cleanup, "delete", None)
        if delete is not None:
            await delete()
        await cleanup.close()
