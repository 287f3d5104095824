"""Asking a db_proxy which roles it serves (``DB_PROXY_INFO``), for every side that links to one.

Gateways and login_server's admin API ask once per link, in the Upstream's
``on_connected`` (before the link counts as ready), so a request never goes to
a db_proxy whose roles are not known, and a db_proxy that comes back with
other roles is learned again on the new link.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from common.commands import Rpcs
from common.db_roles import ALL_ROLES, DbRole
from common.errors import ImError
from common.link import Link
from common.pb import internal_pb2

log = logging.getLogger("link")

INFO_TIMEOUT = 3.0  # a db_proxy answers from memory: no answer in this is no link


def announced_roles(info: internal_pb2.DbProxyInfo) -> frozenset[DbRole]:
    """The roles a db_proxy named that this version knows (a newer one may name more)."""
    known = {str(role) for role in ALL_ROLES}
    return frozenset(DbRole(name) for name in info.roles if name in known)


def learn_info(
    learned: Callable[[internal_pb2.DbProxyInfo], None], timeout: float = INFO_TIMEOUT
) -> Callable[[Link], Awaitable[None]]:
    """An ``on_connected`` that asks a new db link its roles and hands the answer to ``learned``.

    No answer (in time, or a peer that refuses the request and drops the
    link): the link is aborted, so the Upstream never marks it ready and
    links again after its backoff. A link is never ready with unknown roles.
    """

    async def on_connected(link: Link) -> None:
        try:
            info = await link.call(Rpcs.DB_PROXY_INFO, internal_pb2.DbProxyInfoReq(), timeout)
        except ImError as exc:  # expected when a db_proxy dies or hangs right after the handshake
            log.warning("db_proxy %s did not say its roles (%s); linking again", link.peer, exc)
            link.abort()
            return
        learned(info)

    return on_connected
