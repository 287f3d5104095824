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
        "keep this port on the intranet (docs/msfs.md).",
    )
    port: int = setting(8700, "HTTP port (what login_server.msfs_prior names); 0 picks a free one.")
    public_url: str = setting(
        "",
        "Prefix of the `url` in upload replies, e.g. http://10.0.0.5:8700/ (or a proxy's); empty: "
        "http://<the request's Host header>/, as TeamTalk's msfs does.",
    )
    store: str = setting(
        "var/files", "Where pictures are kept: a directory (sharded), shared with file_server."
    )
    max_upload_size: int = setting(
        10 * MiB, "Largest file, in bytes; larger ones are refused (error_code 1) while streaming."
    )
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
        "Content types an upload may be: a claimed image type must be an image by its first bytes, "
        "and a file is stored as the type its bytes show (Android claims octet-stream for pictures). "
        "Without application/octet-stream only files with a known signature are accepted.",
    )
    uploads_per_minute: int = setting(
        60, "Uploads one client address may make per minute (in a burst); more are refused (error_code 7)."
    )
    max_concurrent_uploads: int = setting(64, "Uploads streaming at once; more are refused (error_code 8).")
    upload_timeout: float = setting(
        120.0, "Seconds one upload may take from its headers to its last byte (error_code 9 after)."
    )
    metrics_host: str = setting("127.0.0.1", "Address of /metrics and /healthz. Loopback by default.")
    metrics_port: int = setting(8710, "HTTP port of /metrics (Prometheus) and /healthz; -1: off.")
    log_level: str = setting("INFO", "Logging level.")

    def __post_init__(self) -> None:
        for key in ("max_upload_size", "uploads_per_minute", "max_concurrent_uploads", "upload_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"msfs.{key}: must be positive, got {getattr(self, key)}")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"msfs.public_url: must start with http:// or https://: {self.public_url!r}")
        if not self.allowed_types:
            raise ConfigError("msfs.allowed_types: must name at least one type")
