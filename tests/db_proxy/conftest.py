"""db_proxy's gateway commands on a real store (SQLite, and MariaDB/MySQL),
called through their typed command tables as the link would call them:
no link, no route server. Stored messages are appended to an in-process
delivery log, which :meth:`DbProxy.pushes` reads."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import pytest
from google.protobuf.message import Message

from common.conversation import ShardKey
from common.delivery.memory import MemoryDeliveryLog
from common.link import Link
from common.pb import internal_pb2
from common.rpc import Commands, ReqT, ResT, Rpc
from db_proxy.cache import LoginCache, ThrottleCounters
from db_proxy.handlers.login import LoginHandlers
from db_proxy.handlers.table import gateway_commands as all_gateway_commands
from db_proxy.login_throttle import Limits, LoginThrottle
from db_proxy.notices import Notices
from db_proxy.passwords import hash_password, md5_hex
from db_proxy.push import LogAppender
from db_proxy.services.registry import Services
from db_proxy.storage import open_store
from db_proxy.storage.sql import SqlStore
from db_proxy.workers import MessageWorkers
from tests.support.databases import fresh_mysql_url, sqlite_url
from tests.support.ttclient import length_delimited

ENGINES = [pytest.param("sqlite", id="sqlite"), pytest.param("mysql", id="mysql", marks=pytest.mark.mysql)]
PASSWORD = "secret"
# The handlers never look at the link a request came on.
LINK = cast(Link, None)
#: The connection the test's client requests come from.
ORIGIN = internal_pb2.Origin(gateway_id="gw-test", conn_id=7)

#: A frame db_proxy sent a route server: command, message, shard key.
Frame = tuple[int, Message, ShardKey]

W = TypeVar("W", bound=Message)


def from_gateway(wrapper: type[W], req: Message, origin: internal_pb2.Origin = ORIGIN) -> W:
    """``req`` as a gateway sends it (DbGroupCreateReq and the like: with its
    connection), parsed from the wire as db_proxy does, so that a raw (not
    UTF-8) string field of ``req`` stays raw."""
    body = length_delimited(1, origin.SerializeToString()) + length_delimited(2, req.SerializeToString())
    return wrapper.FromString(body)


@dataclass
class DbProxy:
    """db_proxy's gateway command tables over one store, with a few users and a group."""

    store: SqlStore
    workers: MessageWorkers
    handlers: LoginHandlers
    commands: Commands
    log: MemoryDeliveryLog
    services: Services
    frames: list[Frame] = field(default_factory=list)  # what was sent to the route servers
    alice: int = 0
    bob: int = 0
    group: int = 0  # a normal group of alice (its creator) and bob
    seen: list[internal_pb2.PushMsg] = field(default_factory=list)

    async def call(self, rpc: Rpc[ReqT, ResT], req: ReqT) -> ResT:
        """What the link does with a request: its table's handler, and a reply of the declared type."""
        reply = await self.dispatch(rpc.command, req)
        assert isinstance(reply, rpc.reply)
        return reply

    async def dispatch(self, command: int, req: Message) -> Message:
        route = self.commands.get(command)
        assert route is not None and route.reply is not None, f"0x{command:04x} is no gateway RPC"
        reply: Message = await route.handler(LINK, req)
        assert type(reply) is route.reply, f"0x{command:04x} answered {type(reply).__name__}"
        reply.SerializeToString()  # as the link will: every required field set, all text UTF-8
        return reply

    async def pushes(self) -> list[internal_pb2.PushMsg]:
        """Every push appended so far, in append order per partition (a group of the test's own)."""
        got = await self.log.consume("test", "t", list(range(self.log.partitions)), 10_000, block_s=0)
        self.seen.extend(internal_pb2.PushMsg.FromString(d.entry.payload) for d in got)
        return list(self.seen)


def gateway_commands(
    directory: SqlStore, store: SqlStore, workers: MessageWorkers, login: LoginHandlers, frames: list[Frame]
) -> tuple[Services, Notices, Commands]:
    """db_proxy's services, its notices and every gateway command table, as
    server.py builds them; the route server frames go to ``frames``."""
    services = Services.over(directory, store, workers, password_log2_n=4)

    def send(command_id: int, message: Message, key: ShardKey) -> bool:
        frames.append((command_id, message, key))
        return True

    notices = Notices(send, "db-test")
    return services, notices, all_gateway_commands(login, workers, services, notices)


@contextlib.asynccontextmanager
async def db_proxy_on(url: str) -> AsyncIterator[DbProxy]:
    async with open_store(url) as store:
        await store.migrate()
        hash_pool = ThreadPoolExecutor(2, thread_name_prefix="test-hash")
        cache = LoginCache(None, ttl=60)
        throttle = ThrottleCounters(
            None, LoginThrottle(Limits(failure_limit=10**6, source_limit=10**6, user_limit=10**6), b"k" * 32)
        )
        log = MemoryDeliveryLog(4)
        workers = MessageWorkers(store, LogAppender(log), workers=2, queue_size=64, batch_size=16)
        login = LoginHandlers(
            store, workers.recipients, cache, hash_pool, max_pending_logins=64, throttle=throttle
        )
        frames: list[Frame] = []
        services, _, commands = gateway_commands(store, store, workers, login, frames)
        proxy = DbProxy(store, workers, login, commands, log, services, frames)
        password_hash = hash_password(md5_hex(PASSWORD), log2_n=4)  # cheap: not a hashing test
        proxy.alice = await store.create_user("alice", password_hash, nick="Alice")
        proxy.bob = await store.create_user("bob", password_hash)
        proxy.group = (await store.create_group("team", "", proxy.alice, 1, [proxy.bob])).id
        workers.start()
        try:
            yield proxy
        finally:
            await workers.stop(timeout=5.0)
            hash_pool.shutdown(wait=True)


@contextlib.asynccontextmanager
async def database_url(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    if engine == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        async with fresh_mysql_url() as url:
            yield url


@pytest.fixture(params=ENGINES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DbProxy]:
    async with database_url(request.param, tmp_path) as url, db_proxy_on(url) as proxy:
        yield proxy


M = TypeVar("M", bound=Message)


def with_raw(message: M, **raw: bytes) -> M:
    """``message`` with string fields set to raw bytes on the wire (invalid
    UTF-8, which protobuf will not set), parsed back as a peer's would be."""
    body = message.SerializeToString()
    for name, value in raw.items():
        # The last value of a field on the wire wins: this one.
        body += length_delimited(message.DESCRIPTOR.fields_by_name[name].number, value)
    parsed = type(message)()
    parsed.ParseFromString(body)
    return parsed
