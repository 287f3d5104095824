"""imctl up's port plan: the documented layout, no collision for any counts, a clear "port in use"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imctl.ports import Port, PortError, check_free, plan_ports
from tests.e2e.conftest import TRACEBACK

ROOT = Path(__file__).resolve().parents[2]


def plan(base: int = 8000, gateways: int = 2, routes: int = 1, dbs: int = 1, **kw: bool) -> list[Port]:
    return plan_ports(base, 8080, gateways, routes, [f"db-{i + 1}" for i in range(dbs)], files=True, **kw)


def by_key(ports: list[Port]) -> dict[tuple[str, str], int]:
    return {(p.server, p.key): p.port for p in ports}


def test_the_default_plan_is_the_documented_layout() -> None:
    assert by_key(plan()) == {
        ("login-1", "http_port"): 8080,
        ("msg-1", "port"): 8000,
        ("msg-2", "port"): 8001,
        ("file-1", "client_port"): 8600,
        ("msfs-1", "port"): 8700,
        ("msg-1", "metrics_port"): 8010,
        ("msg-2", "metrics_port"): 8011,
        ("login-1", "gateway_port"): 8100,
        ("login-1", "metrics_port"): 8110,
        ("route-1", "port"): 8200,
        ("route-1", "metrics_port"): 8210,
        ("db-1", "port"): 10600,
        ("db-1", "metrics_port"): 10610,
        ("file-1", "port"): 8610,
        ("file-1", "metrics_port"): 8620,
        ("msfs-1", "metrics_port"): 8710,
    }
    assert {p.what for p in plan() if p.public} == {
        "login_server http",
        "msg-1 client",
        "msg-2 client",
        "file_server client",
        "msfs http",
    }


@pytest.mark.parametrize("gateways", [1, 10, 11, 20, 51, 99, 150])
@pytest.mark.parametrize("routes", [1, 5, 21])
def test_no_two_ports_meet_for_any_counts(gateways: int, routes: int) -> None:
    ports = plan(gateways=gateways, routes=routes, dbs=3)
    numbers = [p.port for p in ports]
    assert len(numbers) == len(set(numbers)) == 2 * gateways + 2 * routes + 2 * 3 + 3 + 5  # dbs, login, files
    clients = by_key(ports)
    # What clients must know stays where the layout says, whatever the counts.
    expected = [port for port in range(8000, 8000 + gateways + 1) if port != 8080][:gateways]
    assert [clients[(f"msg-{i + 1}", "port")] for i in range(gateways)] == expected
    assert clients[("login-1", "http_port")] == 8080


def test_eleven_gateways_push_their_metrics_up() -> None:
    ports = by_key(plan(gateways=11))
    assert ports[("msg-11", "port")] == 8010
    assert ports[("msg-1", "metrics_port")] == 8011 and ports[("msg-11", "metrics_port")] == 8021


def test_free_ports_leave_only_client_ports_fixed() -> None:
    ports = plan(free_internal=True)
    assert {p.port for p in ports if not p.public} == {0}
    assert all(p.port for p in ports if p.public)


def test_a_gateway_steps_over_the_http_port() -> None:
    ports = by_key(plan_ports(8000, 8080, 82, 1, ["db-1"], files=False))
    assert ports[("msg-80", "port")] == 8079 and ports[("msg-81", "port")] == 8081
    assert ports[("login-1", "http_port")] == 8080


def test_impossible_plans_say_what_to_pass() -> None:
    with pytest.raises(PortError, match=r"outside 1-65535: pass a lower --base-port"):
        plan(base=63000)


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_in_use_is_named(taken: int) -> None:
    internal = Port("route-1", "port", taken, "route-1 link", False, "--base-port")
    with pytest.raises(PortError) as caught:
        check_free([internal])
    assert str(caught.value) == (
        f"port {taken} (route-1 link) is in use: pass --base-port (e.g. --base-port 9000), "
        "or --free-ports to let the system pick internal ports"
    )
    public = Port("login-1", "http_port", taken, "login_server http", True, "--http-port")
    with pytest.raises(PortError, match=rf"^port {taken} \(login_server http\) is in use: pass --http-port$"):
        check_free([public])


def test_imctl_up_with_a_port_in_use_exits_2_with_one_line(tmp_path: Path, taken: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMCLUSTER_CONFIG", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imctl",
            "up",
            "--http-port",
            str(taken),
            "--run-dir",
            str(tmp_path / "run"),
            "--database-url",
            f"sqlite:///{tmp_path}/im.db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert f"port {taken} (login_server http) is in use: pass --http-port" in result.stderr
    assert TRACEBACK not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "im.db").exists()  # refused before anything was made


def test_eleven_gateways_start_on_the_plan(tmp_path: Path) -> None:
    """The collision of the old layout (the eleventh gateway on the first one's metrics port), for real."""
    from imctl.cluster import LocalCluster
    from tests.ops.test_supervise import free_base

    base = free_base(gateways=11)
    cluster = LocalCluster(
        tmp_path / "run",
        None,
        gateways=11,
        base_port=base,
        http_port=base + 80,
        database_url=f"sqlite:///{tmp_path}/im.db",
        files=False,
    )
    try:
        cluster.start(ready_timeout=60)  # waits until login_server hands out all 11
        wanted = {(p.server, p.key): p.port for p in cluster.port_plan()}
        got = {
            (s.name, k): s.info[k]
            for s in cluster.servers
            for k in ("port", "metrics_port", "http_port")
            if k in s.info
        }
        assert got.items() <= wanted.items()
        assert got[("msg-11", "port")] == base + 10 and got[("msg-1", "metrics_port")] == base + 11
    finally:
        cluster.stop()
