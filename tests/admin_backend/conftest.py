"""The admin backend over real internal links: db_proxy and route_server run
in-process (their ``serve()``) on loopback port 0; the test is an admin
(ROLE_ADMIN links, AdminCall), a fake gateway linked to the route server
(registers sessions, records what is pushed to it) and, where a client's
view matters, a gateway link to db_proxy. db_proxy runs on SQLite, and on
MariaDB with Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.commands import Cmd, OneWays, Rpcs, decode_body
from common.errors import ImError
from common.link import Identity, Link, Upstream
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands
from db_proxy.config import DbProxyConfig
from db_proxy.passwords import md5_hex
from db_proxy.server import serve as serve_db
from db_proxy.storage import open_store
from db_proxy.storage.sql import SqlStore
from route_server.config import RouteServerConfig
from route_server.server import RouteServer
from tests.support.databases import fresh_mysql_url, sqlite_url

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
TIMEOUT = 10.0
ENGINES = [pytest.param("sqlite", id="sqlite"), pytest.param("mysql", id="mysql", marks=pytest.mark.mysql)]


async def start_db_proxy(config: DbProxyConfig) -> tuple[asyncio.Event, asyncio.Task[None], int]:
    """Run db_proxy's serve() until it announces its port (its error, if it fails first)."""
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_db(config, stop, ready.set_result))
    waiting: set[asyncio.Future[Any]] = {ready, task}
    await asyncio.wait(waiting, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    return stop, task, int(ready.result()["port"])


async def linked(port: int, role: int, node_id: str, **kwargs: Any) -> Upstream:
    upstream = Upstream(node_id, [("127.0.0.1", port)], Identity(role, node_id), **kwargs)
    upstream.start()
    assert await upstream.wait_ready(TIMEOUT)
    return upstream


async def admin_call(link: Upstream, method: str, args: dict[str, Any]) -> dict[str, Any]:
    call = internal_pb2.AdminCall(method=method, args_json=json.dumps(args))
    result = await link.call(Rpcs.ADMIN_CALL, call, TIMEOUT)
    decoded: dict[str, Any] = json.loads(result.result_json)
    return decoded


async def admin_error(link: Upstream, method: str, args: dict[str, Any]) -> tuple[int, str]:
    """The error code (and message) a call that must fail got."""
    try:
        result = await admin_call(link, method, args)
    except ImError as exc:
        return exc.code, exc.message
    raise AssertionError(f"{method}({args}) succeeded: {result}")


@dataclass
class FakeGateway:
    """A gateway as the route server sees it: sessions, and the frames pushed to it."""

    node_id: str
    link: Upstream | None = None
    frames: asyncio.Queue[tuple[int, Any]] = field(default_factory=asyncio.Queue)

    def commands(self) -> Commands:
        """What a route server may push to a gateway, each kept as (command, message)."""

        def keep(command: int) -> Callable[[Link, Any], None]:
            return lambda link, message: self.frames.put_nowait((command, message))

        async def pushed(link: Link, push: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
            # A stored message (acknowledged push), kept as the RouteDeliver it used to be.
            deliver = internal_pb2.RouteDeliver(
                user_ids=push.user_ids, command_id=Cmd.MSG_DATA, body=push.body
            )
            self.frames.put_nowait((Cmd.ROUTE_DELIVER, deliver))
            return internal_pb2.PushMsgResult()

        async def pushed_many(
            link: Link, batch: internal_pb2.PushMsgBatch
        ) -> internal_pb2.PushMsgBatchResult:
            return internal_pb2.PushMsgBatchResult(results=[await pushed(link, p) for p in batch.pushes])

        return (
            Commands()
            .rpc(Rpcs.PUSH_MSG, pushed)
            .rpc(Rpcs.PUSH_MSGS, pushed_many)
            .oneway(OneWays.ROUTE_DELIVER, keep(Cmd.ROUTE_DELIVER))
            .oneway(OneWays.ROUTE_STATUS_BATCH, keep(Cmd.ROUTE_STATUS_BATCH))
            .oneway(OneWays.ROUTE_KICK, keep(Cmd.ROUTE_KICK))
            .oneway(OneWays.ROUTE_PROFILE_BATCH, keep(Cmd.ROUTE_PROFILE_BATCH))
        )

    def session_up(
        self,
        user_id: int,
        conn_id: int,
        client_type: base_pb2.ClientType.ValueType = base_pb2.CLIENT_TYPE_WINDOWS,
    ) -> None:
        session = internal_pb2.OnlineSession(
            user_id=user_id, conn_id=conn_id, client_type=client_type, status=base_pb2.USER_STATUS_ONLINE
        )
        assert self.link is not None
        assert self.link.send(Cmd.ROUTE_SESSION_UP, internal_pb2.RouteSessionUp(session=session))

    async def next(self, command_id: int, timeout: float = 5.0) -> Any:
        """The next frame of that command sent to this gateway (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                command, message = await self.frames.get()
                if command == command_id:
                    return message

    async def delivered(self, command_id: int, timeout: float = 5.0) -> tuple[list[int], Any]:
        """The next client frame of that command the route server relayed here
        (a RouteDeliver): to whom, and the frame's message."""
        async with asyncio.timeout(timeout):
            while True:
                deliver = await self.next(Cmd.ROUTE_DELIVER, timeout)
                if deliver.command_id == command_id:
                    return list(deliver.user_ids), decode_body(command_id, deliver.body)


@dataclass
class Harness:
    engine: str
    config: DbProxyConfig
    store: SqlStore  # the test's own view of db_proxy's database
    db: Upstream  # ROLE_ADMIN link to db_proxy
    route: Upstream  # ROLE_ADMIN link to route_server
    client: Upstream  # ROLE_GATEWAY link to db_proxy: what a gateway would ask for a client
    gateway: FakeGateway  # linked to route_server

    async def call(self, method: str, **args: Any) -> dict[str, Any]:
        return await admin_call(self.db, method, args)

    async def error(self, method: str, **args: Any) -> int:
        code, _ = await admin_error(self.db, method, args)
        return code

    async def route_call(self, method: str, **args: Any) -> dict[str, Any]:
        return await admin_call(self.route, method, args)

    async def user(self, name: str, password: str = "secret", **fields: Any) -> dict[str, Any]:
        created = await self.call("users.create", name=name, password=password, **fields)
        user: dict[str, Any] = created["user"]
        return user

    async def login(self, name: str, password: str) -> int:
        """db_proxy's answer to a gateway's login request: 0 ok, else TeamTalk's refusal code."""
        req = internal_pb2.DbLoginReq(user_name=name, password_md5=md5_hex(password), peer="test")
        res = await self.client.call(Rpcs.DB_LOGIN, req, TIMEOUT)
        return int(res.result_code)

    async def online(
        self,
        user_id: int,
        conn_id: int,
        client_type: base_pb2.ClientType.ValueType = base_pb2.CLIENT_TYPE_WINDOWS,
    ) -> None:
        """Register a session on the fake gateway and wait until the route server has it."""
        self.gateway.session_up(user_id, conn_id, client_type)
        for _ in range(500):
            sessions = (await self.route_call("online"))["sessions"]
            if any(s["user_id"] == user_id and s["conn_id"] == conn_id for s in sessions):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"session {user_id}/{conn_id} never reached the route server")


@pytest.fixture
def password_log2_n() -> int:
    return 4  # scrypt as cheap as it gets: these tests are not about hashing


@pytest.fixture(params=ENGINES)
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, password_log2_n: int
) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        async with _cluster("sqlite", sqlite_url(tmp_path), "", password_log2_n) as started:
            yield started
    else:
        async with fresh_mysql_url() as url, _cluster("mysql", url, REDIS_URL, password_log2_n) as started:
            yield started


