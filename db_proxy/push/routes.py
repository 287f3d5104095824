"""db_proxy's links to the route servers: acknowledged pushes and one-way notices.

Every route server knows every gateway, so one copy through one of them is
enough. The work is shared: a conversation's pushes go through the route
server its key picks among the ready ones (:func:`shard_of`), so they keep
their order while it is up. A link counts as ready only once the route
server answered its handshake (``Upstream.connected``).
"""

from __future__ import annotations

from google.protobuf.message import Message

from common.conversation import ShardKey, shard_of
from common.link import Identity, LinkSettings, Upstream
from common.pb import internal_pb2
from common.rpc import Commands
from db_proxy import metrics


class RouteLinks:
    def __init__(
        self,
        node_id: str,
        addresses: list[tuple[str, int]],
        settings: LinkSettings,
        commands: Commands | None = None,
    ) -> None:
        """``commands``: what a route server may send us (DB_INVALIDATE from another db_proxy)."""
        me = Identity(internal_pb2.ROLE_DB_PROXY, node_id)
        self.upstreams = [
            Upstream(
                f"route@{h}:{p}",
                [(h, p)],
                me,
                settings=settings,
                expect_role=internal_pb2.ROLE_ROUTE_SERVER,
                commands=commands,
            )
            for h, p in addresses
        ]

    def start(self) -> None:
        for upstream in self.upstreams:
            upstream.start()

    async def stop(self) -> None:
        for upstream in self.upstreams:
            await upstream.stop()

    def ready(self) -> list[Upstream]:
        return [upstream for upstream in self.upstreams if upstream.connected]

    def in_order_for(self, key: ShardKey) -> list[Upstream]:
        """The ready route servers, the one ``key`` picks first, then the others in turn."""
        ready = self.ready()
        if not ready:
            return []
        first = shard_of(key, len(ready))
        return ready[first:] + ready[:first]

    def send(self, command_id: int, message: Message, key: ShardKey) -> bool:
        """Send a one-way frame (a notice: group change, profile change, invalidation)
        through the route server ``key`` picks, or the next ready one; False,
        counted, when none is linked."""
        body = message.SerializeToString()
        if any(upstream.send_raw(command_id, body) for upstream in self.in_order_for(key)):
            return True
        metrics.NOTICES_DROPPED.inc()
        return False
