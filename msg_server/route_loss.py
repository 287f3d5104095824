"""A gateway cut off from every route server lets its clients go.

The route servers drop a gateway's sessions once its link is silent for the
detection time; from then on pushes to its clients have nowhere to go, and
the clients, still connected, would miss them without knowing. Past
``route_loss_grace`` without any route link the gateway closes its
logged-in clients: they reconnect through discovery (to a gateway that is
linked) and sync from storage. Logins are not refused meanwhile (discovery
decides where clients go); clients that log in while no route server is
reachable are let go at the next check, for the same reason.

This holds from start-up too: a gateway that never reached a route server
does not keep clients past the grace either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from msg_server.metrics import CLIENTS_CLOSED_ROUTE_LOST

if TYPE_CHECKING:
    from msg_server.gateway import Gateway

log = logging.getLogger("gateway")


class RouteLossRule:
    """Sans-IO: whether, at ``now``, clients must be let go."""

    def __init__(self, grace: float, now: float) -> None:
        self.grace = grace
        self.lost_since: float | None = now  # no link yet: counted from the start

    def check(self, linked: bool, now: float) -> bool:
        if linked:
            self.lost_since = None
            return False
        if self.lost_since is None:
            self.lost_since = now
        return now - self.lost_since >= self.grace


async def watch(gateway: Gateway) -> None:
    """Checks a few times per grace period; runs until cancelled."""
    grace = gateway.config.route_loss_after
    if grace is None:
        return
    loop = asyncio.get_running_loop()
    rule = RouteLossRule(grace, loop.time())
    tick = max(0.02, min(0.25, grace / 5))
    while True:
        await asyncio.sleep(tick)
        linked = any(link.connected for link in gateway.route_links)
        if rule.check(linked, loop.time()) and gateway.logged_in:
            close_clients(gateway)


def close_clients(gateway: Gateway) -> None:
    conns = [c for conns in gateway.sessions.values() for c in conns if not c.closing]
    if not conns:
        return
    log.warning(
        "no route_server linked for over %.1fs: closing %d clients",
        gateway.config.route_loss_after or 0,
        len(conns),
    )
    for conn in conns:
        conn.close()
    CLIENTS_CLOSED_ROUTE_LOST.inc(len(conns))
