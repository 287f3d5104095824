from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.config import ConfigError, load_config, parse_assignments, split_address
from msg_server.config import MsgServerConfig


def test_layers_override_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[msg_server]\nport = 9000\nnode_id = "from-file"\nlogin_timeout = 5\n')
    config = load_config(
        MsgServerConfig,
        "msg_server",
        path,
        overrides={"node_id": "from-cli"},
        environ={"IMCLUSTER_MSG_SERVER__PORT": "9001"},
    )
    assert (config.port, config.node_id, config.login_timeout) == (9001, "from-cli", 5.0)
    assert config.max_frame_size == 64 * 1024


def test_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"msg_server\.port: expected an integer"):
        load_config(MsgServerConfig, "msg_server", overrides={"port": "eighty"}, environ={})
    with pytest.raises(ConfigError, match=r"msg_server\.bogus: unknown setting"):
        load_config(MsgServerConfig, "msg_server", overrides={"bogus": "1"}, environ={})
    with pytest.raises(ConfigError, match=r"msg_server\.db_proxies: bad port"):
        load_config(MsgServerConfig, "msg_server", overrides={"db_proxies": "h:x"}, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[msg_server\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(MsgServerConfig, "msg_server", bad, environ={})


def test_lists_from_strings() -> None:
    secret = {"IMCLUSTER_CLUSTER__SECRET": "s" * 16}  # a:1 is not loopback
    config = load_config(
        MsgServerConfig, "msg_server", overrides={"route_servers": "a:1, b:2"}, environ=secret
    )
    assert config.route_servers == ("a:1", "b:2")


def test_assignments_and_addresses() -> None:
    assert parse_assignments(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError):
        parse_assignments(["novalue"])
    assert split_address("k", ":80") == ("127.0.0.1", 80)
    assert split_address("k", "[::1]:80") == ("::1", 80)


def test_example_cluster_config_loads(tmp_path: Path) -> None:
    from db_proxy.config import DbProxyConfig
    from login_server.config import LoginServerConfig
    from route_server.config import RouteServerConfig

    path = Path(__file__).resolve().parents[2] / "scripts" / "examples" / "three-hosts.toml"
    secret_file = tmp_path / "secret"
    secret_file.write_text("s" * 43 + "\n")
    secret_file.chmod(0o600)
    for cls, section in [
        (MsgServerConfig, "msg_server"),
        (DbProxyConfig, "db_proxy"),
        (RouteServerConfig, "route_server"),
        (LoginServerConfig, "login_server"),
    ]:
        # The example names /etc/imcluster/secret; without a secret it would not start.
        config: Any = load_config(cls, section, path, {"cluster.secret_file": str(secret_file)}, environ={})
        assert config.cluster.secrets() == (b"s" * 43,)
        with pytest.raises(ConfigError, match="no cluster secret is set"):
            load_config(cls, section, path, {"cluster.secret_file": ""}, environ={})
