"""A gateway's shared state: its live sessions and its links to the cluster.

Client connections come and go through :meth:`Gateway.attach` and
:meth:`Gateway.detach`; the route servers hear of each change, and get the
whole picture again whenever a link to them is (re)made, which is what lets
a restarted route server rebuild its table.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from common.codec import Frame
from common.commands import Cmd, decode_body
from common.config import split_address
from common.link import LinkClient, LinkDown, Upstream
from common.pb import internal_pb2, login_pb2
from msg_server.config import MsgServerConfig

if TYPE_CHECKING:
    from msg_server.client import ClientConnection

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, config: MsgServerConfig) -> None:
        self.config = config
        self.node_id = config.node_id
        self.started_at = int(time.time())
        self.sessions: dict[int, list[ClientConnection]] = {}
        self.connections: set[ClientConnection] = set()
        self._conn_ids = itertools.count(1)
        hello = internal_pb2.LinkHello(role=internal_pb2.ROLE_GATEWAY, node_id=config.node_id)

        def addresses(key: str, values: tuple[str, ...]) -> list[tuple[str, int]]:
            return [split_address(f"msg_server.{key}", v) for v in values]

        self.db_links = [
            Upstream(f"db@{h}:{p}", [(h, p)], hello) for h, p in addresses("db_proxies", config.db_proxies)
        ]
        self.route_links = [
            Upstream(
                f"route@{h}:{p}",
                [(h, p)],
                hello,
                on_push=self._on_route_frame,
                on_connected=self._send_snapshot,
            )
            for h, p in addresses("route_servers", config.route_servers)
        ]
        self.login_links = [
            Upstream(f"login@{h}:{p}", [(h, p)], hello, on_connected=self._send_info)
            for h, p in addresses("login_servers", config.login_servers)
        ]
        self.logged_in = 0
        self.pushed = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        for link in self.all_links:
            link.start()

    @property
    def all_links(self) -> list[Upstream]:
        return [*self.db_links, *self.route_links, *self.login_links]

    async def stop(self) -> None:
        for link in self.all_links:
            await link.stop()

    def next_conn_id(self) -> int:
        return next(self._conn_ids)

    # -- sessions ---------------------------------------------------------------

    def attach(self, conn: ClientConnection) -> None:
        """A connection finished logging in."""
        self.sessions.setdefault(conn.user_id, []).append(conn)
        self.logged_in += 1
        up = internal_pb2.RouteSessionUp(session=conn.online_session())
        for link in self.route_links:
            link.send(Cmd.ROUTE_SESSION_UP, up)

    def detach(self, conn: ClientConnection) -> None:
        conns = self.sessions.get(conn.user_id)
        if conns is None or conn not in conns:
            return
        conns.remove(conn)
        if not conns:
            del self.sessions[conn.user_id]
        self.logged_in -= 1
        down = internal_pb2.RouteSessionDown(user_id=conn.user_id, conn_id=conn.conn_id)
        for link in self.route_links:
            link.send(Cmd.ROUTE_SESSION_DOWN, down)

    def _send_snapshot(self, link: LinkClient) -> None:
        snapshot = internal_pb2.RouteSnapshot(
            sessions=[c.online_session() for conns in self.sessions.values() for c in conns]
        )
        link.send(Cmd.ROUTE_SNAPSHOT, snapshot)

    # -- login_server -------------------------------------------------------------

    def _send_info(self, link: LinkClient) -> None:
        config = self.config
        link.send(
            Cmd.GATEWAY_INFO,
            internal_pb2.GatewayInfo(
                prior_ip=config.advertise_ip,
                backup_ip=config.advertise_backup_ip or config.advertise_ip,
                port=self.port,
                max_connections=config.max_connections,
                started_at=self.started_at,
            ),
        )
        link.send(Cmd.GATEWAY_LOAD, internal_pb2.GatewayLoad(connections=self.logged_in))

    port = 0  # the real client port, set once listening

    async def report_load(self) -> None:
        last = -1
        ticks = 0
        while True:
            await asyncio.sleep(self.config.load_report_interval / 4)
            ticks += 1
            # Report at once on change, and every interval anyway.
            if self.logged_in != last or ticks % 4 == 0:
                last = self.logged_in
                load = internal_pb2.GatewayLoad(connections=self.logged_in)
                for link in self.login_links:
                    link.send(Cmd.GATEWAY_LOAD, load)

    # -- db_proxy -----------------------------------------------------------------

    def db_for(self, key: object) -> Upstream:
        """The db_proxy for a conversation: always the same while it is up."""
        n = len(self.db_links)
        first = hash(key) % n
        for i in range(n):
            link = self.db_links[(first + i) % n]
            if link.connected:
                return link
        raise LinkDown("no db_proxy is reachable")

    async def db_request(self, key: object, command_id: int, message: Message) -> tuple[int, Message]:
        return await self.db_for(key).request(command_id, message, self.config.request_timeout)

    # -- route_server ---------------------------------------------------------------

    def route(self, deliver: internal_pb2.RouteDeliver) -> bool:
        body = deliver.SerializeToString()
        return any(link.send_raw(Cmd.ROUTE_DELIVER, body) for link in self.route_links)

    def _on_route_frame(self, link: LinkClient, frame: Frame) -> None:
        message = decode_body(frame.command_id, frame.body)
        if isinstance(message, internal_pb2.RouteDeliver):
            self.push_local(message)
        elif isinstance(message, internal_pb2.RouteKick):
            self.kick_local(message.user_id, message.conn_id, message.reason)
        else:
            log.warning("route sent unexpected command 0x%04x", frame.command_id)

    def push_local(self, deliver: internal_pb2.RouteDeliver) -> None:
        skip_conn = (
            deliver.origin.conn_id
            if deliver.HasField("origin") and deliver.origin.gateway_id == self.node_id
            else 0
        )
        for user_id in deliver.user_ids:
            for conn in self.sessions.get(user_id, ()):
                if conn.conn_id != skip_conn:
                    conn.send_raw(deliver.command_id, deliver.body)
                    self.pushed += 1

    def kick_local(self, user_id: int, conn_id: int, reason: int) -> None:
        for conn in list(self.sessions.get(user_id, ())):
            if conn.conn_id == conn_id:
                conn.log.info("kicked (reason %d)", reason)
                conn.send(Cmd.KICK_USER, login_pb2.IMKickUser(user_id=user_id, kick_reason=reason))
                self.detach(conn)
                conn.close()
