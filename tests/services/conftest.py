"""A db_proxy's gateway commands and admin methods over the same services,
on SQLite and on MariaDB, with its directory and messages databases the same
one or two apart. What it sends the route servers is recorded (``frames``):
no link, no route server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message

from common.admin import admin_handler
from common.delivery.memory import MemoryDeliveryLog
from common.pb import internal_pb2
from common.rpc import Commands, ReqT, ResT, Rpc
from db_proxy.cache import LoginCache, ThrottleCounters
from db_proxy.config import DbProxyConfig
from db_proxy.handlers.admin import DbAdmin
from db_proxy.handlers.login import LoginHandlers
from db_proxy.login_throttle import Limits, LoginThrottle
from db_proxy.push import LogAppender
from db_proxy.services.registry import Services
from db_proxy.storage import open_store
from db_proxy.storage.sql import SqlStore
from db_proxy.workers import MessageWorkers
from tests.db_proxy.conftest import LINK, ORIGIN, Frame, from_gateway, gateway_commands
from tests.support.databases import fresh_mysql_url, sqlite_url

ENGINES = [pytest.param("sqlite", id="sqlite"), pytest.param("mysql", id="mysql", marks=pytest.mark.mysql)]
PASSWORD = "secret"

W = TypeVar("W", bound=Message)


@dataclass
class Node:
    """One db_proxy's two entry points: a gateway's requests and an admin's calls."""

    directory: SqlStore
    store: SqlStore
    services: Services
    commands: Commands
    admin: DbAdmin
    frames: list[Frame] = field(default_factory=list)

    async def client(self, rpc: Rpc[ReqT, ResT], req: ReqT) -> ResT:
        """A gateway's request, through db_proxy's command table, as the link calls it."""
        route = self.commands.get(rpc.command)
        assert route is not None, f"0x{rpc.command:04x} is no gateway RPC"
        reply = await route.handler(LINK, req)
        assert isinstance(reply, rpc.reply)
        return reply

    async def wrapped(self, rpc: Rpc[W, ResT], wrapper: type[W], req: Message) -> ResT:
        """A client's change as its gateway sends it: with the connection (ORIGIN)."""
        return await self.client(rpc, from_gateway(wrapper, req))

    async def call(self, method: str, **args: Any) -> dict[str, Any]:
        """An admin call, through the same JSON boundary as the admin link's."""
        handler = admin_handler(self.admin.methods())
        res = await handler(LINK, internal_pb2.AdminCall(method=method, args_json=json.dumps(args)))
        result: dict[str, Any] = json.loads(res.result_json)
        return result

    async def user(self, name: str) -> int:
        created = await self.call("users.create", name=name, password=PASSWORD)
        return int(created["user"]["id"])


@contextlib.asynccontextmanager
async def node_on(directory_url: str, messages_url: str) -> AsyncIterator[Node]:
    async with contextlib.AsyncExitStack() as stack:
        directory = await stack.enter_async_context(open_store(directory_url))
        await directory.migrate()
        store = directory
        if messages_url != directory_url:
            store = await stack.enter_async_context(open_store(messages_url))
            await store.migrate()
        hash_pool = ThreadPoolExecutor(1, thread_name_prefix="test-hash")
        stack.callback(hash_pool.shutdown, wait=True)
        workers = MessageWorkers(
            store,
            LogAppender(MemoryDeliveryLog(4)),
            workers=2,
            queue_size=64,
            batch_size=16,
            directory=directory,
        )
        throttle = ThrottleCounters(None, LoginThrottle(Limits(), b"k" * 32))
        login = LoginHandlers(directory, workers.recipients, LoginCache(None, ttl=60), hash_pool, 8, throttle)
        frames: list[Frame] = []
        services, notices, commands = gateway_commands(directory, store, workers, login, frames)
        config = DbProxyConfig(node_id="db-test", password_log2_n=4)
        admin = DbAdmin(config, services, notices, None, throttle)
        workers.start()
        stack.push_async_callback(workers.stop, 5.0)
        yield Node(directory, store, services, commands, admin, frames)


@contextlib.asynccontextmanager
async def database_url(engine: str, tmp_path: Path, name: str = "im") -> AsyncIterator[str]:
    if engine == "sqlite":
        (tmp_path / name).mkdir(exist_ok=True)
        yield sqlite_url(tmp_path / name)
    else:
        async with fresh_mysql_url() as url:
            yield url


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


__all__ = ["ORIGIN", "Node", "database_url", "node_on"]
