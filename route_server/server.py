"""route_server: relays frames to the gateways that hold their recipients
(stored messages acknowledged, route_server.push; notices one-way),
enforces the login policy across gateways and publishes presence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from common.admin import admin_handler
from common.commands import Cmd, OneWays, Rpcs
from common.conversation import is_mobile
from common.errors import Unavailable
from common.link import Link, LinkServer, LinkSettings
from common.metrics import start_metrics_server
from common.pb import base_pb2, buddy_pb2, internal_pb2
from common.rpc import Commands
from common.throttle import Throttle
from route_server import metrics
from route_server.admin import RouteAdmin
from route_server.config import RouteServerConfig
from route_server.metrics import (
    INVALIDATIONS,
    KICKS,
    NOTICES_DROPPED,
    NOTICES_RELAYED,
    PUSH_BATCH,
    PUSH_SECONDS,
    PUSHES_DROPPED,
    RELAYED,
    STATUS_CHANGES,
)
from route_server.notices import SUPERSEDED, ProfileNotices
from route_server.presence import LoginPolicy, has_desktop, sessions_to_kick, snapshot_kicks, user_status
from route_server.push import Pusher
from route_server.readiness import LostGateways, Readiness
from route_server.table import RouteTable, Session

log = logging.getLogger("route")

PROFILE_NOTICES = frozenset({Cmd.AVATAR_CHANGED_NOTIFY, Cmd.SIGN_INFO_CHANGED_NOTIFY})
BATCHES_RECEIVED = PUSH_BATCH.labels("received")
NOTICE_LOG_INTERVAL = 10.0  # seconds between log lines about dropped profile notices


class Settling(Unavailable):
    """This route server is (re)joining or awaits a gateway's snapshot: push through another."""

    # Expected after every (re)start and answered at once: not a server failure to log per push.
    server_fault = False


