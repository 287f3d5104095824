"""scripts/examples/three-hosts.toml, run as its comments say, on loopback.

Its three hosts become 127.0.0.5-7 (Linux answers on all of 127/8), the
database a SQLite file and the secret a file of the test's own; everything
else is the file and the ``imctl run`` commands in its comments, in their
order. Every server must start, and the login_server must see both gateways
and reach the route server and the db_proxy (the issue: the example's second
gateway once crashed on its metrics port, its login_server could not reach
db_proxy).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imctl.cluster import ServerProcess, write_secret_file
from tests.support.examples import EXAMPLES_DIR, run_commands
from tests.support.ttclient import discover

EXAMPLE = EXAMPLES_DIR / "three-hosts.toml"
HOSTS = {"10.0.0.5": "127.0.0.5", "10.0.0.6": "127.0.0.6", "10.0.0.7": "127.0.0.7"}
TOKEN = "example-test-token"
# Fixed ports of the example; clients' ports listen on every address (0.0.0.0).
PORTS = [("0.0.0.0", 8080), ("0.0.0.0", 8000), ("0.0.0.0", 8001), ("127.0.0.6", 8100), ("127.0.0.6", 8200)]
PORTS += [("127.0.0.7", 10600), ("127.0.0.5", 8010), ("127.0.0.5", 8011), ("127.0.0.6", 8110)]
PORTS += [("127.0.0.6", 8210), ("127.0.0.7", 10610), ("0.0.0.0", 8600), ("127.0.0.5", 8610)]
PORTS += [("127.0.0.5", 8620), ("0.0.0.0", 8700), ("127.0.0.5", 8710)]


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _loopback_copy(tmp: Path) -> Path:
    text = EXAMPLE.read_text()
    for public, local in HOSTS.items():
        text = text.replace(public, local)
    text = text.replace("/etc/imcluster/secret", str(write_secret_file(tmp / "secret")))
    text = text.replace("mysql://imcluster:change-me@127.0.0.1:3306/imcluster", f"sqlite:///{tmp / 'im.db'}")
    text = text.replace('redis_url = "redis://127.0.0.1:6379/0"', 'redis_url = ""')
    # The in-process log: the example's Redis log would share its default prefix with every run.
    text = text.replace('delivery_log = "redis://127.0.0.1:6379/0"', 'delivery_log = "memory://"')
    text = text.replace("/var/lib/imcluster/files", str(tmp / "files"))
    assert "6379" not in text, "a Redis URL the test does not map"
    assert "10.0.0." not in text.split("[cluster]", 1)[1], "an address the test does not map"
    path = tmp / "three-hosts.toml"
    path.write_text(text)
    return path


@pytest.fixture
def three_hosts(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    busy = [f"{h}:{p}" for h, p in PORTS if not _free(h, p)]
    if busy:
        pytest.skip(f"the example's fixed ports are taken on this machine: {', '.join(busy)}")
    config = _loopback_copy(tmp_path)
    started: list[ServerProcess] = []
    try:
        for i, (kind, overrides) in enumerate(run_commands(EXAMPLE)):
            name = overrides.get("node_id", kind)
            env = {"IMCLUSTER_LOGIN_SERVER__ADMIN_TOKEN": TOKEN} if kind == "login" else {}
            server = ServerProcess(
                kind, f"{i}-{name}", overrides, tmp_path / f"{i}.ready", tmp_path / f"{i}-{name}.log", env=env
            )
            started.append(server)
            server.start(config)
            if not server.wait_ready(30.0):
                pytest.fail(f"{kind} {name} did not start:\n{server.log_file.read_text()[-3000:]}")
        yield started
    finally:
        for server in reversed(started):
            server.stop(10.0)


def _status() -> dict[str, Any]:
    request = urllib.request.Request(
        "http://127.0.0.6:8080/admin/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_the_three_hosts_example_runs(three_hosts: list[ServerProcess]) -> None:
    kinds = sorted(s.kind for s in three_hosts)
    assert kinds == ["db", "file", "login", "msfs", "msg", "msg", "route"], kinds
    deadline = time.monotonic() + 15.0
    status = _status()
    while time.monotonic() < deadline:
        routes_see = [len(r.get("gateways", [])) for r in status["route_servers"]]
        if len(status["gateways"]) == 2 and routes_see == [2]:
            break
        time.sleep(0.1)
        status = _status()
    assert sorted(g["node_id"] for g in status["gateways"]) == ["msg-1", "msg-2"], status
    assert [(r["address"], r["status"]) for r in status["route_servers"]] == [("127.0.0.6:8200", "ok")]
    assert [len(r["gateways"]) for r in status["route_servers"]] == [2], status
    assert [(d["address"], d["status"]) for d in status["db_proxies"]] == [("127.0.0.7:10600", "ok")], status
    answer = discover("http://127.0.0.6:8080/msg_server")
    assert (answer["code"], answer["priorIP"], answer["port"] in ("8000", "8001")) == (0, "127.0.0.5", True)
    assert answer["msfsPrior"] == answer["msfsBackup"] == "http://127.0.0.5:8700/", answer
    assert all(s.process is not None and s.process.poll() is None for s in three_hosts)
