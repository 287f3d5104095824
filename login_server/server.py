"""The login_server process: HTTP discovery for clients, a link port for gateways.

Clients ``GET /msg_server`` (TeamTalk's clients append things to the path, and
TeamTalk matches only the prefix) and get the least-loaded gateway in exactly
the JSON TeamTalk's login server sends. Gateways link to ``gateway_port``,
register with ``GatewayInfo`` and report ``GatewayLoad``; a gateway is handed
out only while its link is up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from common.commands import OneWays
from common.link import Link, LinkServer, LinkSettings
from common.metrics import start_metrics_server
from common.pb import internal_pb2
from common.rpc import Commands
from common.throttle import Throttle
from login_server.admin.api import setup_admin
from login_server.admin.backends import Backends, LinkBackends
from login_server.balancer import Balancer, Gateway, PickError
from login_server.config import LoginServerConfig
from login_server.console import setup_console
from login_server.metrics import DISCOVERIES, GATEWAYS

log = logging.getLogger("login_server")

# TeamTalk's wording is Chinese; the codes are what clients act on.
FAILURE_MESSAGES = {
    PickError.NO_GATEWAY: "no msg server available",
    PickError.ALL_FULL: "all msg servers are full",
}
# TeamTalk answers text/html. JSON parsers ignore the type, but iOS code often
# restricts AFNetworking's accepted types to the one the server has always sent.
DISCOVERY_CONTENT_TYPE = "text/html"
SHUTDOWN_TIMEOUT = 3.0  # per listener: in-flight HTTP answers, link close

FAILURE_LOG_INTERVAL = 10.0  # seconds; a login storm against a full cluster


BALANCER_KEY = web.AppKey("balancer", Balancer)
CONFIG_KEY = web.AppKey("config", LoginServerConfig)
FAILURE_LOG_KEY = web.AppKey("failure_log", Throttle)


def discovery_reply(result: Gateway | PickError, config: LoginServerConfig) -> dict[str, Any]:
    """The JSON object TeamTalk's login server answers ``/msg_server`` with.

    On failure TeamTalk sends only ``code`` and ``msg``; so do we, since a
    client that sees a ``priorIP`` key might try it.
    """
    if isinstance(result, PickError):
        return {"code": int(result), "msg": FAILURE_MESSAGES[result]}
    return {
        "code": 0,
        "msg": "",
        "priorIP": result.prior_ip,
        "backupIP": result.backup_ip,
        "port": str(result.port),  # a string on the wire: clients parse it as one
        "msfsPrior": config.msfs_prior,
        "msfsBackup": config.msfs_backup or config.msfs_prior,
        "discovery": config.discovery_url,
    }


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# Prebuilt for the hot path: a discovery answer's headers and its metric counters.
DISCOVERY_HEADERS = {
    "Content-Type": f"{DISCOVERY_CONTENT_TYPE}; charset=utf-8",
    # An answer cached by a proxy would send everyone to one gateway.
    "Cache-Control": "no-store",
}
_DISCOVERED = DISCOVERIES.labels("ok")
#: Answers kept, by what they say (a gateway's addresses and port): a few per gateway.
REPLY_CACHE_ENTRIES = 256
REPLIES_KEY = web.AppKey("discovery_replies", dict)


def _reply_body(app: web.Application, result: Gateway | PickError) -> bytes:
    """The JSON of ``discovery_reply``, made once per distinct answer (config never changes)."""
    config = app[CONFIG_KEY]
    if isinstance(result, PickError):
        return _json_bytes(discovery_reply(result, config))
    replies: dict[tuple[str, str, int], bytes] = app[REPLIES_KEY]
    key = (result.prior_ip, result.backup_ip, result.port)
    body = replies.get(key)
    if body is None:
        if len(replies) >= REPLY_CACHE_ENTRIES:
            replies.clear()  # gateways come and go rarely: start over
        body = replies[key] = _json_bytes(discovery_reply(result, config))
    return body


async def handle_msg_server(request: web.Request) -> web.Response:
    result = request.app[BALANCER_KEY].pick()
    if isinstance(result, PickError):
        DISCOVERIES.labels(result.name.lower()).inc()
        throttle = request.app[FAILURE_LOG_KEY]
        if throttle.ready():
            log.warning("discovery from %s: %s%s", request.remote, FAILURE_MESSAGES[result], throttle.more())
    else:
        _DISCOVERED.inc()
    return web.Response(body=_reply_body(request.app, result), headers=DISCOVERY_HEADERS)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "gateways": len(request.app[BALANCER_KEY])})


async def handle_gateways(request: web.Request) -> web.Response:
    now, wall = time.monotonic(), time.time()
    rows = []
    for gateway in request.app[BALANCER_KEY].gateways():
        rows.append(
            {
                "node_id": gateway.node_id,
                "prior_ip": gateway.prior_ip,
                "backup_ip": gateway.backup_ip,
                "port": gateway.port,
                "connections": gateway.connections,
                "handed_out": gateway.handed_out,
                "max_connections": gateway.max_connections,
                "uptime": gateway.uptime(now, wall),
                "registered_for": max(0, round(now - gateway.registered_at)),
                "last_report_age": round(max(0.0, now - gateway.last_report), 1),
                "peer": gateway.peer,
            }
        )
    return web.json_response(rows)


ADMIN_MAX_BODY = 4 << 20  # a chunk of 1,000 imported users with long profiles


def build_app(
    config: LoginServerConfig, balancer: Balancer, admin: Backends | None = None
) -> web.Application:
    """The HTTP app; the admin API and the web console are on only with a token and its backends."""
    enabled = bool(config.admin_token) and admin is not None
    app = web.Application(client_max_size=ADMIN_MAX_BODY if enabled else 1 << 20)
    app[CONFIG_KEY] = config
    app[BALANCER_KEY] = balancer
    app[FAILURE_LOG_KEY] = Throttle(FAILURE_LOG_INTERVAL)
    app[REPLIES_KEY] = {}
    # TeamTalk matches the "/msg_server" prefix only; clients add suffixes.
    for method in ("GET", "POST"):
        app.router.add_route(method, "/msg_server{tail:.*}", handle_msg_server)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/gateways", handle_gateways)
    GATEWAYS.set_function(lambda: len(balancer))
    if enabled:
        assert admin is not None
        api = setup_admin(app, config.admin_token, admin, balancer)
        setup_console(app, config.admin_token, api)
    return app


@dataclass(slots=True)
class _LinkState:
    """Per gateway link: a load report may arrive before GatewayInfo."""

    connections: int = 0
    registered: bool = False


class GatewayLinks(LinkServer):
    """Accepts gateway links and keeps the balancer in step with them."""

    def __init__(
        self,
        balancer: Balancer,
        *,
        node_id: str = "login",
        settings: LinkSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            {
                internal_pb2.ROLE_GATEWAY: Commands()
                .oneway(OneWays.GATEWAY_INFO, self._on_info)
                .oneway(OneWays.GATEWAY_LOAD, self._on_load)
            },
            role=internal_pb2.ROLE_LOGIN_SERVER,
            node_id=node_id,
            settings=settings,
        )
        self.balancer = balancer
        self.clock = clock

    def on_hello(self, conn: Link) -> None:
        # The link layer admits one link per node id (a second gateway
        # claiming "msg-1" is refused), so a registration cannot be taken over.
        conn.state = _LinkState()

    def on_goodbye(self, conn: Link) -> None:
        if self.balancer.remove(conn.node_id, owner=conn):
            conn.log.info("gateway %s unregistered (link closed)", conn.node_id)

    def _on_info(self, conn: Link, message: internal_pb2.GatewayInfo) -> None:
        state: _LinkState = conn.state
        if not message.prior_ip or not 0 < message.port <= 65535:
            conn.log.warning(
                "gateway %s sent an unusable address %r port %d; not handing it out",
                conn.node_id,
                message.prior_ip,
                message.port,
            )
            return
        replaced = self.balancer.register(
            conn.node_id,
            owner=conn,
            prior_ip=message.prior_ip,
            backup_ip=message.backup_ip,
            port=message.port,
            max_connections=message.max_connections,
            started_at=message.started_at,
            now=self.clock(),
            connections=state.connections,
            peer=conn.peer,
        )
        if replaced is not None:
            # Usually the same gateway reconnecting before its old link timed
            # out; two gateways configured with one node_id look the same and
            # keep replacing each other, so say it loudly.
            conn.log.warning(
                "gateway %s registered again; replacing the registration from %s",
                conn.node_id,
                replaced.peer,
            )
        if not state.registered:
            conn.log.info(
                "gateway %s registered: %s:%d (backup %s), max %d connections",
                conn.node_id,
                message.prior_ip,
                message.port,
                message.backup_ip or message.prior_ip,
                message.max_connections,
            )
        if _is_loopback(message.prior_ip):
            conn.log.warning(
                "gateway %s advertises %s: only clients on its own machine can reach it "
                "(set msg_server.advertise_ip)",
                conn.node_id,
                message.prior_ip,
            )
        state.registered = True

    def _on_load(self, conn: Link, message: internal_pb2.GatewayLoad) -> None:
        state: _LinkState = conn.state
        state.connections = message.connections
        if state.registered:
            self.balancer.report_load(
                conn.node_id, owner=conn, connections=message.connections, now=self.clock()
            )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


async def serve(
    config: LoginServerConfig,
    stop: asyncio.Event,
    announce: Callable[[dict[str, Any]], None],
) -> None:
    """Serve until ``stop`` is set, then close both listeners (bounded)."""
    balancer = Balancer()
    exposed: tuple[web.AppRunner, int] | None = None
    settings = LinkSettings.from_cluster(config.cluster)
    links = GatewayLinks(balancer, node_id=config.node_id, settings=settings)
    admin = LinkBackends.from_config(config) if config.admin_token else None
    # No access log: at thousands of logins per second it would be most of
    # the process's work; failures are logged by the handler.
    runner = web.AppRunner(
        build_app(config, balancer, admin), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    if admin is not None:
        admin.start()
    try:
        site = web.TCPSite(
            runner,
            config.host,
            config.http_port,
            backlog=config.backlog,
        )
        await site.start()
        gateway_port = await links.listen(config.gateway_host, config.gateway_port, backlog=config.backlog)
        log.info("listening on %s: HTTP %d, gateway links %d", config.host, site.port, gateway_port)
        if admin is None:
            log.info("admin API off (login_server.admin_token is not set)")
        else:
            log.info("admin API on at /admin/v1, web console at /console")
        # /metrics apart from the client-facing port: clients need not see it.
        exposed = await start_metrics_server(
            config.metrics_host, config.metrics_port, lambda: {"ok": True, "gateways": len(balancer)}
        )
        announce(
            {
                "http_port": site.port,
                "gateway_port": gateway_port,
                "metrics_port": exposed[1] if exposed else None,
            }
        )
        await stop.wait()
        log.info("stopping")
    finally:
        await _shutdown(runner, links)
        if admin is not None:
            await admin.stop()
        if exposed is not None:
            await exposed[0].cleanup()


async def _shutdown(runner: web.AppRunner, links: LinkServer) -> None:
    # HTTP first: a client refused here retries another login server, and
    # while HTTP drains the gateways are still registered to answer it.
    try:
        await asyncio.wait_for(runner.cleanup(), SHUTDOWN_TIMEOUT + 1)
    except TimeoutError:
        log.warning("HTTP listener did not stop within %.0fs", SHUTDOWN_TIMEOUT + 1)
    await links.close(SHUTDOWN_TIMEOUT)
