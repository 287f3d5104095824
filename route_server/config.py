"""Configuration of a route_server."""

from __future__ import annotations

from dataclasses import dataclass

from common.cluster_config import ClusterConfig
from common.config import ConfigError, setting, subsection
from common.link.wire import INTERNAL_MAX_FRAME


@dataclass(frozen=True, slots=True)
class RouteServerConfig:
    node_id: str = setting("route-1", "Unique name of this route server.")
    host: str = setting(
        "127.0.0.1",
        "Address to listen on for gateway, db_proxy and admin links; anything but loopback requires "
        "the cluster secret.",
    )
    port: int = setting(8200, "TCP port for internal links.")
    login_policy: str = setting(
        "teamtalk",
        "Sessions a user may hold: teamtalk (one desktop + one mobile; a new login of the same "
        "class kicks the old), single (one in all), unlimited.",
    )
    status_batch_interval: float = setting(
        0.1, "Seconds over which presence changes are coalesced before gateways hear of them."
    )
    max_pending_notices: int = setting(
        50_000,
        "Profile notices (avatar, sign-info changes) waiting for the next status_batch_interval, "
        "one per user and kind (a newer change replaces the pending one). Past it a change of "
        "another user is dropped and counted (imcluster_route_profile_notices_dropped). Each online "
        "user needs at most two.",
    )
    max_pending_notice_bytes: int = setting(
        16 * 1024 * 1024,
        "Bytes the pending profile notices may hold (a sign-info notice is up to about 1 KB; one "
        "batch is one link frame, so at most half the 32 MiB internal frame); past it a change is "
        "dropped and counted.",
    )
    push_timeout: float = setting(
        0.5,
        "Seconds one stored-message push (PUSH_MSG) to a gateway may take; a gateway that does not "
        "answer in time has its recipients handed back to db_proxy for a retry. Keep it below "
        "db_proxy.push_timeout, so the answer reaches db_proxy before it gives up on this call.",
    )
    metrics_host: str = setting(
        "127.0.0.1",
        "Address of /metrics and /healthz. Loopback by default: set this host's internal address for "
        "a Prometheus elsewhere, never a client-facing one.",
    )
    metrics_port: int = setting(8210, "HTTP port of /metrics (Prometheus) and /healthz; -1: off.")
    log_level: str = setting("INFO", "Logging level.")
    cluster: ClusterConfig = subsection(  # noqa: RUF009 (it returns a dataclasses.field)
        ClusterConfig,
        "cluster",
        "The shared table: cluster secret, mutual TLS, heartbeats of internal links.",
    )

    def __post_init__(self) -> None:
        from route_server.presence import LoginPolicy

        if self.login_policy not in LoginPolicy.__members__.values():
            choices = ", ".join(p.value for p in LoginPolicy)
            raise ConfigError(
                f"route_server.login_policy: expected one of {choices}, got {self.login_policy!r}"
            )
        if not 0 < self.push_timeout <= 60:
            raise ConfigError(
                f"route_server.push_timeout: expected 0 < seconds <= 60, got {self.push_timeout}"
            )
        if self.max_pending_notices < 1:
            raise ConfigError(
                f"route_server.max_pending_notices: expected >= 1, got {self.max_pending_notices}"
            )
        if not 4096 <= self.max_pending_notice_bytes <= INTERNAL_MAX_FRAME // 2:
            # One batch is one link frame.
            raise ConfigError(
                f"route_server.max_pending_notice_bytes: expected 4096 to {INTERNAL_MAX_FRAME // 2}, "
                f"got {self.max_pending_notice_bytes}"
            )
        self.cluster.require_secret("route_server.host", self.host)

    @property
    def settle_time(self) -> float:
        """How long after start pushes are refused: the links' detection time, within which
        every gateway linked to a previous incarnation has noticed and relinked."""
        return self.cluster.dead_after
