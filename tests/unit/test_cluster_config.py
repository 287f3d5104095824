"""The [cluster] table: the secret (and its file), TLS settings, heartbeats, and
the refusal to listen beyond loopback without a secret."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from common.cluster_config import ClusterConfig, is_loopback
from common.config import ConfigError, describe, load_config
from db_proxy.config import DbProxyConfig
from imctl.certs import issue
from login_server.config import LoginServerConfig
from msg_server.config import MsgServerConfig
from route_server.config import RouteServerConfig

SECRET = "correct-horse-battery-staple-0123"
OLD = "previous-secret-abcdefghijklmnop"


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_no_secret_by_default() -> None:
    config = ClusterConfig()
    assert config.secrets() == ()
    assert not config.tls_enabled
    assert config.dead_after == 3.0  # a silent peer is dead within 3 s


def test_inline_secrets_current_first_stripped() -> None:
    config = ClusterConfig(secret=f"  {SECRET}\n", secret_previous=OLD)
    assert config.secrets() == (SECRET.encode(), OLD.encode())
    assert config.secret == SECRET
    assert ClusterConfig(secret=SECRET, secret_previous=SECRET).secrets() == (SECRET.encode(),)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"secret": "short"}, "cluster.secret: too short"),
        ({"secret": "has a space in the middle"}, "one line without spaces"),
        ({"secret_previous": OLD}, "secret_previous is set but cluster.secret is not"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"heartbeat_misses": 0}, "heartbeat_misses"),
        ({"handshake_timeout": -1}, "handshake_timeout"),
        ({"tls_cert": "/x.pem"}, "go together .* missing: tls_key, tls_ca"),
    ],
)
def test_bad_values_are_refused_naming_the_key(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClusterConfig(**fields)


def test_secret_file_overrides_and_carries_the_previous(tmp_path: Path) -> None:
    path = secret_file(tmp_path, f"\n{SECRET}\n\n{OLD}\n")
    config = ClusterConfig(secret="inline-secret-ignored-0000", secret_file=str(path))
    assert config.secrets() == (SECRET.encode(), OLD.encode())
    # Read once, when the config is built: a server's accepted secrets do not change under it.
    path.write_text("another-secret-entirely-000000\n")
    assert config.secrets() == (SECRET.encode(), OLD.encode())


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        (SECRET, 0o644, "open to other users .*0644.*chmod 600"),
        (SECRET, 0o660, "open to other users"),  # the group could replace it
        ("", 0o600, "is empty"),
        ("tiny\n", 0o600, "line 1.*too short"),
        (f"{SECRET}\n{OLD}\n{OLD}\n", 0o600, "more than two lines"),
    ],
)
def test_bad_secret_files_are_refused(tmp_path: Path, text: str, mode: int, message: str) -> None:
    path = secret_file(tmp_path, text, mode)
    with pytest.raises(ConfigError, match=f"cluster.secret_file.*{message}"):
        ClusterConfig(secret_file=str(path))


def test_group_readable_secret_file_is_accepted(tmp_path: Path) -> None:
    # root:imcluster 0640 is how the systemd unit's user reads it.
    assert ClusterConfig(secret_file=str(secret_file(tmp_path, SECRET, 0o640))).secrets()


def test_missing_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.secret_file: cannot read"):
        ClusterConfig(secret_file=str(tmp_path / "nope"))


def test_the_secret_is_shown_nowhere(tmp_path: Path) -> None:
    config = ClusterConfig(secret=SECRET, secret_previous=OLD)
    server = DbProxyConfig(cluster=config)
    for text in (repr(config), repr(server), str(server)):
        assert SECRET not in text and OLD not in text
    assert all(default == "" for name, _, default, _ in describe(ClusterConfig) if name.startswith("secret"))
    # Not in errors either, even of the wrong type.
    toml = tmp_path / "c.toml"
    toml.write_text('[cluster]\nsecret = ["correct-horse-battery-staple-0123"]\n')
    with pytest.raises(ConfigError) as refused:
        load_config(DbProxyConfig, "db_proxy", toml, environ={})
    assert "cluster.secret" in str(refused.value) and SECRET not in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        ClusterConfig(secret="way too short")
    assert "way too short" not in str(refused.value)
    # The admin token is a secret of the same kind.
    assert "tok-0123456789" not in repr(LoginServerConfig(admin_token="tok-0123456789"))


def test_loaded_from_the_cluster_table_env_and_set(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[cluster]\nheartbeat_interval = 0.5\nheartbeat_misses = 4\n\n[db_proxy]\nhost = "0.0.0.0"\n'
    )
    config = load_config(
        DbProxyConfig,
        "db_proxy",
        toml,
        overrides={"cluster.secret_file": str(path), "port": "1"},
        environ={"IMCLUSTER_CLUSTER__HEARTBEAT_MISSES": "6"},
    )
    assert config.cluster.secrets() == (SECRET.encode(),)
    assert (config.cluster.heartbeat_interval, config.cluster.heartbeat_misses) == (0.5, 6)
    assert config.cluster.dead_after == 3.0
    assert (config.host, config.port) == ("0.0.0.0", 1)
    # Every server reads the same table.
    for cls, section in [
        (RouteServerConfig, "route_server"),
        (LoginServerConfig, "login_server"),
        (MsgServerConfig, "msg_server"),
    ]:
        other: Any = load_config(cls, section, toml, environ={"IMCLUSTER_CLUSTER__SECRET": SECRET})
        assert other.cluster.heartbeat_interval == 0.5
        assert other.cluster.secrets() == (SECRET.encode(),)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cluster.bogus": "1"}, r"cluster\.bogus: unknown setting"),
        ({"cluster.heartbeat_misses": "x"}, r"cluster\.heartbeat_misses: expected an integer"),
        ({"cluster": "x"}, r"db_proxy\.cluster: set it in the \[cluster\] table"),
        ({"port.x": "1"}, r"db_proxy\.port: not a table"),
    ],
)
def test_cluster_errors_name_the_key(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(DbProxyConfig, "db_proxy", overrides=overrides, environ={})


def test_loopback() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "", "::", "10.0.0.5", "db.internal", "::ffff:10.0.0.1"):
        assert not is_loopback(host), host


@pytest.mark.parametrize(
    ("cls", "field", "key"),
    [
        (DbProxyConfig, "host", "db_proxy.host"),
        (RouteServerConfig, "host", "route_server.host"),
        (LoginServerConfig, "gateway_host", "login_server.gateway_host"),
    ],
)
def test_internal_port_beyond_loopback_needs_a_secret(cls: Any, field: str, key: str) -> None:
    # The defaults are loopback: development needs no secret.
    assert getattr(cls(), field) == "127.0.0.1"
    cls(**{field: "localhost"})
    with pytest.raises(ConfigError) as refused:
        cls(**{field: "0.0.0.0"})
    assert str(refused.value) == (
        f"{key} is 0.0.0.0 (not loopback) but no cluster secret is set: set [cluster] secret_file "
        "(imctl secret > FILE) or IMCLUSTER_CLUSTER__SECRET, or listen on 127.0.0.1"
    )
    cls(**{field: "0.0.0.0", "cluster": ClusterConfig(secret=SECRET)})


def test_refusal_through_load_config_is_the_same_message() -> None:
    with pytest.raises(ConfigError, match=r"^db_proxy\.host is 10\.0\.0\.7 \(not loopback\)"):
        load_config(DbProxyConfig, "db_proxy", overrides={"host": "10.0.0.7"}, environ={})


def test_client_ports_need_no_secret() -> None:
    assert MsgServerConfig().host == "0.0.0.0"  # clients; a gateway accepts no internal link
    assert LoginServerConfig().host == "0.0.0.0"  # clients' HTTP


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (MsgServerConfig, "db_proxies"),
        (MsgServerConfig, "route_servers"),
        (MsgServerConfig, "login_servers"),
        (DbProxyConfig, "route_servers"),
    ],
)
def test_links_to_peers_beyond_loopback_need_a_secret(cls: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field} lists 10.0.0.7:1 .*no cluster secret"):
        cls(**{field: ("127.0.0.1:1", "10.0.0.7:1")})
    cls(**{field: ("10.0.0.7:1",), "cluster": ClusterConfig(secret=SECRET)})


def test_login_server_admin_links_need_a_secret_only_when_the_api_is_on() -> None:
    LoginServerConfig(db_proxies=("10.0.0.7:10600",))
    with pytest.raises(ConfigError, match=r"login_server\.db_proxies lists 10\.0\.0\.7:10600"):
        LoginServerConfig(db_proxies=("10.0.0.7:10600",), admin_token="t" * 20)


def test_metrics_listen_on_loopback_by_default() -> None:
    for cls in (DbProxyConfig, RouteServerConfig, MsgServerConfig, LoginServerConfig):
        assert cls().metrics_host == "127.0.0.1", cls


def test_tls_files_are_checked_when_the_config_is_built(tmp_path: Path) -> None:
    _, (node,) = issue(tmp_path / "tls", ["db-1"])
    ca = str(tmp_path / "tls" / "ca.pem")
    config = ClusterConfig(tls_cert=str(node.cert), tls_key=str(node.key), tls_ca=ca)
    assert config.tls_enabled
    assert config.server_tls_context() is not None and config.client_tls_context() is not None
    assert ClusterConfig().server_tls_context() is None
    with pytest.raises(ConfigError, match=r"cluster\.tls_ca: .* does not exist"):
        ClusterConfig(tls_cert=str(node.cert), tls_key=str(node.key), tls_ca=str(tmp_path / "no.pem"))
    node.key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"cluster\.tls_key: .* open to other users"):
        ClusterConfig(tls_cert=str(node.cert), tls_key=str(node.key), tls_ca=ca)
    node.key.chmod(0o600)
    with pytest.raises(ConfigError, match=r"cluster\.tls_ca: cannot load"):
        ClusterConfig(tls_cert=str(node.cert), tls_key=str(node.key), tls_ca=str(node.key))
    with pytest.raises(ConfigError, match=r"cluster\.tls_cert/tls_key: cannot load"):
        ClusterConfig(tls_cert=ca, tls_key=str(node.key), tls_ca=ca)  # the key is not the CA's


def test_replace_recomputes_the_secrets() -> None:
    config = dataclasses.replace(ClusterConfig(), secret=SECRET)
    assert config.secrets() == (SECRET.encode(),)
