"""Which gateway the next client is sent to (sans-IO: no sockets, no clock).

Gateways register over their link with their address and limit, then report
their number of logged-in connections every couple of seconds. ``pick``
returns the least-loaded gateway below its limit, like TeamTalk's login
server, with one difference: between two reports TeamTalk hands *every*
client to the same gateway (2,000 logins/s all land on one of them). Here
each hand-out is counted as an estimated connection until the gateway's next
report replaces the estimate with the truth, so a login storm is spread over
the gateways and cannot push one far past its limit.

Registrations are keyed by node_id and owned by the link that made them: a
gateway that reconnects (its old TCP link may linger half-open until the
idle timeout) replaces its own entry, and the old link's later reports and
drop are ignored because it no longer owns the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class PickError(IntEnum):
    """Why no gateway was handed out; the values are TeamTalk's ``code``."""

    NO_GATEWAY = 1
    ALL_FULL = 2


@dataclass(slots=True)
class Gateway:
    node_id: str
    prior_ip: str
    backup_ip: str  # never empty: falls back to prior_ip
    port: int
    max_connections: int
    started_at: int  # the gateway's start, unix seconds (0: unknown)
    registered_at: float  # caller's clock
    last_report: float  # caller's clock
    connections: int = 0  # as last reported by the gateway
    handed_out: int = 0  # clients sent there since that report
    peer: str = ""  # where the link comes from, for the admin
    owner: object = field(default=None, repr=False, compare=False)

    @property
    def load(self) -> int:
        """Estimated connections: the last report plus hand-outs since."""
        return self.connections + self.handed_out

    @property
    def full(self) -> bool:
        return self.load >= self.max_connections

    def uptime(self, now: float, wall: float) -> int:
        """Seconds since the gateway started; ``now`` is the caller's clock, ``wall`` unix time.

        started_at comes from the gateway's clock (skew can make the
        difference negative, hence max); without it, count from our
        registration.
        """
        started = self.started_at or wall - (now - self.registered_at)
        return max(0, round(wall - started))


class Balancer:
    """The registered gateways and the choice between them."""

    def __init__(self) -> None:
        self._gateways: dict[str, Gateway] = {}

    def __len__(self) -> int:
        return len(self._gateways)

    def get(self, node_id: str) -> Gateway | None:
        return self._gateways.get(node_id)

    def gateways(self) -> list[Gateway]:
        """Every registered gateway, ordered by node_id."""
        return [self._gateways[key] for key in sorted(self._gateways)]

    def register(
        self,
        node_id: str,
        *,
        owner: object,
        prior_ip: str,
        backup_ip: str,
        port: int,
        max_connections: int,
        started_at: int,
        now: float,
        connections: int = 0,
        peer: str = "",
    ) -> Gateway | None:
        """Add or update ``node_id``; returns the entry it replaced, if any.

        The same owner registering again (its address changed) keeps its
        counters; a different owner (the gateway reconnected) starts afresh
        from ``connections`` and takes the entry over.
        """
        backup_ip = backup_ip or prior_ip
        current = self._gateways.get(node_id)
        if current is not None and current.owner is owner:
            current.prior_ip, current.backup_ip, current.port = prior_ip, backup_ip, port
            current.max_connections, current.started_at = max_connections, started_at
            current.peer = peer
            return None
        self._gateways[node_id] = Gateway(
            node_id=node_id,
            prior_ip=prior_ip,
            backup_ip=backup_ip,
            port=port,
            max_connections=max_connections,
            started_at=started_at,
            registered_at=now,
            last_report=now,
            connections=connections,
            peer=peer,
            owner=owner,
        )
        return current

    def report_load(self, node_id: str, *, owner: object, connections: int, now: float) -> bool:
        """Record a load report; False if ``owner`` does not hold ``node_id``."""
        gateway = self._gateways.get(node_id)
        if gateway is None or gateway.owner is not owner:
            return False
        gateway.connections = connections
        # The report counts every client that has logged in by now, including
        # those we handed out; clients still on their way are under-counted
        # until the next report, which is the best a periodic report allows.
        gateway.handed_out = 0
        gateway.last_report = now
        return True

    def remove(self, node_id: str, *, owner: object) -> bool:
        """Forget ``node_id`` unless another link has registered it since."""
        gateway = self._gateways.get(node_id)
        if gateway is None or gateway.owner is not owner:
            return False
        del self._gateways[node_id]
        return True

    def pick(self) -> Gateway | PickError:
        """The least-loaded gateway under its limit, counted as handed out.

        Ties go to the smallest node_id. That is deterministic (easy to test
        and to reason about in logs) and still fair: the hand-out raises the
        winner's estimated load, so equal gateways take turns.
        """
        if not self._gateways:
            return PickError.NO_GATEWAY
        best: Gateway | None = None
        for gateway in self._gateways.values():
            if gateway.full:
                continue
            if best is None or (gateway.load, gateway.node_id) < (best.load, best.node_id):
                best = gateway
        if best is None:
            return PickError.ALL_FULL
        best.handed_out += 1
        return best
