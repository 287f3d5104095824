"""db_proxy: login and message storage for the gateways."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.admin import admin_handler
from common.commands import Cmd, Rpcs
from common.config import split_address
from common.conversation import ShardKey, conversation_key, shard_of
from common.link import Identity, Link, LinkServer, LinkSettings, Upstream
from common.metrics import start_metrics_server
from common.pb import base_pb2, internal_pb2, message_pb2
from common.rpc import Commands
from db_proxy import metrics
from db_proxy.admin import DbAdmin
from db_proxy.cache import LoginCache
from db_proxy.config import DbProxyConfig
from db_proxy.directory import DirectoryHandlers
from db_proxy.groups import GroupHandlers
from db_proxy.handlers import Handlers
from db_proxy.metrics import PUSH_BACKLOG, PUSHES_DROPPED
from db_proxy.storage import open_store
from db_proxy.storage.model import SESSION_GROUP, NewMessage, SavedMessage
from db_proxy.workers import MessageWorkers

log = logging.getLogger("db")

REDIS_CONNECTIONS = 64


class RoutePublisher:
    """Pushes stored messages to the route servers, in commit order.

    Every route server knows every gateway, so one copy through one of them
    is enough. The work is shared: a conversation's pushes go through the
    route server its key picks among those linked (:func:`shard_of`), so
    they keep their order while it is up. A push that cannot go out is not
    an error: the message is stored and the recipient finds it on its next sync.
    """

    def __init__(
        self,
        node_id: str,
        addresses: list[tuple[str, int]],
        settings: LinkSettings,
        backlog: PushBacklog | None = None,
    ) -> None:
        me = Identity(internal_pb2.ROLE_DB_PROXY, node_id)
        self.upstreams = [
            Upstream(
                f"route@{h}:{p}",
                [(h, p)],
                me,
                settings=settings,
                expect_role=internal_pb2.ROLE_ROUTE_SERVER,
                on_connected=self._flush_backlog,
            )
            for h, p in addresses
        ]
        # Pushes of messages stored while no route server was linked (a link
        # cut, a route restart): they go out, in order, once one is back,
        # instead of being lost while the store already acked them.
        self.backlog = backlog or PushBacklog()

    def start(self) -> None:
        for upstream in self.upstreams:
            upstream.start()

    async def stop(self) -> None:
        for upstream in self.upstreams:
            await upstream.stop()

    def publish(self, message: NewMessage, saved: SavedMessage, origin: internal_pb2.Origin) -> None:
        push = message_pb2.IMMsgData(
            from_user_id=message.from_user_id,
            to_session_id=message.to_id,
            msg_id=saved.msg_id,
            create_time=saved.create_time,
            msg_type=base_pb2.MsgType.ValueType(message.msg_type),
            msg_data=message.msg_data,
        )
        # The sender is among the recipients: its other devices get a copy.
        # (A trusted group message, the admin API's, may have none at all.)
        recipients = saved.recipients
        if not recipients and message.session_type != SESSION_GROUP:
            recipients = (message.from_user_id, message.to_id)
        if not recipients:
            return
        self.deliver(
            internal_pb2.RouteDeliver(
                user_ids=sorted(set(recipients)),
                command_id=Cmd.MSG_DATA,
                body=push.SerializeToString(),
                origin=origin,
                sent_at_us=int(time.time() * 1_000_000),
            ),
            conversation_key(message.session_type, message.from_user_id, message.to_id),
        )

    def deliver(self, deliver: internal_pb2.RouteDeliver, key: ShardKey | None = None) -> bool:
        """Push a frame through the route server ``key`` picks (default: its first
        recipient) among those linked, or keep it until one is; False if it is
        dropped (no link, and the backlog full)."""
        if key is None:
            key = deliver.user_ids[0] if deliver.user_ids else 0
        body = deliver.SerializeToString()
        if self._drain(self._send) and self._send(key, body):
            return True
        if self.backlog.add(key, body):  # behind what waits already: order holds
            return True
        PUSHES_DROPPED.inc()
        return False

    def _drain(self, send: Callable[[ShardKey, bytes], bool]) -> bool:
        """Send what waits with ``send``, oldest first; True once nothing waits."""
        while self.backlog:
            key, body = self.backlog.peek()
            if not send(key, body):
                return False
            self.backlog.pop()
        return True

    def _send(self, key: ShardKey, body: bytes) -> bool:
        linked = [upstream for upstream in self.upstreams if upstream.connected]
        if not linked:
            return False
        first = shard_of(key, len(linked))
        return any(
            linked[(first + i) % len(linked)].send_raw(Cmd.ROUTE_DELIVER, body) for i in range(len(linked))
        )

    def _flush_backlog(self, link: Link) -> None:
        """A route link is up: what waited goes out first, through this link
        (it is open, but its Upstream counts as connected only after this)."""
        self._drain(lambda key, body: link.send_raw(Cmd.ROUTE_DELIVER, body))


class PushBacklog:
    """Pushes waiting for a route link: bounded in entries and bytes, oldest first."""

    def __init__(self, max_entries: int = 50_000, max_bytes: int = 32 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: collections.deque[tuple[ShardKey, bytes]] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: ShardKey, body: bytes) -> bool:
        """False (nothing kept) when full: the caller counts the drop."""
        if len(self._items) >= self.max_entries or self.bytes + len(body) > self.max_bytes:
            return False
        self._items.append((key, body))
        self.bytes += len(body)
        PUSH_BACKLOG.set(len(self._items))
        return True

    def peek(self) -> tuple[ShardKey, bytes]:
        return self._items[0]

    def pop(self) -> None:
        _, body = self._items.popleft()
        self.bytes -= len(body)
        PUSH_BACKLOG.set(len(self._items))


async def connect_redis(url: str) -> Any | None:
    if not url:
        return None
    import redis.asyncio as aioredis

    # A blocking pool waits for a free connection instead of failing with
    # "too many connections" in a login storm (redis-py's default pool raises).
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_CONNECTIONS, timeout=2.0, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it too
    try:
        await client.ping()
    except Exception as exc:
        # Redis only holds caches: run without it rather than refuse to start.
        log.warning("redis at %s is unreachable (%s); using in-process caches until it is back", url, exc)
    return client


async def serve(
    config: DbProxyConfig, stop: asyncio.Event, announce: Callable[[dict[str, Any]], None]
) -> None:
    # Every resource is released in reverse order however start-up ends: a
    # port in use must not leave the store's threads keeping the process alive.
    async with contextlib.AsyncExitStack() as resources:
        await _serve(config, stop, announce, resources)


async def _serve(
    config: DbProxyConfig,
    stop: asyncio.Event,
    announce: Callable[[dict[str, Any]], None],
    resources: contextlib.AsyncExitStack,
) -> None:
    store = open_store(config.database_url)
    await store.open()
    resources.push_async_callback(store.close)
    version = await store.migrate()
    log.info("storage %s ready (schema version %d)", store.engine, version)
    redis = await connect_redis(config.redis_url)
    if redis is not None:
        resources.push_async_callback(redis.aclose)
    settings = LinkSettings.from_cluster(config.cluster)
    publisher = RoutePublisher(
        config.node_id, [split_address("db_proxy.route_servers", a) for a in config.route_servers], settings
    )
    workers = MessageWorkers(store, publisher.publish, config.workers, config.queue_size, config.batch_size)
    hash_pool = ThreadPoolExecutor(config.hash_threads, thread_name_prefix="hash")
    resources.callback(hash_pool.shutdown, wait=False, cancel_futures=True)
    cache = LoginCache(redis, config.login_cache_ttl, config.login_failure_limit, config.login_failure_window)
    handlers = Handlers(store, workers, cache, hash_pool, config.max_pending_logins)
    gateway_commands = (
        Commands()
        .include(handlers.commands())
        .include(DirectoryHandlers(store).commands())
        .include(GroupHandlers(store).commands())
    )
    admin = DbAdmin(config, store, workers, redis, publisher.deliver)
    server = LinkServer(
        {
            internal_pb2.ROLE_GATEWAY: gateway_commands,
            internal_pb2.ROLE_ADMIN: Commands().rpc(Rpcs.ADMIN_CALL, admin_handler(admin.methods())),
        },
        role=internal_pb2.ROLE_DB_PROXY,
        node_id=config.node_id,
        settings=settings,
    )
    publisher.start()
    resources.push_async_callback(publisher.stop)
    workers.start()
    metrics.bind(workers.queues)
    port = await server.listen(config.host, config.port)
    resources.push_async_callback(server.close)
    # Stop taking links first, then let the workers finish what is queued
    # (their pushes still go out: the publisher stops after them).
    resources.push_async_callback(workers.stop, 5.0)
    resources.callback(_stop_accepting, server)

    async def health() -> dict[str, Any]:
        database = await store.ping()
        return {
            "ok": database,
            "node_id": config.node_id,
            "database": database,
            "queue_depths": workers.depths(),
        }

    exposed = await start_metrics_server(config.metrics_host, config.metrics_port, health)
    if exposed is not None:
        resources.push_async_callback(exposed[0].cleanup)
    log.info("db_proxy %s listening on %s:%d", config.node_id, config.host, port)
    announce({"port": port, "metrics_port": exposed[1] if exposed else None})
    await stop.wait()


def _stop_accepting(server: LinkServer) -> None:
    if server.server is not None:
        server.server.close()
