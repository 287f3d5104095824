"""What every link of a process shares: secrets, timing, TLS; and the reconnect backoff."""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from common.cluster_config import ClusterConfig
from common.link.session import Timing


@dataclass(frozen=True, slots=True)
class LinkSettings:
    secrets: tuple[bytes, ...] = ()  # current first; empty: no secret (loopback only)
    timing: Timing = field(default_factory=Timing)
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    connect_timeout: float = 3.0

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig) -> LinkSettings:
        return cls(
            secrets=cluster.secrets(),
            timing=Timing(cluster.heartbeat_interval, cluster.heartbeat_misses, cluster.handshake_timeout),
            server_ssl=cluster.server_tls_context(),
            client_ssl=cluster.client_tls_context(),
            connect_timeout=max(cluster.handshake_timeout, 1.0),
        )


class Backoff:
    """Jittered, capped exponential backoff that resets only after a link stayed up.

    A peer that accepts and at once closes (a wrong role, a mis-pointed
    address, a refused node id) must not make us reconnect hundreds of times
    a second: a connect is no success, only a link that lasted is.
    """

    def __init__(
        self,
        initial: float = 0.05,
        cap: float = 1.0,
        stable_after: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.stable_after = stable_after
        self._rng = rng
        self._base = initial
        self._up_since: float | None = None

    def failed(self) -> float:
        """Seconds to wait before the next attempt (between half and all of the base)."""
        delay = self._base * (0.5 + self._rng() / 2)
        self._base = min(self.cap, self._base * 2)
        return delay

    def link_up(self, now: float) -> None:
        self._up_since = now

    def link_down(self, now: float) -> float:
        """The link dropped: the delay before reconnecting."""
        if self._up_since is not None and now - self._up_since >= self.stable_after:
            self._base = self.initial
        self._up_since = None
        return self.failed()
