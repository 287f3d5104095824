"""A real gateway (``msg_server.server.serve``, in-process) on real sockets, between a
fake route server and a fake db_proxy that are real link servers.

The fake db_proxy logs in anyone named ``u<id>`` as user ``<id>``, stores
messages with consecutive ids per conversation, and answers ``MSG_BY_ID`` from
what it stored (or from what a test put there). The fake route server takes
the gateway's session frames and lets a test send ``Rpcs.PUSH_MSG`` to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.commands import OneWays, Rpcs
from common.conversation import conversation_key, session_type_of
from common.errors import Unavailable
from common.link import Identity, Link, LinkServer
from common.pb import base_pb2, internal_pb2, message_pb2
from common.rpc import Commands
from db_proxy.handlers.messages import MAX_LIST
from msg_server import server as msg_server
from msg_server.config import MsgServerConfig
from msg_server.gateway import Gateway
from tests.support.save_batches import batch_of
from tests.support.ttclient import TTClient

Key = tuple[int, int, int]


def user_info(user_id: int) -> base_pb2.UserInfo:
    return base_pb2.UserInfo(
        user_id=user_id,
        user_gender=0,
        user_nick_name=f"u{user_id}",
        avatar_url="",
        department_id=0,
        email="",
        user_real_name="",
        user_tel="",
        user_domain="",
        status=0,
    )


@dataclass
class FakeDb:
    stored: dict[Key, dict[int, base_pb2.MsgInfo]] = field(default_factory=dict)
    by_id_requests: list[message_pb2.IMGetMsgByIdReq] = field(default_factory=list)
    saves: list[internal_pb2.DbSaveMsgReq] = field(default_factory=list)
    hold_saves: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: saves wait
    save_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hold_by_id: asyncio.Event = field(default_factory=asyncio.Event)
    by_id_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    fail_by_id: bool = False
    fail_by_id_after: int | None = None  # that many MSG_BY_ID answered, then the others fail
    lose_save_answers: bool = False  # saves are stored, then fail (a commit whose answer was lost)

    def __post_init__(self) -> None:
        self.hold_saves.set()
        self.hold_by_id.set()

    def store(self, key: Key, msg_id: int, from_user_id: int, data: bytes) -> base_pb2.MsgInfo:
        info = base_pb2.MsgInfo(
            msg_id=msg_id,
            from_session_id=from_user_id,
            create_time=1_700_000_000 + msg_id,
            msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT if key[0] == 1 else base_pb2.MSG_TYPE_GROUP_TEXT,
            msg_data=data,
        )
        self.stored.setdefault(key, {})[msg_id] = info
        return info

    async def login(self, link: Link, req: internal_pb2.DbLoginReq) -> internal_pb2.DbLoginRes:
        user_id = int(req.user_name.removeprefix("u"))
        return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, user_info=user_info(user_id))

    async def save(self, link: Link, req: internal_pb2.DbSaveMsgReq) -> internal_pb2.DbSaveMsgRes:
        self.saves.append(req)
        self.save_arrived.set()
        await self.hold_saves.wait()
        session_type = session_type_of(req.msg.msg_type)
        assert session_type is not None
        key = conversation_key(session_type, req.msg.from_user_id, req.msg.to_session_id)
        msg_id = max(self.stored.get(key, {}), default=0) + 1
        self.store(key, msg_id, req.msg.from_user_id, req.msg.msg_data)
        if self.lose_save_answers:
            raise Unavailable("storage went away mid-commit")
        return internal_pb2.DbSaveMsgRes(msg_id=msg_id, create_time=1, duplicate=False)

    async def by_id(self, link: Link, req: message_pb2.IMGetMsgByIdReq) -> message_pb2.IMGetMsgByIdRsp:
        self.by_id_requests.append(req)
        self.by_id_arrived.set()
        await self.hold_by_id.wait()
        after = self.fail_by_id_after
        if self.fail_by_id or (after is not None and len(self.by_id_requests) > after):
            raise Unavailable("storage is down")
        key = conversation_key(req.session_type, req.user_id, req.session_id)
        found = self.stored.get(key, {})
        return message_pb2.IMGetMsgByIdRsp(
            user_id=req.user_id,
            session_type=req.session_type,
            session_id=req.session_id,
            # As db_proxy (db_proxy/handlers/messages.py): at most MAX_LIST ids a request.
            msg_list=[found[i] for i in list(req.msg_id_list)[:MAX_LIST] if i in found],
        )

    async def info(self, link: Link, req: internal_pb2.DbProxyInfoReq) -> internal_pb2.DbProxyInfo:
        return internal_pb2.DbProxyInfo(node_id="fake-db", roles=["login", "directory", "messages"])

    def commands(self) -> Commands:
        return (
            Commands()
            .rpc(Rpcs.DB_PROXY_INFO, self.info)
            .rpc(Rpcs.DB_LOGIN, self.login)
            .rpc(Rpcs.DB_SAVE_MSG, self.save)
            .rpc(Rpcs.DB_SAVE_MSGS, batch_of(self.save))
            .rpc(Rpcs.MSG_BY_ID, self.by_id)
        )


@dataclass
class FakeRoute:
    sessions: dict[int, set[int]] = field(default_factory=dict)  # user -> conn ids
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def up(self, link: Link, msg: internal_pb2.RouteSessionUp) -> None:
        self.sessions.setdefault(msg.session.user_id, set()).add(msg.session.conn_id)
        self.changed.set()

    def down(self, link: Link, msg: internal_pb2.RouteSessionDown) -> None:
        self.sessions.get(msg.user_id, set()).discard(msg.conn_id)
        self.changed.set()

    def snapshot(self, link: Link, msg: internal_pb2.RouteSnapshot) -> None:
        self.sessions = {}
        for session in msg.sessions:
            self.sessions.setdefault(session.user_id, set()).add(session.conn_id)
        self.changed.set()

    def commands(self) -> Commands:
        ignore: Any = lambda link, msg: None  # noqa: E731
        return (
            Commands()
            .oneway(OneWays.ROUTE_SNAPSHOT, self.snapshot)
            .oneway(OneWays.ROUTE_SESSION_UP, self.up)
            .oneway(OneWays.ROUTE_SESSION_DOWN, self.down)
            .oneway(OneWays.ROUTE_DELIVER, ignore)
            .oneway(OneWays.ROUTE_KICK_DESKTOP, ignore)
        )


@dataclass
class Bed:
    gateway: Gateway
    port: int
    db: FakeDb
    route: FakeRoute
    route_server: LinkServer
    stop: asyncio.Event
    serving: asyncio.Task[None]
    clients: list[TTClient] = field(default_factory=list)

    @property
    def link(self) -> Link:
        return self.route_server.linked[Identity(internal_pb2.ROLE_GATEWAY, self.gateway.node_id)]

    async def client_without_route(self, user_id: int) -> TTClient:
        """A logged-in client; the route server need not hear of it."""
        client = TTClient()
        await client.connect("127.0.0.1", self.port)
        self.clients.append(client)
        res = await client.login(f"u{user_id}", "pw")
        assert res.result_code == 0
        return client

    async def client(self, user_id: int) -> TTClient:
        client = await self.client_without_route(user_id)
        # The route server knows the session once the gateway told it.
        conn_id = max(c.conn_id for c in self.gateway.sessions[user_id])
        async with asyncio.timeout(5):
            while conn_id not in self.route.sessions.get(user_id, set()):
                self.route.changed.clear()
                await self.route.changed.wait()
        return client

    def conn_id(self, client: TTClient) -> int:
        """The gateway's id of the connection ``client`` holds (its newest, for its user)."""
        return max(c.conn_id for c in self.gateway.sessions[client.user_id])

    async def push(self, push: internal_pb2.PushMsg, timeout: float = 5.0) -> internal_pb2.PushMsgResult:
        return await self.link.call(Rpcs.PUSH_MSG, push, timeout)


