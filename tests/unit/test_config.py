from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.config import ConfigError, load_config, parse_assignments, split_address
from msg_server.config import MsgServerConfig
from tests.support.examples import EXAMPLES_DIR, SECTIONS, run_commands


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


EXAMPLES = sorted(EXAMPLES_DIR.glob("*.toml"))


def _classes() -> dict[str, type]:
    from db_proxy.config import DbProxyConfig
    from file_server.config import FileServerConfig
    from login_server.config import LoginServerConfig
    from msfs.config import MsfsConfig
    from route_server.config import RouteServerConfig

    return {
        "msg_server": MsgServerConfig,
        "db_proxy": DbProxyConfig,
        "route_server": RouteServerConfig,
        "login_server": LoginServerConfig,
        "file_server": FileServerConfig,
        "msfs": MsfsConfig,
    }


def _linked_classes() -> dict[str, type]:
    """The servers with internal links, which need the cluster secret (msfs has none)."""
    return {section: cls for section, cls in _classes().items() if section != "msfs"}


def _secret_file(tmp_path: Path) -> Path:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s" * 43 + "\n")
    secret_file.chmod(0o600)
    return secret_file


def _load(section: str, path: Path, overrides: dict[str, str], secret: dict[str, str]) -> Any:
    """A server's config as its command loads it (msfs takes no [cluster] settings)."""
    given = overrides if section == "msfs" else {**overrides, **secret}
    return load_config(_classes()[section], section, path, given, environ={})


def _commands(path: Path) -> list[tuple[str, dict[str, str]]]:
    return [(SECTIONS[kind], overrides) for kind, overrides in run_commands(path)]


def _listens(section: str, config: Any) -> list[tuple[str, int]]:
    ports = {
        "msg_server": [("host", "port")],
        "db_proxy": [("host", "port")],
        "route_server": [("host", "port")],
        "login_server": [("host", "http_port"), ("gateway_host", "gateway_port")],
        "file_server": [("host", "port"), ("client_host", "client_port")],
        "msfs": [("host", "port")],
    }[section] + [("metrics_host", "metrics_port")]
    return [(getattr(config, h), getattr(config, p)) for h, p in ports if getattr(config, p) != -1]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_loads_with_every_server(path: Path, tmp_path: Path) -> None:
    secret = {"cluster.secret_file": str(_secret_file(tmp_path))}
    for section, cls in _linked_classes().items():
        # The examples name /etc/imcluster/secret; without a secret they would not start.
        config: Any = load_config(cls, section, path, secret, environ={})
        assert config.cluster.secrets() == (b"s" * 43,)


def test_the_three_hosts_example_needs_its_secret(tmp_path: Path) -> None:
    path = next(p for p in EXAMPLES if p.name == "three-hosts.toml")
    for section, cls in _linked_classes().items():
        with pytest.raises(ConfigError, match="no cluster secret is set"):
            load_config(cls, section, path, {"cluster.secret_file": ""}, environ={})


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_servers_an_example_starts_do_not_share_a_port(path: Path, tmp_path: Path) -> None:
    """Two servers its comments start on one host must not bind one address (a second
    gateway on the first one's metrics port crashed at start)."""
    secret = {"cluster.secret_file": str(_secret_file(tmp_path))}
    commands = _commands(path)
    assert commands, f"{path.name} shows no imctl run command"
    # A server's machine is told by the internal address it serves metrics on.
    seen: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for section, overrides in commands:
        config: Any = _load(section, path, overrides, secret)
        for host, port in _listens(section, config):
            for other_host, other in seen.get((config.metrics_host, port), []):
                clash = host == other_host or "0.0.0.0" in (host, other_host)
                assert not clash, f"{config.node_id} and {other} both listen on {host}:{port}"
            seen.setdefault((config.metrics_host, port), []).append((host, config.node_id))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_an_example_points_every_server_at_the_others(path: Path, tmp_path: Path) -> None:
    """Peers listed in the file are where the file's (or its commands') servers listen."""
    secret = {"cluster.secret_file": str(_secret_file(tmp_path))}
    listening: dict[str, set[str]] = {
        "db_proxy": set(),
        "route_server": set(),
        "login_server": set(),
        "file_server": set(),
    }
    started = _commands(path) or [(section, {}) for section in _classes()]
    for section, overrides in [*started, *((s, {}) for s in _classes())]:
        config: Any = _load(section, path, overrides, secret)
        if section == "login_server":
            listening[section].add(f"{config.gateway_host}:{config.gateway_port}")
        elif section in listening:
            listening[section].add(f"{config.host}:{config.port}")
    for section in _classes():
        config = _load(section, path, {}, secret)
        peers = [
            ("db_proxies", "db_proxy"),
            ("route_servers", "route_server"),
            ("file_servers", "file_server"),
        ]
        for key, peer in peers:
            for address in getattr(config, key, ()):
                assert address in listening[peer], f"{section}.{key}: nothing listens on {address}"
        for address in getattr(config, "login_servers", ()):
            assert address in listening["login_server"], f"{section}.login_servers: {address}"
