"""A gateway sends each db request to a db_proxy serving its role (msg_server/db_links.py).

Real link servers on loopback stand in for db_proxies: each announces its
roles (DB_PROXY_INFO) and answers DB_LOGIN and DB_SAVE_MSG with its node id,
so a test sees which one a request reached through ``Gateway.db_call``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from common.commands import Rpcs
from common.conversation import conversation_key, shard_of
from common.db_roles import DbRole
from common.link import Link, LinkDown, LinkServer
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands
from msg_server.config import MsgServerConfig
from msg_server.gateway import Gateway
from tests.msg_server.conftest import user_info
from tests.support.save_batches import batch_of


@dataclass
class FakeDbProxy:
    node_id: str
    roles: tuple[str, ...]
    port: int = 0
    server: LinkServer | None = None

    async def info(self, link: Link, req: internal_pb2.DbProxyInfoReq) -> internal_pb2.DbProxyInfo:
        return internal_pb2.DbProxyInfo(node_id=self.node_id, roles=list(self.roles))

    async def login(self, link: Link, req: internal_pb2.DbLoginReq) -> internal_pb2.DbLoginRes:
        # The node id in result_string: the test sees who answered.
        return internal_pb2.DbLoginRes(
            result_code=base_pb2.REFUSE_REASON_NONE, user_info=user_info(1), result_string=self.node_id
        )

    async def save(self, link: Link, req: internal_pb2.DbSaveMsgReq) -> internal_pb2.DbSaveMsgRes:
        return internal_pb2.DbSaveMsgRes(
            msg_id=int(self.node_id.rsplit("-", 1)[1]), create_time=1, duplicate=False
        )

    async def start(self) -> None:
        commands = Commands().rpc(Rpcs.DB_PROXY_INFO, self.info)
        if "login" in self.roles:
            commands = commands.rpc(Rpcs.DB_LOGIN, self.login)
        if "messages" in self.roles:
            commands = commands.rpc(Rpcs.DB_SAVE_MSG, self.save).rpc(Rpcs.DB_SAVE_MSGS, batch_of(self.save))
        self.server = LinkServer(
            {internal_pb2.ROLE_GATEWAY: commands}, role=internal_pb2.ROLE_DB_PROXY, node_id=self.node_id
        )
        self.port = await self.server.listen("127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.close()


def save_req(sender: int, to: int) -> internal_pb2.DbSaveMsgReq:
    req = internal_pb2.DbSaveMsgReq()
    req.msg.from_user_id, req.msg.to_session_id = sender, to
    req.msg.msg_type = base_pb2.MSG_TYPE_SINGLE_TEXT
    req.msg.msg_data = b"x"
    req.msg.msg_id = req.msg.create_time = 1
    req.session_type = base_pb2.SESSION_TYPE_SINGLE
    req.origin.gateway_id, req.origin.conn_id = "msg-t", 1
    return req


def key_of(sender: int, to: int) -> tuple[int, int, int]:
    return conversation_key(base_pb2.SESSION_TYPE_SINGLE, sender, to)


async def saved_by(gateway: Gateway, sender: int, to: int) -> int:
    """The number of the db_proxy (``msg-<n>``) that stored a message."""
    res = await gateway.db_call(key_of(sender, to), Rpcs.DB_SAVE_MSG, save_req(sender, to))
    return res.msg_id


async def logged_in_by(gateway: Gateway, name: str) -> str:
    res = await gateway.db_call(
        name, Rpcs.DB_LOGIN, internal_pb2.DbLoginReq(user_name=name, password_md5="x", peer="t")
    )
    return res.result_string


@pytest.fixture
def proxies() -> Iterator[list[FakeDbProxy]]:
    # In config order: a login-only db_proxy between the two message ones, so
    # the message shard must hash over the message sub-list, not the whole list.
    yield [
        FakeDbProxy("msg-1", ("messages",)),
        FakeDbProxy("login-1", ("login", "directory")),
        FakeDbProxy("msg-2", ("messages",)),
    ]


@pytest.fixture
async def gateway(proxies: list[FakeDbProxy]) -> AsyncIterator[Gateway]:
    for proxy in proxies:
        await proxy.start()
    config = MsgServerConfig(
        node_id="msg-t",
        db_proxies=tuple(f"127.0.0.1:{p.port}" for p in proxies),
        route_servers=(),
        login_servers=(),
        request_timeout=2.0,
    )
    gateway = Gateway(config)
    for link in gateway.db_links:
        link.start()
    for link in gateway.db_links:
        assert await link.wait_ready(5)
    yield gateway
    await gateway.stop()
    for proxy in proxies:
        if proxy.server is not None:
            await proxy.stop()


async def until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_each_request_goes_to_a_db_proxy_serving_its_role(gateway: Gateway) -> None:
    assert await logged_in_by(gateway, "alice") == "login-1"
    assert gateway.db.health() == {"login": True, "directory": True, "messages": True}
    for sender in range(1, 40):
        expected = (1, 2)[shard_of(key_of(sender, 1000), 2)]  # over the message sub-list, config order
        assert await saved_by(gateway, sender, 1000) == expected


async def test_a_role_no_linked_db_proxy_serves_is_refused_at_once(
    gateway: Gateway, proxies: list[FakeDbProxy]
) -> None:
    await proxies[1].stop()
    await until(lambda: not gateway.db.reachable(DbRole.LOGIN))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LinkDown, match="no db_proxy serving login is reachable"):
        await logged_in_by(gateway, "alice")
    assert loop.time() - started < 0.5  # refused, not timed out
    assert gateway.db.health() == {"login": False, "directory": False, "messages": True}
    assert await saved_by(gateway, 1, 2) in (1, 2)  # messages are not affected


async def test_fail_over_within_the_role_and_back(gateway: Gateway, proxies: list[FakeDbProxy]) -> None:
    senders = range(1, 40)
    home = {s: await saved_by(gateway, s, 1000) for s in senders}
    assert set(home.values()) == {1, 2}
    await proxies[0].stop()
    await until(lambda: not gateway.db_links[0].connected)
    assert {await saved_by(gateway, s, 1000) for s in senders} == {2}
    await proxies[0].start()  # the same port
    await until(lambda: gateway.db_links[0].connected)
    assert {s: await saved_by(gateway, s, 1000) for s in senders} == home  # the same shards again


async def test_a_db_proxy_back_with_other_roles_is_learned_again(
    gateway: Gateway, proxies: list[FakeDbProxy]
) -> None:
    login = proxies[1]
    await login.stop()
    await until(lambda: not gateway.db_links[1].connected)
    login.node_id, login.roles = "msg-3", ("messages",)
    await login.start()
    await until(lambda: gateway.db_links[1].connected)
    assert gateway.db.roles[gateway.db_links[1].name] == {DbRole.MESSAGES}
    with pytest.raises(LinkDown, match="serving login"):
        await logged_in_by(gateway, "alice")
    stored_by = {await saved_by(gateway, s, 1000) for s in range(1, 60)}
    assert stored_by == {1, 2, 3}


async def test_a_db_proxy_that_does_not_say_its_roles_is_not_used() -> None:
    # No DB_PROXY_INFO: the link is refused for it (a protocol violation), never made ready.
    server = LinkServer(
        {internal_pb2.ROLE_GATEWAY: Commands()}, role=internal_pb2.ROLE_DB_PROXY, node_id="old"
    )
    port = await server.listen("127.0.0.1", 0)
    config = MsgServerConfig(
        node_id="msg-t", db_proxies=(f"127.0.0.1:{port}",), route_servers=(), login_servers=()
    )
    gateway = Gateway(config)
    gateway.db_links[0].start()
    try:
        assert not await gateway.db_links[0].wait_ready(0.5)
        with pytest.raises(LinkDown, match="serving messages"):
            await saved_by(gateway, 1, 2)
    finally:
        await gateway.stop()
        await server.close()
