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
from collections.abc import Iterable
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from common.commands import Cmd, OneWays, Rpcs
from common.config import split_address
from common.conversation import ShardKey, is_mobile
from common.db_roles import DbRole, role_of
from common.link import Identity, Link, LinkDown, LinkSettings, Upstream
from common.pb import base_pb2, buddy_pb2, internal_pb2, login_pb2
from common.rpc import Commands, ReqT, ResT, Rpc
from msg_server.admission import Admitter, caps_of, effective_max_connections, open_file_limit
from msg_server.config import MsgServerConfig
from msg_server.db_links import DbLinks
from msg_server.limits import Limiter
from msg_server.metrics import PUSHED, PUSHES_DROPPED
from msg_server.profile_notices import publish_profile
from msg_server.push import Pusher

if TYPE_CHECKING:
    from msg_server.client import ClientConnection

log = logging.getLogger("gateway")

MAX_WATCHED = 5000  # users one connection may follow one by one


class NoFileServer(LinkDown):
    """No file server is configured, or none is linked: file transfer is refused."""


class Gateway:
    def __init__(self, config: MsgServerConfig) -> None:
        self.config = config
        self.node_id = config.node_id
        self.started_at = int(time.time())
        self.sessions: dict[int, list[ClientConnection]] = {}
        self.connections: set[ClientConnection] = set()
        self.requests: set[asyncio.Future[None]] = set()  # client requests being handled
        self._conn_ids = itertools.count(1)
        # The open-file limit caps what this gateway can hold (common/runner.py raised it).
        soft, _ = open_file_limit()
        self.max_connections = effective_max_connections(config.max_connections, soft)
        self.admitter = Admitter(caps_of(config, self.max_connections))
        self.limiter = Limiter(config)
        caps = self.admitter.admission.caps
        log.info(
            "max_connections %d (setting %d, open-file limit %d), %d not logged in at most",
            self.max_connections,
            config.max_connections,
            soft,
            caps.unauthenticated,
        )
        me = Identity(internal_pb2.ROLE_GATEWAY, config.node_id)
        settings = LinkSettings.from_cluster(config.cluster)

        def addresses(key: str, values: tuple[str, ...]) -> list[tuple[str, int]]:
            return [split_address(f"msg_server.{key}", v) for v in values]

        self.db = DbLinks(addresses("db_proxies", config.db_proxies), me, settings, config.request_timeout)
        self.db_links = self.db.links
        self.pusher = Pusher(self)
        from_route = (
            Commands()
            .rpc(Rpcs.PUSH_MSG, self.pusher.on_push)
            .rpc(Rpcs.PUSH_MSGS, self.pusher.on_push_many)
            .oneway(OneWays.ROUTE_DELIVER, lambda link, deliver: self.push_local(deliver))
            .oneway(OneWays.ROUTE_STATUS_BATCH, lambda link, batch: self.publish_status(batch))
            .oneway(OneWays.ROUTE_PROFILE_BATCH, lambda link, batch: publish_profile(self, batch))
            .oneway(
                OneWays.ROUTE_KICK,
                lambda link, kick: self.kick_local(kick.user_id, kick.conn_id, kick.reason),
            )
        )
        self.route_links = [
            Upstream(
                f"route@{h}:{p}",
                [(h, p)],
                me,
                settings=settings,
                expect_role=internal_pb2.ROLE_ROUTE_SERVER,
                commands=from_route,
                on_connected=self._send_snapshot,
            )
            for h, p in addresses("route_servers", config.route_servers)
        ]
        self.login_links = [
            Upstream(
                f"login@{h}:{p}",
                [(h, p)],
                me,
                settings=settings,
                expect_role=internal_pb2.ROLE_LOGIN_SERVER,
                on_connected=self._send_info,
            )
            for h, p in addresses("login_servers", config.login_servers)
        ]
        # Every configured file server, in config order: offline files go to
        # the first that is up (they must be found there again), online
        # transfers to any (round robin).
        self.file_links = [
            Upstream(
                f"file@{h}:{p}",
                [(h, p)],
                me,
                settings=settings,
                expect_role=internal_pb2.ROLE_FILE_SERVER,
            )
            for h, p in addresses("file_servers", config.file_servers)
        ]
        self._file_turn = itertools.count()
        self.logged_in = 0
        # Presence: the status each user last had, and which connections
        # asked about whom (IMUsersStatReq), so a change reaches only them.
        self.known_status: dict[int, int] = {}
        self.watchers: dict[int, set[ClientConnection]] = {}
        self.watch_all: set[ClientConnection] = set()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        for link in self.all_links:
            link.start()

    @property
    def all_links(self) -> list[Upstream]:
        return [*self.db_links, *self.route_links, *self.login_links, *self.file_links]

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
        self.unwatch(conn)
        down = internal_pb2.RouteSessionDown(user_id=conn.user_id, conn_id=conn.conn_id)
        for link in self.route_links:
            link.send(Cmd.ROUTE_SESSION_DOWN, down)

    def watch(self, conn: ClientConnection, user_ids: list[int]) -> None:
        if conn in self.watch_all:
            return
        new = [u for u in user_ids if u not in conn.watching]
        if len(conn.watching) + len(new) > MAX_WATCHED:
            # A client that follows most of the directory is cheaper to treat as following all.
            self.unwatch(conn)
            self.watch_all.add(conn)
            return
        for user_id in new:
            conn.watching.add(user_id)
            self.watchers.setdefault(user_id, set()).add(conn)

    def unwatch(self, conn: ClientConnection) -> None:
        self.watch_all.discard(conn)
        for user_id in conn.watching:
            watchers = self.watchers.get(user_id)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self.watchers[user_id]
        conn.watching.clear()

    def _send_snapshot(self, link: Link) -> None:
        snapshot = internal_pb2.RouteSnapshot(
            sessions=[c.online_session() for conns in self.sessions.values() for c in conns]
        )
        link.send(Cmd.ROUTE_SNAPSHOT, snapshot)

    # -- login_server -------------------------------------------------------------

    def _send_info(self, link: Link) -> None:
        config = self.config
        link.send(
            Cmd.GATEWAY_INFO,
            internal_pb2.GatewayInfo(
                prior_ip=config.advertise_ip,
                backup_ip=config.advertise_backup_ip or config.advertise_ip,
                port=self.port,
                max_connections=self.max_connections,
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

    def db_for(self, key: ShardKey, role: DbRole) -> Upstream:
        """The db_proxy serving ``role`` for ``key``: always the same while it is up (db_links.py)."""
        return self.db.pick(role, key)

    async def db_call(self, key: ShardKey, rpc: Rpc[ReqT, ResT], request: ReqT) -> ResT:
        """Ask the db_proxy of ``key`` (a conversation, a user name...) among those
        serving the request's role: its typed reply.

        Raises an ImError: Unavailable (none serving the role is linked, a
        timeout) or what db_proxy answered.
        """
        return await self.db_for(key, role_of(rpc.command)).call(rpc, request, self.config.request_timeout)

    async def route_call(self, rpc: Rpc[ReqT, ResT], request: ReqT) -> ResT:
        for link in self.route_links:
            if link.connected:
                return await link.call(rpc, request, self.config.request_timeout)
        raise LinkDown("no route_server is reachable")

    # -- file_server ----------------------------------------------------------------

    def file_link(self, *, offline: bool) -> Upstream:
        """The file server for a new task: the first up one for offline files, else any up one."""
        up = [link for link in self.file_links if link.connected]
        if not up:
            raise NoFileServer(
                "no file_server is reachable" if self.file_links else "no file_server configured"
            )
        return up[0] if offline else up[next(self._file_turn) % len(up)]

    async def file_call(self, rpc: Rpc[ReqT, ResT], request: ReqT, *, offline: bool = True) -> ResT:
        """Ask a file server (offline: the one offline files are on). Unavailable if none is up."""
        return await self.file_link(offline=offline).call(rpc, request, self.config.request_timeout)

    # -- route_server ---------------------------------------------------------------

    def route(self, deliver: internal_pb2.RouteDeliver) -> bool:
        return self.to_route(Cmd.ROUTE_DELIVER, deliver)

    def to_route(self, command_id: int, message: Message) -> bool:
        """One-way to the first linked route server (each knows every gateway)."""
        body = message.SerializeToString()
        return any(link.send_raw(command_id, body) for link in self.route_links)

    def push_local(self, deliver: internal_pb2.RouteDeliver) -> None:
        skip_conn = (
            deliver.origin.conn_id
            if deliver.HasField("origin") and deliver.origin.gateway_id == self.node_id
            else 0
        )
        wanted = deliver.device_class
        targets: list[ClientConnection] = []
        for user_id in deliver.user_ids:
            conns = self.sessions.get(user_id)
            if conns:
                targets += conns
            else:  # the route server's table was stale: the user left this gateway
                PUSHES_DROPPED.labels("no_session").inc()
        for conn in targets:
            if conn.conn_id == skip_conn:
                continue
            if wanted != internal_pb2.DEVICE_ANY and (wanted == internal_pb2.DEVICE_MOBILE) != is_mobile(
                conn.client_type
            ):
                continue
            if conn.send_raw(deliver.command_id, deliver.body):
                PUSHED.inc()
            else:  # closing, or just cut off as a slow reader
                PUSHES_DROPPED.labels("connection_gone").inc()

    def remember_status(self, stats: Iterable[base_pb2.UserStat]) -> None:
        for stat in stats:
            if stat.status == base_pb2.USER_STATUS_OFFLINE:
                self.known_status.pop(stat.user_id, None)
            else:
                self.known_status[stat.user_id] = stat.status

    def publish_status(self, batch: internal_pb2.RouteStatusBatch) -> None:
        for stat in batch.stats:
            # Every route server sends every change: only the first copy counts.
            if self.known_status.get(stat.user_id, base_pb2.USER_STATUS_OFFLINE) == stat.status:
                continue
            self.remember_status([stat])
            watchers = self.watchers.get(stat.user_id, set()) | self.watch_all
            if not watchers:
                continue
            body = buddy_pb2.IMUserStatNotify(user_stat=stat).SerializeToString()
            for conn in watchers:
                if conn.user_id != stat.user_id:
                    conn.send_raw(Cmd.USER_STAT_NOTIFY, body)
                    PUSHED.inc()

    def _on_kick(self, link: Link, kick: internal_pb2.RouteKick) -> None:
        self.kick_local(kick.user_id, kick.conn_id, kick.reason)

    def kick_local(self, user_id: int, conn_id: int, reason: base_pb2.KickReasonType.ValueType) -> None:
        for conn in list(self.sessions.get(user_id, ())):
            if conn.conn_id == conn_id:
                conn.log.debug("kicked (reason %d)", reason)
                conn.send(Cmd.KICK_USER, login_pb2.IMKickUser(user_id=user_id, kick_reason=reason))
                self.detach(conn)
                conn.close()
