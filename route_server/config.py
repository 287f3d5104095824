"""Configuration of a route_server."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import setting


@dataclass(frozen=True, slots=True)
class RouteServerConfig:
    node_id: str = setting("route-1", "Unique name of this route server.")
    host: str = setting("0.0.0.0", "Address to listen on for gateway and db_proxy links.")
    port: int = setting(8200, "TCP port for internal links.")
    link_idle_timeout: float = setting(
        20.0, "Seconds of silence after which a link is dropped (peers heartbeat every 5 s)."
    )
    log_level: str = setting("INFO", "Logging level.")
