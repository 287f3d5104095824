"""The ``[cluster]`` table every server reads: the link secret, TLS, heartbeats.

Each server's config holds one :class:`ClusterConfig` as its ``cluster``
field, loaded from the same file's ``[cluster]`` table,
``IMCLUSTER_CLUSTER__*`` and ``--set cluster.KEY=VALUE``. The secret is
checked and read (from ``secret_file`` too) when the config is built, so a
server with a bad one refuses to start with a message naming the key, and
it is never shown: not in ``repr``, errors or the reference.

Files holding a secret (``secret_file``, ``tls_key``) must not be readable
or writable by other users, nor writable by the group: 0600, or 0640 with a
group the server runs as (``root:imcluster``). A looser file is refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import ssl
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, setting, split_address

MIN_SECRET_LENGTH = 16
TLS_KEYS = ("tls_cert", "tls_key", "tls_ca")
HOW_TO_SET = (
    "set [cluster] secret_file (imctl secret > FILE) or IMCLUSTER_CLUSTER__SECRET, or listen on 127.0.0.1"
)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.x) and localhost; anything else may be reachable."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a host name: it may resolve anywhere
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_private(key: str, path: Path) -> None:
    """Refuse a secret-bearing file other users can read, or change (see the module docstring)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ConfigError(
            f"{key}: {path} is open to other users (mode {stat.S_IMODE(mode):04o}): "
            f"chmod 600 {path}, or 640 with a group the server runs as"
        )


def _secret(key: str, value: str) -> str:
    value = value.strip()
    if value and len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{key}: too short, at least {MIN_SECRET_LENGTH} characters (imctl secret makes one)"
        )
    if any(not ch.isprintable() or ch.isspace() for ch in value):
        raise ConfigError(f"{key}: must be one line without spaces")
    return value


def read_secret_file(path: Path) -> tuple[str, str]:
    """(current, previous or "") from the file's first two non-empty lines."""
    check_private("cluster.secret_file", path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cluster.secret_file: cannot read {path}: {exc}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"cluster.secret_file: {path} is empty")
    if len(lines) > 2:
        raise ConfigError(
            f"cluster.secret_file: {path} has more than two lines (the secret, the previous one)"
        )
    current = _secret(f"cluster.secret_file ({path}, line 1)", lines[0])
    previous = _secret(f"cluster.secret_file ({path}, line 2)", lines[1]) if len(lines) == 2 else ""
    return current, previous


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The ``[cluster]`` table, shared by every server (docs/link-security.md)."""

    secret: str = setting(
        "",
        "The cluster secret (at least 16 characters) both ends of every internal link prove they hold. "
        "Prefer secret_file or IMCLUSTER_CLUSTER__SECRET: --set shows it in ps. Empty: only loopback "
        "addresses may be listened on.",
        secret=True,
    )
    secret_previous: str = setting(
        "", "A second secret also accepted, during a rotation (docs/link-security.md).", secret=True
    )
    secret_file: str = setting(
        "",
        "File whose first non-empty line is the secret and optional second line the previous one; "
        "overrides secret and secret_previous. Mode 0600 (or 0640 with the server's group), else refused.",
    )
    tls_cert: str = setting(
        "", "This node's certificate (PEM); with tls_key and tls_ca: mutual TLS on links."
    )
    tls_key: str = setting("", "This node's private key (PEM; mode 0600 or 0640, else refused).")
    tls_ca: str = setting(
        "", "The cluster CA certificate (PEM) peers' certificates must be signed by (imctl certs)."
    )
    heartbeat_interval: float = setting(1.0, "Seconds between heartbeats on an idle internal link.")
    heartbeat_misses: int = setting(
        3, "Heartbeat intervals of silence after which a peer is declared dead and its link closed."
    )
    handshake_timeout: float = setting(3.0, "Seconds a new internal link has to complete the handshake.")
    # The secrets as read when the config was built (from secret_file too):
    # a server never reads the file again, so what it accepts cannot change
    # under it; a rotation is a restart (docs/link-security.md).
    _secrets: tuple[bytes, ...] = dataclasses.field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        current = _secret("cluster.secret", self.secret)
        previous = _secret("cluster.secret_previous", self.secret_previous)
        if self.secret_file:
            current, previous = read_secret_file(Path(self.secret_file))
        elif previous and not current:
            raise ConfigError("cluster.secret_previous is set but cluster.secret is not")
        object.__setattr__(self, "secret", self.secret.strip())
        object.__setattr__(self, "secret_previous", self.secret_previous.strip())
        accepted = tuple(dict.fromkeys(s.encode() for s in (current, previous) if s))
        object.__setattr__(self, "_secrets", accepted)

        given = [key for key in TLS_KEYS if getattr(self, key)]
        if given and len(given) < len(TLS_KEYS):
            missing = ", ".join(key for key in TLS_KEYS if key not in given)
            raise ConfigError(
                f"cluster: tls_cert, tls_key and tls_ca go together for mutual TLS; missing: {missing}"
            )
        if given:
            for key in TLS_KEYS:
                if not Path(getattr(self, key)).is_file():
                    raise ConfigError(f"cluster.{key}: {getattr(self, key)} does not exist")
            check_private("cluster.tls_key", Path(self.tls_key))
            self.server_tls_context()  # a bad PEM is refused now, naming the key, not at the first link
            self.client_tls_context()

        if self.heartbeat_interval <= 0:
            raise ConfigError("cluster.heartbeat_interval: must be positive")
        if self.heartbeat_misses < 1:
            raise ConfigError("cluster.heartbeat_misses: must be at least 1")
        if self.handshake_timeout <= 0:
            raise ConfigError("cluster.handshake_timeout: must be positive")

    def secrets(self) -> tuple[bytes, ...]:
        """The accepted secrets, current first (the one this node proves with), then the previous.

        Empty when none is configured (loopback-only development).
        """
        return self._secrets

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert)

    @property
    def dead_after(self) -> float:
        """Seconds of silence after which a peer is dead: interval * misses (3 s by default)."""
        return self.heartbeat_interval * self.heartbeat_misses

    def server_tls_context(self) -> ssl.SSLContext | None:
        """For accepting internal links; None when TLS is off."""
        from common.tls import server_context

        return server_context(self.tls_cert, self.tls_key, self.tls_ca) if self.tls_enabled else None

    def client_tls_context(self) -> ssl.SSLContext | None:
        """For opening internal links; None when TLS is off."""
        from common.tls import client_context

        return client_context(self.tls_cert, self.tls_key, self.tls_ca) if self.tls_enabled else None

    def require_secret(self, key: str, host: str) -> None:
        """Refuse to listen for internal links on ``host`` (the setting ``key``) without a secret."""
        if self._secrets or is_loopback(host):
            return
        shown = host or "empty (every interface)"
        raise ConfigError(f"{key} is {shown} (not loopback) but no cluster secret is set: {HOW_TO_SET}")

    def require_secret_for_peers(self, key: str, addresses: Iterable[str]) -> None:
        """Refuse links to non-loopback peers without a secret: they require one, so would never link."""
        if self._secrets:
            return
        for address in addresses:
            host, _port = split_address(key, address)
            if not is_loopback(host):
                raise ConfigError(
                    f"{key} lists {address} (not loopback) but no cluster secret is set, and a server "
                    "listening there requires one: set [cluster] secret_file (imctl secret > FILE) or "
                    "IMCLUSTER_CLUSTER__SECRET, the same on every server"
                )
