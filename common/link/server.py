"""The accepting end of internal links.

A :class:`LinkServer` has one :class:`~common.rpc.Commands` table per peer
role; a role without a table may not link at all. A node id that is already
linked (in a role that holds state under it: gateways, db_proxies...) is not
taken over by a newcomer claiming it: the newcomer is refused until the
first link is gone, which the heartbeats notice within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from common.link.handshake import Identity, role_name
from common.link.protocol import Link
from common.link.session import LinkSession, Side
from common.link.settings import LinkSettings
from common.link.tls_gate import TlsGate
from common.pb import internal_pb2
from common.rpc import Commands

log = logging.getLogger("link")

# Admin callers (login_server's admin API, tools) keep no state under their
# node id, so several may share one; every other role must be unique.
SHARED_ROLES = frozenset({internal_pb2.ROLE_ADMIN})


class LinkServer:
    def __init__(
        self,
        commands_by_role: Mapping[int, Commands],
        *,
        role: int,
        node_id: str,
        settings: LinkSettings | None = None,
    ) -> None:
        self.commands_by_role = commands_by_role
        self.identity = Identity(role, node_id)
        self.settings = settings or LinkSettings()
        self.connections: set[Link] = set()
        self.linked: dict[Identity, Link] = {}
        self.server: asyncio.AbstractServer | None = None

    async def listen(self, host: str, port: int, backlog: int = 1024) -> int:
        loop = asyncio.get_running_loop()
        context = self.settings.server_ssl
        factory: Callable[[], asyncio.Protocol] = self._new_link
        if context is not None:
            timeout = self.settings.timing.handshake_timeout

            def factory() -> asyncio.Protocol:
                return TlsGate(context, timeout, self._new_link)

        self.server = await loop.create_server(factory, host, port, backlog=backlog, reuse_address=True)
        return int(self.server.sockets[0].getsockname()[1])

    def _new_link(self) -> Link:
        settings = self.settings

        def session(now: float) -> LinkSession:
            return LinkSession(Side.SERVER, self.identity, settings.secrets, now, timing=settings.timing)

        return Link(self, session)

    # -- LinkOwner ----------------------------------------------------------------

    def link_made(self, link: Link) -> None:
        self.connections.add(link)

    def link_authenticated(self, link: Link, peer: Identity) -> tuple[int, str] | None:
        if peer.role not in self.commands_by_role:
            return internal_pb2.ERR_FORBIDDEN, f"role {peer.role} may not link to {self.identity.node_id}"
        if peer.role not in SHARED_ROLES:
            holder = self.linked.get(peer)
            if holder is not None and not holder.closing:
                return (
                    internal_pb2.ERR_CONFLICT,
                    f"node id {peer.node_id!r} is already linked from {holder.peer}",
                )
        return None

    def commands_for(self, peer: Identity) -> Commands | None:
        return self.commands_by_role.get(peer.role)

    def link_opened(self, link: Link) -> None:
        identity = Identity(link.role, link.node_id)
        if link.role not in SHARED_ROLES:
            self.linked[identity] = link
        link.log.info("linked (%s)", role_name(link.role))
        self.on_hello(link)

    def link_closed(self, link: Link) -> None:
        self.connections.discard(link)
        if not link.opened.done() or link.opened.exception() is not None:
            return
        identity = Identity(link.role, link.node_id)
        if self.linked.get(identity) is link:
            del self.linked[identity]
        self.on_goodbye(link)

    # -- hooks for subclasses ---------------------------------------------------------

    def on_hello(self, link: Link) -> None:
        """A peer finished its handshake."""

    def on_goodbye(self, link: Link) -> None:
        """A peer that had finished its handshake is gone."""

    async def close(self, timeout: float = 3.0) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.connections):
            link.close()
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), timeout)
