"""Configuration of the login_server (HTTP balancer)."""

from __future__ import annotations

from dataclasses import dataclass

from common.cluster_config import ClusterConfig
from common.config import ConfigError, setting, split_address, subsection


@dataclass(frozen=True, slots=True)
class LoginServerConfig:
    node_id: str = setting(
        "login-1", "Unique name of this login_server: what it links as (admin API) and answers as."
    )
    host: str = setting("0.0.0.0", "Address of the HTTP port, for clients (discovery) and the admin API.")
    http_port: int = setting(8080, "HTTP port clients ask for a gateway (GET /msg_server).")
    gateway_host: str = setting(
        "127.0.0.1",
        "Address of the gateway-link port; anything but loopback requires the cluster secret.",
    )
    gateway_port: int = setting(8100, "TCP port gateways link to and report their load on.")
    msfs_prior: str = setting(
        "", "File server URL handed to clients (msfsPrior), e.g. http://10.0.0.5:8700/."
    )
    msfs_backup: str = setting("", "Fallback file server URL (msfsBackup); empty: same as msfs_prior.")
    discovery_url: str = setting("", "Discovery URL handed to clients (discovery).")
    backlog: int = setting(4096, "Listen backlog of both ports (TeamTalk's 64 overflows in login storms).")
    admin_token: str = setting(
        "", "Bearer token of the admin API (/admin/v1); empty: the admin API is off.", secret=True
    )
    db_proxies: tuple[str, ...] = setting(["127.0.0.1:10600"], "db_proxy addresses the admin API calls.")
    route_servers: tuple[str, ...] = setting(
        ["127.0.0.1:8200"], "route_server addresses the admin API calls."
    )
    metrics_host: str = setting(
        "127.0.0.1",
        "Address of /metrics, apart from the client-facing HTTP port. Loopback by default.",
    )
    metrics_port: int = setting(
        8110, "HTTP port of /metrics (Prometheus); -1: off. /healthz stays on http_port, for balancers."
    )
    log_level: str = setting("INFO", "Logging level.")
    cluster: ClusterConfig = subsection(  # noqa: RUF009 (it returns a dataclasses.field)
        ClusterConfig,
        "cluster",
        "The shared table: cluster secret, mutual TLS, heartbeats of internal links.",
    )

    def __post_init__(self) -> None:
        for key in ("http_port", "gateway_port"):
            if not 0 <= getattr(self, key) <= 65535:
                raise ConfigError(f"login_server.{key}: port out of range")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError("login_server.metrics_port: port out of range")
        if self.backlog < 1:
            raise ConfigError("login_server.backlog: must be at least 1")
        for key in ("db_proxies", "route_servers"):
            for address in getattr(self, key):
                split_address(f"login_server.{key}", address)
        # The token travels in an Authorization header: whitespace in it could
        # never be sent, and the check would silently fail every request.
        if any(ch.isspace() or not ch.isprintable() for ch in self.admin_token):
            raise ConfigError("login_server.admin_token: must not contain whitespace")
        self.cluster.require_secret("login_server.gateway_host", self.gateway_host)
        if self.admin_token:  # else the admin API is off and links to nothing
            for key in ("db_proxies", "route_servers"):
                self.cluster.require_secret_for_peers(f"login_server.{key}", getattr(self, key))
