"""msg_server: the gateway that holds client connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from common.metrics import start_metrics_server
from common.runner import raise_open_file_limit
from msg_server import metrics, route_loss
from msg_server.client import ClientConnection
from msg_server.config import MsgServerConfig
from msg_server.gateway import Gateway

log = logging.getLogger("msg")

CLOSE_GRACE = 3.0
DRAIN_TIMEOUT = 5.0  # requests in flight at SIGTERM: bounded by db_proxy's answer
LINK_WAIT = 10.0


async def serve(
    config: MsgServerConfig, stop: asyncio.Event, announce: Callable[[dict[str, Any]], None]
) -> None:
    if config.advertise_ip in ("127.0.0.1", "localhost") and config.host not in ("127.0.0.1", "localhost"):
        log.warning(
            "advertise_ip is %s: only clients on this machine can reach this gateway; "
            "set msg_server.advertise_ip to an address clients can reach",
            config.advertise_ip,
        )
    # Every client is an open file: the soft limit goes up to the hard one before the
    # gateway sizes itself on it (common.runner did it already when run as a server;
    # again here for a gateway started in-process).
    soft, hard = raise_open_file_limit()
    gateway = Gateway(config)
    warn_open_files(config.max_connections, gateway.max_connections, soft, hard)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ClientConnection(gateway),
        config.host,
        config.port,
        backlog=config.backlog,
        reuse_address=True,
    )
    gateway.port = int(server.sockets[0].getsockname()[1])
    gateway.start()
    metrics.bind(gateway)
    exposed = await start_metrics_server(config.metrics_host, config.metrics_port, lambda: health(gateway))
    reporter = loop.create_task(gateway.report_load())
    route_watch = loop.create_task(route_loss.watch(gateway))
    log.info("msg_server %s listening on %s:%d", config.node_id, config.host, gateway.port)
    # Ready means linked: a gateway that cannot reach db_proxy or the route
    # servers yet still serves, but does not claim to be ready until it can.
    links = gateway.all_links
    linked = await asyncio.gather(*(link.wait_ready(LINK_WAIT) for link in links))
    for link, ok in zip(links, linked, strict=True):
        if not ok:
            log.warning(
                "%s not reachable after %.0fs; serving anyway, it will be retried", link.name, LINK_WAIT
            )
    announce(
        {
            "port": gateway.port,
            "metrics_port": exposed[1] if exposed else None,
            "max_connections": gateway.max_connections,
        }
    )
    try:
        await stop.wait()
    finally:
        # Stop taking clients and leave login_server's pool; stop reading
        # requests, and answer those in flight (a message stored but never
        # acked would be resent and look like a duplicate to its sender);
        # then let the clients go (they reconnect through login_server
        # elsewhere) and only then close the links they needed.
        server.close()
        for task in (reporter, route_watch):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in gateway.login_links:
            await link.stop()
        for conn in list(gateway.connections):
            conn.stop_reading()
        in_flight = list(gateway.requests)
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=DRAIN_TIMEOUT)
            if late:
                log.warning(
                    "%d requests still unanswered after %.0fs; closing anyway", len(late), DRAIN_TIMEOUT
                )
        for conn in list(gateway.connections):
            conn.close()
        deadline = loop.time() + CLOSE_GRACE
        while gateway.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(gateway.connections):
            conn.abort()
        await gateway.stop()
        if exposed is not None:
            await exposed[0].cleanup()


def warn_open_files(setting: int, effective: int, soft: int, hard: int) -> bool:
    """Say clearly when the open-file limit holds fewer clients than max_connections (True if so)."""
    if effective >= setting:
        return False
    log.warning(
        "open-file limit %d (hard %d) is below max_connections %d: this gateway takes at most "
        "%d clients; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) to hold more",
        soft,
        hard,
        setting,
        effective,
    )
    return True


def health(gateway: Gateway) -> dict[str, object]:
    """Healthy while every db_proxy role it needs is linked (log in, look up,
    store) and it can relay (a route server)."""
    roles = gateway.db.health()
    db = all(roles.values())
    route = any(link.connected for link in gateway.route_links)
    return {
        "ok": db and route,
        "node_id": gateway.node_id,
        "db_proxy": db,
        "db_roles": roles,
        "route_server": route,
        "connections": len(gateway.connections),
        "sessions": gateway.logged_in,
    }