def push_1to1(
    sender: int, to: int, msg_id: int, data: bytes | None = None, origin: tuple[str, int] | None = None
) -> internal_pb2.PushMsg:
    body = message_pb2.IMMsgData(
        from_user_id=sender,
        to_session_id=to,
        msg_id=msg_id,
        create_time=1_700_000_000 + msg_id,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=data if data is not None else b"m%d" % msg_id,
    )
    push = internal_pb2.PushMsg(
        user_ids=sorted({sender, to}),
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        from_user_id=sender,
        to_id=to,
        msg_id=msg_id,
        body=body.SerializeToString(),
        committed_at_us=int(time.time() * 1_000_000),
    )
    if origin is not None:
        push.origin.gateway_id, push.origin.conn_id = origin
    return push


class Recording(Gateway):
    """The gateway serve() makes, kept where a test can see it."""

    made: list[Gateway] = []

    def __init__(self, config: MsgServerConfig) -> None:
        super().__init__(config)
        Recording.made.append(self)


@contextlib.asynccontextmanager
async def running(
    monkeypatch: pytest.MonkeyPatch, route_up: bool = True, **config: Any
) -> AsyncIterator[Bed]:
    db, route = FakeDb(), FakeRoute()
    db_server = LinkServer(
        {internal_pb2.ROLE_GATEWAY: db.commands()}, role=internal_pb2.ROLE_DB_PROXY, node_id="db-t"
    )
    route_server = LinkServer(
        {internal_pb2.ROLE_GATEWAY: route.commands()}, role=internal_pb2.ROLE_ROUTE_SERVER, node_id="route-t"
    )
    db_port = await db_server.listen("127.0.0.1", 0)
    route_port = await route_server.listen("127.0.0.1", 0)
    if not route_up:
        await route_server.close()
    Recording.made.clear()
    monkeypatch.setattr(msg_server, "Gateway", Recording)
    monkeypatch.setattr(msg_server, "LINK_WAIT", 1.0)
    settings = {
        "node_id": "msg-t",
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": -1,
        "login_servers": (),
        "route_servers": (f"127.0.0.1:{route_port}",),
        "db_proxies": (f"127.0.0.1:{db_port}",),
        **config,
    }
    stop = asyncio.Event()
    announced: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        msg_server.serve(MsgServerConfig(**settings), stop, lambda info: announced.set_result(info))
    )
    bed: Bed | None = None
    try:
        info = await asyncio.wait_for(asyncio.shield(announced), 10)
        gateway = Recording.made[-1]
        if route_up:
            async with asyncio.timeout(5):
                while Identity(internal_pb2.ROLE_GATEWAY, "msg-t") not in route_server.linked:
                    await asyncio.sleep(0.01)
        bed = Bed(gateway, info["port"], db, route, route_server, stop, serving)
        yield bed
    finally:
        if bed is not None:
            for client in bed.clients:
                await client.close()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 15)
        await route_server.close()
        await db_server.close()
