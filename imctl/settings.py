"""Where imctl finds the cluster: config file, admin API URL and token.

The admin commands look for the URL and the token, in this order, in
``--url``/``--token``, ``$IMCLUSTER_URL``/``$IMCLUSTER_TOKEN``, the config
file's ``[imctl]`` table, (token only) the ``[login_server]`` table's
``admin_token`` of the same file, and the files ``imctl up`` writes into its
run directory; the URL defaults to the local cluster's login_server.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, load_config, setting

DEFAULT_URL = "http://127.0.0.1:8080"
TOKEN_FILE = "admin-token"
URL_FILE = "admin-url"
API_SUFFIX = "/admin/v1"  # what `imctl up` prints after the base URL; accepted and dropped
SECRET_FILE = "cluster-secret"  # what `imctl up` passes its servers as cluster.secret_file
TLS_DIR = "tls"  # `imctl up --tls`: the CA and the servers' certificates


@dataclass(frozen=True, slots=True)
class ImctlConfig:
    """The ``[imctl]`` table: the admin CLI's own settings (servers ignore it)."""

    url: str = setting(
        "",
        "Admin API base URL; empty: the one `imctl up` wrote to run_dir/admin-url, "
        "else http://127.0.0.1:8080. $IMCLUSTER_URL and --url override it.",
    )
    token: str = setting(
        "",
        "Admin API token; empty: login_server.admin_token of the same file, else "
        "run_dir/admin-token (written by `imctl up`). $IMCLUSTER_TOKEN and --token override it.",
    )
    run_dir: str = setting(
        "var/run", "Where `imctl up` keeps logs, ready files, the admin token and the cluster secret."
    )

    def __post_init__(self) -> None:
        if self.url:
            base_url(self.url, "imctl.url")


def base_url(value: str, source: str) -> str:
    """The admin API's base URL from ``value``, or ConfigError naming ``source``.

    http or https with a host; a trailing ``/admin/v1`` (as `imctl up`
    prints it) and trailing slashes are dropped, a path before them (a
    reverse proxy's prefix) is kept.
    """
    expected = f"{source}: expected http://HOST[:PORT] or https://..., got {value!r}"
    try:
        parts = urllib.parse.urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(expected) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(expected)
    if parts.query or parts.fragment:
        raise ConfigError(f"{source}: no query or fragment expected, got {value!r}")
    path = parts.path.rstrip("/").removesuffix(API_SUFFIX).rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def resolve_config(path: str | Path | None) -> Path | None:
    """--config, else $IMCLUSTER_CONFIG, else ./imcluster.toml if present."""
    chosen = path or os.environ.get("IMCLUSTER_CONFIG")
    if chosen:
        return Path(chosen)
    default = Path("imcluster.toml")
    return default if default.exists() else None


def load_imctl_config(config: Path | None) -> ImctlConfig:
    return load_config(ImctlConfig, "imctl", config)


@dataclass(frozen=True, slots=True)
class Target:
    """The admin API to talk to, and where its URL came from."""

    url: str
    token: str
    url_is_default: bool  # nobody asked for this URL: the local cluster is assumed


def _read_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def resolve_target(config: Path | None, url: str | None, token: str | None) -> Target:
    """The URL and token by the precedence in this module's docstring."""
    imctl = load_imctl_config(config)
    run_dir = Path(imctl.run_dir)
    env_url = os.environ.get("IMCLUSTER_URL")
    chosen_url, source = next(
        ((u, s) for u, s in ((url, "--url"), (env_url, "$IMCLUSTER_URL"), (imctl.url, "imctl.url")) if u),
        ("", ""),
    )
    url_is_default = not chosen_url
    if not chosen_url:
        url_file = run_dir / URL_FILE
        chosen_url, source = _read_file(url_file) or DEFAULT_URL, str(url_file)
    chosen_url = base_url(chosen_url, source)
    chosen_token = token or os.environ.get("IMCLUSTER_TOKEN") or imctl.token
    if not chosen_token:
        from login_server.config import LoginServerConfig

        chosen_token = load_config(LoginServerConfig, "login_server", config).admin_token
    if not chosen_token:
        chosen_token = _read_file(run_dir / TOKEN_FILE)
    return Target(chosen_url, chosen_token, url_is_default)


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (0600, also if the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
