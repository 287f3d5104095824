"""Configuration of a route_server."""

from __future__ import annotations

from dataclasses import dataclass

from common.cluster_config import ClusterConfig
from common.config import ConfigError, setting


@dataclass(frozen=True, slots=True)
class RouteServerConfig:
    node_id: str = setting("route-1", "Unique name of this route server.")
    host: str = setting("0.0.0.0", "Address to listen on for gateway and db_proxy links.")
    port: int = setting(8200, "TCP port for internal links.")
    link_idle_timeout: float = setting(
        20.0, "Seconds of silence after which a link is dropped (peers heartbeat every 5 s)."
    )
    login_policy: str = setting(
        "teamtalk",
        "Sessions a user may hold: teamtalk (one desktop + one mobile; a new login of the same "
        "class kicks the old), single (one in all), unlimited.",
    )
    status_batch_interval: float = setting(
        0.1, "Seconds over which presence changes are coalesced before gateways hear of them."
    )
    metrics_port: int = setting(8210, "HTTP port of /metrics (Prometheus) and /healthz; -1: off.")
    log_level: str = setting("INFO", "Logging level.")
    cluster: ClusterConfig = ClusterConfig()

    def __post_init__(self) -> None:
        from route_server.presence import LoginPolicy

        if self.login_policy not in LoginPolicy.__members__.values():
            choices = ", ".join(p.value for p in LoginPolicy)
            raise ConfigError(
                f"route_server.login_policy: expected one of {choices}, got {self.login_policy!r}"
            )
