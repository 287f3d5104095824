"""`imctl secret`, `imctl certs`, and a local cluster run with a secret and TLS."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from common.cluster_config import ClusterConfig
from imctl.cli import main
from imctl.cluster import LocalCluster, write_secret_file


def test_secret_prints_a_fresh_one_a_config_accepts(tmp_path: Path) -> None:
    first = CliRunner().invoke(main, ["secret"])
    second = CliRunner().invoke(main, ["secret"])
    assert first.exit_code == 0 and second.exit_code == 0
    assert first.stdout != second.stdout
    path = tmp_path / "secret"
    path.write_text(first.stdout)
    path.chmod(0o600)
    assert ClusterConfig(secret_file=str(path)).secrets() == (first.stdout.strip().encode(),)
    assert len(first.stdout.strip()) == 43  # 32 random bytes


def test_certs_makes_a_ca_once_and_a_pair_per_node(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    result = CliRunner().invoke(
        main, ["certs", str(tls), "--node", "db-1", "--node", "msg-1", "--days", "90"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"created CA {tls / 'ca.pem'}")
    assert {p.name for p in tls.iterdir()} == {
        "ca.pem",
        "ca.key",
        "db-1.pem",
        "db-1.key",
        "msg-1.pem",
        "msg-1.key",
    }
    again = CliRunner().invoke(main, ["certs", str(tls), "--node", "db-1", "--node", "route-1"])
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0].startswith("reused CA")
    assert "kept (--renew reissues) db-1" in again.stdout and "created route-1" in again.stdout
    config = ClusterConfig(
        tls_cert=str(tls / "route-1.pem"), tls_key=str(tls / "route-1.key"), tls_ca=str(tls / "ca.pem")
    )
    assert config.tls_enabled


def test_certs_refuses_bad_input(tmp_path: Path) -> None:
    bad = CliRunner().invoke(main, ["certs", str(tmp_path), "--node", "../escape"])
    assert bad.exit_code == 2 and "bad node name" in bad.stderr and "Traceback" not in bad.output
    assert CliRunner().invoke(main, ["certs", str(tmp_path)]).exit_code == 2  # --node is required
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ca.pem").write_text("")
    half = CliRunner().invoke(main, ["certs", str(tmp_path / "half"), "--node", "db-1"])
    assert half.exit_code == 2 and "go together" in half.stderr


def test_config_reference_has_the_cluster_table() -> None:
    result = CliRunner().invoke(main, ["config", "cluster"])
    assert result.exit_code == 0 and "secret_file (str, default '')" in result.stdout
    servers = CliRunner().invoke(main, ["config", "db_proxy"])
    assert "cluster (table [cluster])" in servers.stdout


def _cmdline(pid: object) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def test_a_local_cluster_with_a_secret_and_tls(tmp_path: Path) -> None:
    secret_file = write_secret_file(tmp_path / "run" / "cluster-secret")
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    # No gateway: what is checked is that every server takes these settings, not the links.
    cluster = LocalCluster(
        tmp_path / "run",
        None,
        gateways=0,
        base_port=0,
        database_url=f"sqlite:///{tmp_path}/tls.db",
        secret_file=secret_file,
        tls_dir=tmp_path / "tls",
    )
    cluster.start()
    try:
        assert {p.name for p in (tmp_path / "tls").glob("*.pem")} == {
            "ca.pem",
            "route-1.pem",
            "db-1.pem",
            "login-1.pem",
            "file-1.pem",
        }
        for server in cluster.servers:
            if server.kind == "msfs":  # no internal links: clients only, over HTTP
                continue
            args = _cmdline(json.loads(server.ready_file.read_text())["pid"])
            assert f"cluster.secret_file={secret_file}" in args, server.name
            assert f"cluster.tls_cert={tmp_path / 'tls' / server.name}.pem" in args
            assert "metrics_host=127.0.0.1" in args
            assert not any(secret in arg for arg in args)  # a path, never the secret
        assert "host=127.0.0.1" in _cmdline(cluster.by_name("db-1").info["pid"])
        assert "gateway_host=127.0.0.1" in _cmdline(cluster.by_name("login-1").info["pid"])
    finally:
        cluster.stop()