class _cluster:
    """Route server, db_proxy and the links to them; all stopped on exit."""

    def __init__(self, engine: str, database_url: str, redis_url: str, password_log2_n: int) -> None:
        self.engine = engine
        self.database_url = database_url
        self.redis_url = redis_url
        self.password_log2_n = password_log2_n
        self.stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
        self.links: list[Upstream] = []
        self.store: SqlStore | None = None
        self.route_server: RouteServer | None = None
        self.flusher: asyncio.Task[None]

    async def __aenter__(self) -> Harness:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__()
            raise

    async def _start(self) -> Harness:
        # The route server is built here rather than by its serve(), to see
        # when db_proxy's push link to it is up; its links are the real ones.
        self.route_server = RouteServer(RouteServerConfig(node_id="route-t", status_batch_interval=0.02))
        route_port = await self.route_server.listen("127.0.0.1", 0)
        self.flusher = asyncio.create_task(self.route_server.flush_status())
        config = DbProxyConfig(
            node_id="db-t",
            host="127.0.0.1",
            port=0,
            database_url=self.database_url,
            redis_url=self.redis_url,
            route_servers=(f"127.0.0.1:{route_port}",),
            metrics_port=-1,
            workers=2,
            password_log2_n=self.password_log2_n,
        )
        stop, task, db_port = await start_db_proxy(config)
        self.stops.append((stop, task))
        self.store = open_store(self.database_url)
        await self.store.open()
        gateway = FakeGateway("gw-t")
        gateway.link = await self._link(
            route_port,
            internal_pb2.ROLE_GATEWAY,
            gateway.node_id,
            commands=gateway.commands(),
            on_connected=lambda link: link.send(Cmd.ROUTE_SNAPSHOT, internal_pb2.RouteSnapshot()),
        )
        db = await self._link(db_port, internal_pb2.ROLE_ADMIN, "admin-db")
        route = await self._link(route_port, internal_pb2.ROLE_ADMIN, "admin-route")
        client = await self._link(db_port, internal_pb2.ROLE_GATEWAY, "gw-client")
        for _ in range(500):
            roles = {conn.role for conn in self.route_server.connections}
            if {internal_pb2.ROLE_DB_PROXY, internal_pb2.ROLE_GATEWAY} <= roles:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("db_proxy or the fake gateway never linked to the route server")
        return Harness(self.engine, config, self.store, db, route, client, gateway)

    async def _link(self, port: int, role: int, node_id: str, **kwargs: Any) -> Upstream:
        link = await linked(port, role, node_id, **kwargs)
        self.links.append(link)
        return link

    async def __aexit__(self, *exc_info: object) -> None:
        for link in self.links:
            await link.stop()
        for stop, task in reversed(self.stops):
            stop.set()
            await asyncio.wait_for(task, TIMEOUT)
        if self.route_server is not None:
            self.flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.flusher
            await self.route_server.close()
        if self.store is not None:
            await self.store.close()
