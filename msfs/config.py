"""Configuration of msfs, the picture and file store TeamTalk clients upload to over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import ConfigError, setting

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MsfsConfig:
    node_id: str = setting("msfs-1", "Unique name of this msfs.")
    host: str = setting(
        "0.0.0.0",
        "Address clients upload to and download from. TeamTalk clients send no credentials: "
        "keep this port on the intranet (docs/files.md).",
    )
    port: int = setting(8700, "HTTP port (what login_server.msfs_prior names).")
    store: str = setting(
        "var/files", "Where pictures are kept: a directory (sharded), shared with file_server."
    )
    max_upload_size: int = setting(10 * MiB, "Largest upload, in bytes; larger ones are refused.")
    allowed_types: tuple[str, ...] = setting(
        [
            "image/jpeg",
            "image/png",
            "image/gif",
            "image/bmp",
            "image/webp",
            "audio/amr",
            "application/octet-stream",
        ],
        "Content types an upload may be (checked against its first bytes where the type has a signature).",
    )
    uploads_per_minute: int = setting(60, "Uploads one client address may make per minute; more get 429.")
    max_concurrent_uploads: int = setting(64, "Uploads streaming at once; more are refused (503).")
    metrics_host: str = setting("127.0.0.1", "Address of /metrics and /healthz. Loopback by default.")
    metrics_port: int = setting(8710, "HTTP port of /metrics (Prometheus) and /healthz; -1: off.")
    log_level: str = setting("INFO", "Logging level.")

    def __post_init__(self) -> None:
        for key in ("max_upload_size", "uploads_per_minute", "max_concurrent_uploads"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"msfs.{key}: must be positive, got {getattr(self, key)}")
