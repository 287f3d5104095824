"""db_proxy: login and message storage for the gateways."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from common.admin import admin_handler
from common.commands import OneWays, Rpcs
from common.config import redact_urls, split_address
from common.db_roles import ROLE_OF, DbRole
from common.delivery import open_delivery_log
from common.link import LinkServer, LinkSettings
from common.metrics import start_metrics_server
from common.pb import internal_pb2
from common.rpc import Commands
from db_proxy import metrics
from db_proxy.cache import LoginCache, ThrottleCounters
from db_proxy.config import DbProxyConfig
from db_proxy.handlers.admin import DbAdmin
from db_proxy.handlers.login import LoginHandlers
from db_proxy.handlers.table import gateway_commands as all_gateway_commands
from db_proxy.hash_pool import HashPool
from db_proxy.login_throttle import Limits, LoginThrottle, derive_key
from db_proxy.notices import Notices
from db_proxy.offline_push.factory import build_offline_push
from db_proxy.passwords import dummy_hash
from db_proxy.push import LogAppender, PushDispatcher, RouteLinks
from db_proxy.recipients import KnownUsers
from db_proxy.retention import retention_loop
from db_proxy.services.registry import Services
from db_proxy.storage import open_store
from db_proxy.user_rows import UserRows
from db_proxy.workers import MessageWorkers

log = logging.getLogger("db")

REDIS_CONNECTIONS = 64


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
        log.warning(
            "redis at %s is unreachable (%s); using in-process caches until it is back", redact_urls(url), exc
        )
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
    roles = config.served_roles
    # The directory database is always open: the message path reads users
    # from it (a bounded cache). The messages database only where it is used.
    directory = open_store(config.directory_url)
    await directory.open()
    resources.push_async_callback(directory.close)
    version = await directory.migrate()
    log.info("directory storage %s ready (schema version %d)", directory.engine, version)
    store = directory  # the messages database, when it is the same one
    if config.messages_url != config.directory_url and (DbRole.MESSAGES in roles or DbRole.ADMIN in roles):
        store = open_store(config.messages_url)
        await store.open()
        resources.push_async_callback(store.close)
        version = await store.migrate()
        log.info("messages storage %s ready (schema version %d)", store.engine, version)
    redis = await connect_redis(config.redis_url)
    if redis is not None:
        resources.push_async_callback(redis.aclose)
    settings = LinkSettings.from_cluster(config.cluster)
    delivery_log = await open_delivery_log(config.delivery_log)
    resources.push_async_callback(delivery_log.close)
    appender = LogAppender(delivery_log)
    workers = MessageWorkers(
        store,
        appender,
        config.workers,
        config.queue_size,
        config.batch_size,
        max_wait=config.save_max_wait,
        directory=directory,
    )
    rows = UserRows(
        directory,
        ttl=config.login_user_rows_ttl,
        limit=config.login_user_rows_entries,
        max_bytes=config.login_user_rows_bytes,
    )
    routes = RouteLinks(
        config.node_id,
        [split_address("db_proxy.route_servers", a) for a in config.route_servers],
        settings,
        commands=invalidations(workers.recipients, rows),
    )
    offline = None
    if DbRole.MESSAGES in roles and config.offline_push.enabled:  # where the dispatcher runs
        offline = build_offline_push(config.offline_push, directory, store)
    dispatcher = PushDispatcher(
        delivery_log,
        routes,
        config.node_id,
        lease_ttl=config.delivery_lease_ttl,
        push_timeout=config.push_timeout,
        give_up=config.push_give_up,
        offline=offline,
    )
    hash_pool = HashPool(hash_threads(config))
    resources.callback(hash_pool.shutdown, wait=False, cancel_futures=True)
    cache = LoginCache.for_cluster(redis, config.login_cache_ttl, config.cluster.secrets())
    throttle = ThrottleCounters(
        redis, LoginThrottle(throttle_limits(config), derive_key(config.cluster.secrets()))
    )
    resources.callback(throttle.close)
    await asyncio.get_running_loop().run_in_executor(hash_pool, dummy_hash)  # made once, before any login
    services = Services.over(directory, store, workers, config.password_log2_n, rows, hash_pool)
    # An account of that name made before users had kinds (or by hand) is
    # hidden from the directory from now on, as the one made here would be.
    await services.users.mark_system_user(config.system_user)
    notices = Notices(routes.send, config.node_id)
    login = LoginHandlers(
        directory, services.known, cache, hash_pool, config.max_pending_logins, throttle, rows
    )
    info = internal_pb2.DbProxyInfo(node_id=config.node_id, roles=list(roles))

    async def proxy_info(link: object, req: internal_pb2.DbProxyInfoReq) -> internal_pb2.DbProxyInfo:
        return info

    def serving(command: int) -> bool:
        return ROLE_OF.get(command) in roles

    gateway_commands = (
        all_gateway_commands(login, workers, services, notices)
        .only(serving)
        .rpc(Rpcs.DB_PROXY_INFO, proxy_info)
    )
    admin = DbAdmin(config, services, notices, redis, throttle)
    admin_commands = Commands().rpc(Rpcs.ADMIN_CALL, admin_handler(admin.methods())).only(serving)
    server = LinkServer(
        {
            internal_pb2.ROLE_GATEWAY: gateway_commands,
            internal_pb2.ROLE_ADMIN: admin_commands.rpc(Rpcs.DB_PROXY_INFO, proxy_info),
        },
        role=internal_pb2.ROLE_DB_PROXY,
        node_id=config.node_id,
        settings=settings,
    )
    # Stopped in reverse: stop taking links, let the workers finish what is
    # queued (their entries reach the log, or the append backlog, which gets a
    # moment to drain), then stop pushing (the leases are released, so another
    # db_proxy takes over at once) and close the route links.
    routes.start()
    resources.push_async_callback(routes.stop)
    if offline is not None:  # stopped after the dispatcher, which hands it work
        offline.start()
        resources.push_async_callback(offline.stop)
    if DbRole.MESSAGES in roles:  # the delivery log's partitions are pushed where messages are stored
        dispatcher.start()
        resources.push_async_callback(dispatcher.stop)
        await resources.enter_async_context(retention_loop(config, directory, store))  # and pruned
    appender.start()
    resources.push_async_callback(appender.stop, 2.0)
    workers.start()
    metrics.bind(workers.queues)
    port = await server.listen(config.host, config.port)
    resources.push_async_callback(server.close)
    resources.push_async_callback(workers.stop, 5.0)
    resources.callback(_stop_accepting, server)

    async def health() -> dict[str, Any]:
        database = await directory.ping() and (store is directory or await store.ping())
        return {
            "ok": database,
            "node_id": config.node_id,
            "roles": list(roles),
            "database": database,
            "queue_depths": workers.depths(),
            "partitions_held": sorted(dispatcher.held),
            "append_backlog": len(appender.backlog),
            **({"offline_push": offline.status()} if offline is not None else {}),
        }

    exposed = await start_metrics_server(config.metrics_host, config.metrics_port, health)
    if exposed is not None:
        resources.push_async_callback(exposed[0].cleanup)
    log.info("db_proxy %s (%s) listening on %s:%d", config.node_id, ", ".join(roles), config.host, port)
    announce({"port": port, "metrics_port": exposed[1] if exposed else None})
    await stop.wait()


def invalidations(known: KnownUsers, rows: UserRows | None = None) -> Commands:
    """What a route server sends a db_proxy: users deleted or changed (password, disabled)
    through another db_proxy."""

    def forget(link: object, msg: internal_pb2.DbInvalidate) -> None:
        known.forget(msg.user_ids)
        if rows is not None:
            rows.drop(msg.user_ids)

    return Commands().oneway(OneWays.DB_INVALIDATE, forget)


def hash_threads(config: DbProxyConfig) -> int:
    """Password hashing threads: scrypt releases the GIL, so one per core hashes on every core."""
    return config.hash_threads or os.cpu_count() or 1


def throttle_limits(config: DbProxyConfig) -> Limits:
    return Limits(
        failure_limit=config.login_failure_limit,
        window=float(config.login_failure_window),
        delay_max=config.login_delay_max,
        source_limit=config.login_source_limit,
        source_lock=config.login_source_lock,
        user_limit=config.login_user_limit,
        memory=config.login_throttle_memory,
    )


def _stop_accepting(server: LinkServer) -> None:
    if server.server is not None:
        server.server.close()
