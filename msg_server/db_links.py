"""A gateway's links to the db_proxies, and which roles each one serves.

Each link asks ``DB_PROXY_INFO`` as soon as it is made, before it counts as
ready (common/db_info.py). A request goes to a db_proxy serving its role
(common/db_roles.py): the one its key hashes to (``shard_of``) over that
role's sub-list, in config order, so every gateway with the same config
picks the same one; else the next connected one in that sub-list. None up:
refused at once (LinkDown naming the role), never left waiting.

A link keeps the roles it last announced while it is down: the sub-lists,
and so the hash, stay the same across a restart, and only fail-over moves
a key for a while.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.conversation import ShardKey, shard_of
from common.db_info import announced_roles, learn_info
from common.db_roles import DbRole
from common.link import Identity, LinkDown, LinkSettings, Upstream
from common.pb import internal_pb2
from msg_server.save_batch import SaveBatches, save_batches

if TYPE_CHECKING:
    from msg_server.config import MsgServerConfig

log = logging.getLogger("gateway")

#: What a gateway sends db_proxies: everything but the admin API's calls.
GATEWAY_ROLES: tuple[DbRole, ...] = (DbRole.LOGIN, DbRole.DIRECTORY, DbRole.MESSAGES)


class DbLinks:
    """The configured db_proxy links (config order) and the roles each last announced."""

    def __init__(
        self,
        addresses: list[tuple[str, int]],
        me: Identity,
        settings: LinkSettings,
        info_timeout: float,
    ) -> None:
        self.roles: dict[str, frozenset[DbRole]] = {}  # by link name, once learned
        self.links: list[Upstream] = []
        # Each role's links in config order: asked on every request, changed
        # only when a link announces its roles.
        self._serving: dict[DbRole, list[Upstream]] = {}
        # The batchers of message saves, one per link (msg_server/save_batch.py), made on first use.
        self.save_batches: SaveBatches | None = None
        for host, port in addresses:
            name = f"db@{host}:{port}"
            self.links.append(
                Upstream(
                    name,
                    [(host, port)],
                    me,
                    settings=settings,
                    expect_role=internal_pb2.ROLE_DB_PROXY,
                    on_connected=learn_info(self._learner(name), info_timeout),
                )
            )

    def _learner(self, name: str) -> Callable[[internal_pb2.DbProxyInfo], None]:
        def learned(info: internal_pb2.DbProxyInfo) -> None:
            self.roles[name] = announced_roles(info)
            self._serving = {
                role: [link for link in self.links if role in self.roles.get(link.name, frozenset())]
                for role in DbRole
            }
            log.info("%s: db_proxy %s serves %s", name, info.node_id, ", ".join(info.roles) or "nothing")

        return learned

    def serving(self, role: DbRole) -> list[Upstream]:
        """The links whose db_proxy serves ``role`` (as last announced), in config order."""
        return self._serving.get(role, [])

    def pick(self, role: DbRole, key: ShardKey) -> Upstream:
        """The db_proxy of ``role`` for ``key``: its shard while connected, else the next one up."""
        candidates = self.serving(role)
        n = len(candidates)
        first = shard_of(key, n) if n else 0
        for i in range(n):
            link = candidates[(first + i) % n]
            if link.connected:
                return link
        raise LinkDown(f"no db_proxy serving {role} is reachable")

    def save(
        self, key: ShardKey, req: internal_pb2.DbSaveMsgReq, config: MsgServerConfig
    ) -> asyncio.Future[internal_pb2.DbSaveMsgRes]:
        """Queue a message on the save batcher of the db_proxy its conversation ``key`` picks.

        Not a coroutine: queued before this returns, so the order of a
        connection's messages is kept. Raises LinkDown (no db_proxy serving
        messages) or Overloaded (too many saves outstanding on that link) at
        once; the future fails as a DB_SAVE_MSG would (msg_server/save_batch.py).
        """
        return save_batches(self, config).for_link(self.pick(DbRole.MESSAGES, key)).save(req)

    def reachable(self, role: DbRole) -> bool:
        return any(link.connected for link in self.serving(role))

    def health(self) -> dict[str, bool]:
        """Per role a gateway needs: whether some db_proxy serving it is linked."""
        return {str(role): self.reachable(role) for role in GATEWAY_ROLES}
