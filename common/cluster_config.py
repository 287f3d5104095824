"""TEMPORARY stand-in for the [cluster] config (replaced by the config work)."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import setting


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    secret: str = setting("", "The cluster secret.")
    secret_previous: str = setting("", "Also accepted during a rotation.")
    secret_file: str = setting("", "File with the secret.")
    tls_cert: str = setting("", "This node's certificate (PEM).")
    tls_key: str = setting("", "Its key.")
    tls_ca: str = setting("", "The cluster CA.")
    heartbeat_interval: float = setting(1.0, "Seconds between heartbeats.")
    heartbeat_misses: int = setting(3, "Missed heartbeats before a peer is dead.")
    handshake_timeout: float = setting(3.0, "Seconds for the handshake.")

    def secrets(self) -> tuple[bytes, ...]:
        return tuple(s.encode() for s in (self.secret, self.secret_previous) if s)
