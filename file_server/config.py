"""Configuration of a file_server (TeamTalk file transfer, 0x0501-0x0505)."""

from __future__ import annotations

from dataclasses import dataclass

from common.cluster_config import ClusterConfig
from common.config import ConfigError, setting, subsection

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileServerConfig:
    node_id: str = setting("file-1", "Unique name of this file server.")
    host: str = setting(
        "127.0.0.1",
        "Address of the internal-link port gateways link to; anything but loopback requires the "
        "cluster secret.",
    )
    port: int = setting(8610, "TCP port of internal links (gateways ask it for tasks).")
    client_host: str = setting("0.0.0.0", "Address clients connect to for transfers.")
    client_port: int = setting(8600, "TCP port clients connect to for transfers (IMFileLoginReq...).")
    advertise_ip: str = setting(
        "127.0.0.1",
        "Address handed to clients (IMFileRsp, IMFileNotify): one they can reach, never loopback "
        "outside a one-machine test.",
    )
    store: str = setting(
        "var/files",
        "Where offline files are kept: a directory (sharded), shared with msfs; see docs/files.md "
        "for an object store.",
    )
    max_file_size: int = setting(256 * MiB, "Largest file a task may carry, in bytes.")
    max_chunk_size: int = setting(
        64 * 1024, "Largest chunk of one IMFilePullDataRsp, in bytes (TeamTalk clients send 32 KiB)."
    )
    max_tasks_per_user: int = setting(8, "Transfers one user may have open at once, as sender or receiver.")
    max_tasks: int = setting(10_000, "Transfers open at once on this server; more are refused.")
    task_idle_timeout: float = setting(
        60.0, "Seconds a transfer may go without a frame before both of its connections are closed."
    )
    task_join_timeout: float = setting(
        300.0, "Seconds a task may wait for its peers to connect before it is dropped."
    )
    offline_ttl: float = setting(
        7 * 86400.0, "Seconds an uploaded offline file is kept for its receiver before it is removed."
    )
    max_connections: int = setting(10_000, "Client connections at once; more are closed on accept.")
    metrics_host: str = setting("127.0.0.1", "Address of /metrics and /healthz. Loopback by default.")
    metrics_port: int = setting(8620, "HTTP port of /metrics (Prometheus) and /healthz; -1: off.")
    log_level: str = setting("INFO", "Logging level.")
    cluster: ClusterConfig = subsection(  # noqa: RUF009 (it returns a dataclasses.field)
        ClusterConfig,
        "cluster",
        "The shared table: cluster secret, mutual TLS, heartbeats of internal links.",
    )

    def __post_init__(self) -> None:
        for key in ("max_file_size", "max_chunk_size", "max_tasks_per_user", "max_tasks", "max_connections"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"file_server.{key}: must be positive, got {getattr(self, key)}")
        if self.max_file_size >= 2**32:
            raise ConfigError("file_server.max_file_size: the protocol's sizes are 32-bit (below 4 GiB)")
        for key in ("task_idle_timeout", "task_join_timeout", "offline_ttl"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"file_server.{key}: must be positive seconds, got {getattr(self, key)}")
        self.cluster.require_secret("file_server.host", self.host)