class RouteServer(LinkServer):
    def __init__(self, config: RouteServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        gateway_commands = (
            Commands()
            .oneway(OneWays.ROUTE_SNAPSHOT, self.on_snapshot)
            .oneway(OneWays.ROUTE_SESSION_UP, self.on_session_up)
            .oneway(OneWays.ROUTE_SESSION_DOWN, self.on_session_down)
            .oneway(OneWays.ROUTE_DELIVER, self.on_deliver)
            .oneway(OneWays.ROUTE_KICK_DESKTOP, self.on_kick_desktop)
            .oneway(OneWays.ROUTE_PROFILE_CHANGE, self.on_profile_change)
            .rpc(Rpcs.ROUTE_USERS_STAT, self.on_users_stat)
        )
        super().__init__(
            {
                internal_pb2.ROLE_GATEWAY: gateway_commands,
                internal_pb2.ROLE_DB_PROXY: Commands()
                .oneway(OneWays.ROUTE_DELIVER, self.on_deliver)
                .rpc(Rpcs.PUSH_MSG, self.on_push)
                .rpc(Rpcs.PUSH_MSGS, self.on_push_many)
                # db_proxy builds the profile notices of the changes it stores (the admin API's too).
                .oneway(OneWays.ROUTE_PROFILE_CHANGE, self.on_profile_change)
                .oneway(OneWays.DB_INVALIDATE, self.on_db_invalidate),
                internal_pb2.ROLE_ADMIN: Commands()
                .rpc(Rpcs.ROUTE_USERS_STAT, self.on_users_stat)
                .rpc(Rpcs.ADMIN_CALL, admin_handler(RouteAdmin(self).methods())),
            },
            role=internal_pb2.ROLE_ROUTE_SERVER,
            node_id=config.node_id,
            settings=LinkSettings.from_cluster(config.cluster),
        )
        self.config = config
        self.policy = LoginPolicy(config.login_policy)
        self.table = RouteTable()
        self.gateway_links: dict[str, Link] = {}
        self.db_proxy_links: dict[str, Link] = {}  # by node id: where directory invalidations go
        self.pending_status: dict[int, base_pb2.UserStatType.ValueType] = {}
        self.notices = ProfileNotices(
            config.max_pending_notices, config.max_pending_notice_bytes, on_drop=self._notice_dropped
        )
        self._notice_drop_log = Throttle(NOTICE_LOG_INTERVAL, clock)
        self.clock = clock
        self.readiness = Readiness(clock(), config.settle_time)
        self.lost = LostGateways(config.settle_time)
        self.pusher = Pusher(
            self.table,
            self.gateway_links,
            config.push_timeout,
            held=lambda user_ids: self.lost.held(user_ids, self.clock()),
        )

    def ready(self) -> bool:
        return self.readiness.ready(self.clock())

    # -- link lifecycle -------------------------------------------------------

    def on_hello(self, conn: Link) -> None:
        if conn.role == internal_pb2.ROLE_DB_PROXY:
            self.db_proxy_links[conn.node_id] = conn
        if conn.role != internal_pb2.ROLE_GATEWAY:
            return
        # The link layer admits one link per node id, so this is the only one.
        # What we knew of this gateway stays until its snapshot (sent right
        # after the handshake) replaces it, so a relink does not flap presence.
        self.gateway_links[conn.node_id] = conn
        self.readiness.linked(conn.node_id, self.clock())

    def on_goodbye(self, conn: Link) -> None:
        if conn.role == internal_pb2.ROLE_DB_PROXY and self.db_proxy_links.get(conn.node_id) is conn:
            del self.db_proxy_links[conn.node_id]
        if conn.role == internal_pb2.ROLE_GATEWAY and self.gateway_links.get(conn.node_id) is conn:
            del self.gateway_links[conn.node_id]
            self.readiness.unlinked(conn.node_id)
            self.lost.lost(conn.node_id, self.table.users_on(conn.node_id), self.clock())
            self._presence_change(
                self.table.users_on(conn.node_id), lambda: self.table.drop_gateway(conn.node_id)
            )
            log.info("gateway %s gone; its users are offline here", conn.node_id)

    # -- presence ---------------------------------------------------------------

    def _presence_change(self, users: Iterable[int], change: Callable[[], Any]) -> None:
        """Apply ``change`` and queue the status of every user it altered."""
        users = list(users)
        before = {
            u: (user_status(self.table.sessions_of(u)), has_desktop(self.table.sessions_of(u))) for u in users
        }
        change()
        for user_id, (status, desktop) in before.items():
            sessions = self.table.sessions_of(user_id)
            if user_status(sessions) != status:
                self.pending_status[user_id] = user_status(sessions)
            if has_desktop(sessions) != desktop:
                self._tell_mobiles(user_id, sessions, online=not desktop)

    def _tell_mobiles(self, user_id: int, sessions: list[Session], online: bool) -> None:
        """IMPCLoginStatusNotify: a user's phones hear when its desktop comes or goes."""
        gateways = {s.gateway_id for s in sessions if is_mobile(s.client_type)}
        if not gateways:
            return
        stat = base_pb2.USER_STATUS_ONLINE if online else base_pb2.USER_STATUS_OFFLINE
        body = buddy_pb2.IMPCLoginStatusNotify(user_id=user_id, login_stat=stat).SerializeToString()
        deliver = internal_pb2.RouteDeliver(
            user_ids=[user_id],
            command_id=Cmd.PC_LOGIN_STATUS_NOTIFY,
            body=body,
            device_class=internal_pb2.DEVICE_MOBILE,
        )
        for gateway_id in gateways:
            self._send_to_gateway(gateway_id, Cmd.ROUTE_DELIVER, deliver)

    async def flush_status(self) -> None:
        """Coalesce presence changes so a login storm costs one frame per gateway per tick."""
        while True:
            await asyncio.sleep(self.config.status_batch_interval)
            self.send_batches()

    def send_batches(self) -> None:
        """One tick: the presence and the profile changes since the last, to every gateway."""
        if self.pending_status:
            batch = internal_pb2.RouteStatusBatch(
                stats=[base_pb2.UserStat(user_id=u, status=s) for u, s in self.pending_status.items()]
            )
            self.pending_status = {}
            STATUS_CHANGES.inc(len(batch.stats))
            body = batch.SerializeToString()
            for link in self.gateway_links.values():
                link.send_raw(Cmd.ROUTE_STATUS_BATCH, body)
        notices = self.notices.take()
        if notices is not None:
            NOTICES_RELAYED.inc(len(notices.changes))
            body = notices.SerializeToString()
            for link in self.gateway_links.values():
                if not link.send_raw(Cmd.ROUTE_PROFILE_BATCH, body):
                    self._notice_dropped("send_failed", len(notices.changes))

    def _notice_dropped(self, reason: str, count: int) -> None:
        NOTICES_DROPPED.labels(reason).inc(count)
        if reason != SUPERSEDED and self._notice_drop_log.ready():  # superseded: coalescing at work
            log.warning(
                "profile notices dropped (%s: %d pending, %d bytes)%s",
                reason,
                self.notices.pending,
                self.notices.pending_bytes,
                self._notice_drop_log.more(),
            )

    def on_profile_change(self, conn: Link, msg: internal_pb2.RouteProfileChange) -> None:
        """An avatar or sign-info change: to the gateways with the next batch (route_server.notices)."""
        if msg.command_id not in PROFILE_NOTICES:
            self._notice_dropped("bad_command", 1)
            return
        self.notices.offer(msg)

    def on_db_invalidate(self, conn: Link, msg: internal_pb2.DbInvalidate) -> None:
        """Directory facts a db_proxy changed: every other linked db_proxy drops them from its
        cache. A db_proxy linked to several route servers hears it from each (harmless: a drop)."""
        sender = msg.from_node or conn.node_id
        body = msg.SerializeToString()
        for node_id, link in self.db_proxy_links.items():
            if node_id == sender:
                continue
            INVALIDATIONS.labels("relayed" if link.send_raw(Cmd.DB_INVALIDATE, body) else "send_failed").inc()

    def _send_to_gateway(self, gateway_id: str, command_id: int, message: Message) -> None:
        link = self.gateway_links.get(gateway_id)
        if link is None:
            PUSHES_DROPPED.labels("no_gateway_link").inc()
        elif not link.send(command_id, message):
            PUSHES_DROPPED.labels("send_failed").inc()

    def _kick(self, user_id: int, session: Session, reason: base_pb2.KickReasonType.ValueType) -> None:
        KICKS.inc()
        self.table.remove(session.gateway_id, user_id, session.conn_id)
        kick = internal_pb2.RouteKick(user_id=user_id, conn_id=session.conn_id, reason=reason)
        self._send_to_gateway(session.gateway_id, Cmd.ROUTE_KICK, kick)

    def kick_user(self, user_id: int, reason: base_pb2.KickReasonType.ValueType) -> int:
        """Close every session of a user (the admin API); returns how many there were."""
        sessions = self.table.sessions_of(user_id)

        def change() -> None:
            for session in sessions:
                self._kick(user_id, session, reason)

        self._presence_change([user_id], change)
        return len(sessions)

    # -- commands from gateways --------------------------------------------------

    def _session(self, gateway_id: str, s: internal_pb2.OnlineSession) -> Session:
        """A gateway's OnlineSession as a table entry; ``since`` is when this
        server first heard of it (kept across a relink's snapshot)."""
        known = self.table.session(s.user_id, gateway_id, s.conn_id)
        since = known.since if known is not None else int(time.time())
        return Session(gateway_id, s.conn_id, s.client_type, s.status, since)

    def on_snapshot(self, conn: Link, msg: internal_pb2.RouteSnapshot) -> None:
        entries = [(s.user_id, self._session(conn.node_id, s)) for s in msg.sessions]
        users = self.table.users_on(conn.node_id) | {user_id for user_id, _ in entries}
        # The login policy again (a partition healed): decided on the table as
        # it was, applied once the snapshot is in.
        kicks = snapshot_kicks(self.policy, self.table, conn.node_id, entries)

        def change() -> None:
            self.table.replace_gateway(conn.node_id, entries)
            for user_id, session in kicks:
                self._kick(user_id, session, base_pb2.KICK_REASON_DUPLICATE_USER)

        self._presence_change(users, change)
        if self.gateway_links.get(conn.node_id) is conn:
            self.readiness.snapshot(conn.node_id)
            self.lost.back(conn.node_id)
        conn.log.info("snapshot: %d sessions, %d kicked by the login policy", len(msg.sessions), len(kicks))

    def on_session_up(self, conn: Link, msg: internal_pb2.RouteSessionUp) -> None:
        s = msg.session
        new = self._session(conn.node_id, s)

        def change() -> None:
            for victim in sessions_to_kick(self.policy, self.table.sessions_of(s.user_id), new):
                self._kick(s.user_id, victim, base_pb2.KICK_REASON_DUPLICATE_USER)
            self.table.add(s.user_id, new)

        self._presence_change([s.user_id], change)

    def on_session_down(self, conn: Link, msg: internal_pb2.RouteSessionDown) -> None:
        self._presence_change(
            [msg.user_id], lambda: self.table.remove(conn.node_id, msg.user_id, msg.conn_id)
        )

    def on_kick_desktop(self, conn: Link, msg: internal_pb2.RouteKickDesktop) -> None:

        def change() -> None:
            for session in self.table.sessions_of(msg.user_id):
                if not is_mobile(session.client_type):
                    self._kick(msg.user_id, session, base_pb2.KICK_REASON_MOBILE_KICK)

        self._presence_change([msg.user_id], change)

    async def on_users_stat(
        self, conn: Link, msg: internal_pb2.RouteUsersStatReq
    ) -> internal_pb2.RouteUsersStatRes:
        stats = [
            base_pb2.UserStat(user_id=u, status=user_status(self.table.sessions_of(u))) for u in msg.user_ids
        ]
        return internal_pb2.RouteUsersStatRes(stats=stats)

    async def on_push(self, conn: Link, msg: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        """A stored message from db_proxy: answered once its gateways have (route_server.push)."""
        why = self.readiness.refusal(self.clock())
        if why is not None:
            PUSHES_DROPPED.labels("settling").inc(len(msg.user_ids))
            raise Settling(f"route server settling: {why}")
        with PUSH_SECONDS.time():
            return await self.pusher.push(msg)

    async def on_push_many(
        self, conn: Link, msg: internal_pb2.PushMsgBatch
    ) -> internal_pb2.PushMsgBatchResult:
        """Many stored messages in one frame: each as :meth:`on_push`, results[i] answering pushes[i]."""
        why = self.readiness.refusal(self.clock())
        if why is not None:
            PUSHES_DROPPED.labels("settling").inc(sum(len(p.user_ids) for p in msg.pushes))
            raise Settling(f"route server settling: {why}")
        BATCHES_RECEIVED.inc()
        with PUSH_SECONDS.time():
            results = await self.pusher.push_many(msg.pushes)
        reply = internal_pb2.PushMsgBatchResult()
        reply.results.extend(results)
        return reply

    def on_deliver(self, conn: Link, msg: internal_pb2.RouteDeliver) -> None:
        targets = self.table.fan_out(msg.user_ids)
        reached = {u for users in targets.values() for u in users}
        offline = len(set(msg.user_ids) - reached)
        if offline:
            PUSHES_DROPPED.labels("no_session").inc(offline)
        for gateway_id, users in targets.items():
            link = self.gateway_links.get(gateway_id)
            if link is None:
                PUSHES_DROPPED.labels("no_gateway_link").inc(len(users))
                continue
            narrowed = internal_pb2.RouteDeliver()
            narrowed.CopyFrom(msg)
            del narrowed.user_ids[:]
            narrowed.user_ids.extend(users)
            if link.send(Cmd.ROUTE_DELIVER, narrowed):
                RELAYED.inc()
            else:
                PUSHES_DROPPED.labels("send_failed").inc(len(users))

    def health(self) -> dict[str, Any]:
        """/healthz: alive (200) while settling too; ``ready`` says whether pushes are answered."""
        now = self.clock()
        return {
            "ok": True,
            "node_id": self.config.node_id,
            "gateways": sorted(self.gateway_links),
            "ready": self.readiness.ready(now),
            "settling": self.readiness.refusal(now),
        }


async def serve(
    config: RouteServerConfig, stop: asyncio.Event, announce: Callable[[dict[str, Any]], None]
) -> None:
    server = RouteServer(config)
    port = await server.listen(config.host, config.port)
    metrics.bind(server)
    exposed = await start_metrics_server(
        config.metrics_host,
        config.metrics_port,
        server.health,
    )
    flusher = asyncio.get_running_loop().create_task(server.flush_status())
    log.info(
        "route_server %s listening on %s:%d (login policy %s)",
        config.node_id,
        config.host,
        port,
        server.policy,
    )
    announce({"port": port, "metrics_port": exposed[1] if exposed else None})
    await stop.wait()
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    await server.close()
    if exposed is not None:
        await exposed[0].cleanup()
