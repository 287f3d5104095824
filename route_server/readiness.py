"""When a route server may answer pushes, sans-IO.

A route server's table is only what the gateways told it. One that has just
started (or restarted) knows nobody until the gateways have relinked and
sent their snapshots; answering a push then would call its recipients
offline and the message would never be pushed to them. So it refuses
(``Unavailable``: the dispatcher tries another route server) until

* the detection time has passed since it started: a gateway that was linked
  to the previous incarnation notices the loss and relinks within it, and
* every gateway linked now has sent its snapshot.

Having lost every gateway link is starting again: a route server whose host
was cut off (or that was frozen) has an empty table when the links come
back, one by one. So the first gateway to link to a route server that had
none opens a new settle window, and pushes go through other route servers
until the rest have relinked and sent their snapshots. With no gateway
linked at all it refuses too: it cannot tell a user is offline, only that
it is cut off (a db_proxy may relink to it before any gateway does).

A gateway that links and then sends no snapshot for a whole detection time
blocks no longer: a dead one is dropped by the heartbeats by then, and a
live one that sends none is broken, not settling.
"""

from __future__ import annotations


class Readiness:
    def __init__(self, started_at: float, settle_time: float) -> None:
        self.settle_time = settle_time
        self.settled_at = started_at + settle_time
        self._awaiting: dict[str, float] = {}  # gateway -> when it linked, snapshot not yet seen
        self._linked: set[str] = set()

    def linked(self, gateway_id: str, now: float) -> None:
        if not self._linked:
            self.settled_at = max(self.settled_at, now + self.settle_time)
        self._linked.add(gateway_id)
        self._awaiting[gateway_id] = now

    def snapshot(self, gateway_id: str) -> None:
        self._awaiting.pop(gateway_id, None)

    def unlinked(self, gateway_id: str) -> None:
        self._linked.discard(gateway_id)
        self._awaiting.pop(gateway_id, None)

    def awaiting(self, now: float) -> list[str]:
        """Linked gateways whose snapshot is still due (and may still come)."""
        return sorted(g for g, since in self._awaiting.items() if now - since < self.settle_time)

    def refusal(self, now: float) -> str | None:
        """Why pushes are refused now, or None once settled."""
        if not self._linked:
            return "no gateway linked"
        if now < self.settled_at:
            return f"(re)joining, {self.settled_at - now:.1f}s until gateways have relinked"
        waiting = self.awaiting(now)
        if waiting:
            return f"no snapshot yet from {', '.join(waiting)}"
        return None

    def ready(self, now: float) -> bool:
        return self.refusal(now) is None


class LostGateways:
    """Users of gateways whose link to this route server dropped a moment ago.

    Losing a link is not losing the gateway: it may be alive, with its
    clients still connected, relinking (this server was frozen, the link
    was cut) or linked to another route server only. For ``hold`` seconds
    after the loss, until the gateway's snapshot is back, a push to one of
    its users is handed back for a retry (through another route server, or
    this one once the gateway is back) rather than called done. Past that,
    a gateway cut off from every route server has closed its clients (its
    ``route_loss_grace`` is the same detection time) and they sync at their
    next login.
    """

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self._lost: dict[str, tuple[float, frozenset[int]]] = {}  # gateway -> (lost at, its users)

    def lost(self, gateway_id: str, users: set[int], now: float) -> None:
        if users:
            self._lost[gateway_id] = (now, frozenset(users))

    def back(self, gateway_id: str) -> None:
        """The gateway's snapshot arrived: the table knows its users again."""
        self._lost.pop(gateway_id, None)

    def held(self, user_ids: list[int], now: float) -> set[int]:
        """Which of ``user_ids`` may still be connected to a gateway lost just now."""
        for gateway_id in [g for g, (at, _) in self._lost.items() if now - at >= self.hold]:
            del self._lost[gateway_id]
        if not self._lost:
            return set()
        return {u for u in user_ids if any(u in users for _, users in self._lost.values())}
