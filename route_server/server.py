"""route_server: relays frames to the gateways that hold their recipients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from common.codec import Frame
from common.commands import Cmd
from common.link import Handler, LinkServer, LinkServerConnection
from common.pb import internal_pb2
from route_server.config import RouteServerConfig
from route_server.table import RouteTable, Session

log = logging.getLogger("route")


class RouteServer(LinkServer):
    def __init__(self, config: RouteServerConfig) -> None:
        gateway_commands: dict[int, Handler] = {
            Cmd.ROUTE_SNAPSHOT: self.on_snapshot,
            Cmd.ROUTE_SESSION_UP: self.on_session_up,
            Cmd.ROUTE_SESSION_DOWN: self.on_session_down,
            Cmd.ROUTE_DELIVER: self.on_deliver,
        }
        super().__init__(
            {
                internal_pb2.ROLE_GATEWAY: gateway_commands,
                internal_pb2.ROLE_DB_PROXY: {Cmd.ROUTE_DELIVER: self.on_deliver},
            },
            idle_timeout=config.link_idle_timeout,
        )
        self.config = config
        self.table = RouteTable()
        self.gateway_links: dict[str, LinkServerConnection] = {}
        self.relayed = 0

    # -- link lifecycle -------------------------------------------------------

    def on_hello(self, conn: LinkServerConnection) -> None:
        if conn.role != internal_pb2.ROLE_GATEWAY:
            return
        old = self.gateway_links.get(conn.node_id)
        if old is not None and old is not conn:
            conn.log.warning("gateway relinked; dropping its previous link")
            old.abort()
        self.gateway_links[conn.node_id] = conn
        # Until the snapshot arrives we know nothing of this gateway's users.
        self.table.drop_gateway(conn.node_id)

    def on_goodbye(self, conn: LinkServerConnection) -> None:
        if conn.role == internal_pb2.ROLE_GATEWAY and self.gateway_links.get(conn.node_id) is conn:
            del self.gateway_links[conn.node_id]
            self.table.drop_gateway(conn.node_id)
            log.info("gateway %s gone; its users are offline here", conn.node_id)

    # -- commands from gateways --------------------------------------------------

    def on_snapshot(self, conn: LinkServerConnection, frame: Frame, msg: Message) -> None:
        assert isinstance(msg, internal_pb2.RouteSnapshot)
        self.table.replace_gateway(
            conn.node_id,
            ((s.user_id, Session(conn.node_id, s.conn_id, s.client_type, s.status)) for s in msg.sessions),
        )
        conn.log.info("snapshot: %d sessions", len(msg.sessions))

    def on_session_up(self, conn: LinkServerConnection, frame: Frame, msg: Message) -> None:
        assert isinstance(msg, internal_pb2.RouteSessionUp)
        s = msg.session
        self.table.add(s.user_id, Session(conn.node_id, s.conn_id, s.client_type, s.status))

    def on_session_down(self, conn: LinkServerConnection, frame: Frame, msg: Message) -> None:
        assert isinstance(msg, internal_pb2.RouteSessionDown)
        self.table.remove(conn.node_id, msg.user_id, msg.conn_id)

    def on_deliver(self, conn: LinkServerConnection, frame: Frame, msg: Message) -> None:
        assert isinstance(msg, internal_pb2.RouteDeliver)
        for gateway_id, users in self.table.fan_out(msg.user_ids).items():
            link = self.gateway_links.get(gateway_id)
            if link is None:
                continue
            narrowed = internal_pb2.RouteDeliver(user_ids=users, command_id=msg.command_id, body=msg.body)
            if msg.HasField("origin"):
                narrowed.origin.CopyFrom(msg.origin)
            link.send(Cmd.ROUTE_DELIVER, narrowed)
            self.relayed += 1


async def serve(
    config: RouteServerConfig, stop: asyncio.Event, announce: Callable[[dict[str, Any]], None]
) -> None:
    server = RouteServer(config)
    port = await server.listen(config.host, config.port)
    log.info("route_server %s listening on %s:%d", config.node_id, config.host, port)
    announce({"port": port})
    await stop.wait()
    await server.close()
