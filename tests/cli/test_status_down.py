"""`imctl status` with servers down: the table is printed, a server that did
not answer shows as such (no made-up zeros), and the exit code is 3."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from imctl.cli import main
from imctl.cluster import ServerProcess
from imctl.commands.live import render_status, status_problems
from tests.cli.conftest import TOKEN, free_port
from tests.cli.test_local import _env

DB_OK = {
    "address": "127.0.0.1:2600",
    "status": "ok",
    "node_id": "db-1",
    "workers": 4,
    "queue_depths": [0, 1],
    "database": "ok",
    "redis": "off",
}
ROUTE_OK = {
    "address": "127.0.0.1:2500",
    "status": "ok",
    "node_id": "route-1",
    "online_users": 3,
    "gateways": [],
}


def cells(block_title: str, result: dict[str, Any]) -> dict[str, dict[str, str]]:
    """One table of the rendering: each row by its first cell, cells by header."""
    (block,) = [b for b in render_status(result).split("\n\n") if b.startswith(block_title)]
    header, *lines = block.splitlines()
    names = re.split(r"\s{2,}", header.strip())
    starts = [header.index(n) for n in names] + [None]
    rows = {}
    for line in lines:
        values = [line[a:b].strip() for a, b in itertools.pairwise(starts)]
        rows[values[0]] = dict(zip(names, values, strict=True))
    return rows


def test_a_server_that_did_not_answer_has_no_figures() -> None:
    down = {"address": "127.0.0.1:2601", "status": "unreachable", "error": "refused"}
    result = {"db_proxies": [DB_OK, down], "route_servers": [ROUTE_OK, {**down, "address": "127.0.0.1:2501"}]}
    dbs = cells("DB PROXY", result)
    assert dbs["127.0.0.1:2600"]["QUEUED"] == "1"
    assert dbs["127.0.0.1:2601"]["STATUS"] == "unreachable"
    assert dbs["127.0.0.1:2601"]["QUEUED"] == "-" and dbs["127.0.0.1:2601"]["WORKERS"] == "-"
    routes = cells("ROUTE SERVER", result)
    assert routes["127.0.0.1:2500"]["GATEWAYS"] == "0"
    assert routes["127.0.0.1:2501"]["GATEWAYS"] == "-" and routes["127.0.0.1:2501"]["ONLINE USERS"] == "-"


def test_problems_name_each_server_down_or_with_something_down_behind_it() -> None:
    assert status_problems({"db_proxies": [DB_OK], "route_servers": [ROUTE_OK]}) == []
    sick = {**DB_OK, "database": "no answer within 1.5 s"}
    errored = {"address": "127.0.0.1:2501", "status": "error", "error": "boom"}
    problems = status_problems({"db_proxies": [sick], "route_servers": [ROUTE_OK, errored]})
    assert problems == [
        "route server 127.0.0.1:2501 error: boom",
        "db proxy 127.0.0.1:2600: database no answer within 1.5 s",
    ]
    assert status_problems({"db_proxies": [DB_OK], "route_servers": []}) == ["no route server configured"]


@pytest.fixture(scope="module")
def lone_login(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A login_server whose route server and db_proxy are not running."""
    tmp = tmp_path_factory.mktemp("lone-login")
    overrides = {
        "node_id": "login-1",
        "host": "127.0.0.1",
        "http_port": "0",
        "gateway_port": "0",
        "metrics_port": "-1",
        "admin_token": TOKEN,
        "db_proxies": f"127.0.0.1:{free_port()}",
        "route_servers": f"127.0.0.1:{free_port()}",
    }
    login = ServerProcess("login", "login-1", overrides, tmp / "login.ready", tmp / "login.log")
    login.start(None)
    try:
        assert login.wait_ready(30), (tmp / "login.log").read_text()
        yield f"http://127.0.0.1:{login.info['http_port']}"
    finally:
        login.stop(10)


def test_status_exits_3_when_the_servers_behind_the_login_server_are_down(lone_login: str) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--url", lone_login, "--token", TOKEN, "status"], env=_env())
    assert result.exit_code == 3, result.output
    # The table is still printed, the db proxy in it as unreachable with no queue figure.
    (db_block,) = [b for b in result.stdout.split("\n\n") if b.startswith("DB PROXY")]
    header, row = db_block.splitlines()
    assert row[header.index("STATUS") :].split()[0] == "unreachable"
    assert row[header.index("QUEUED") :].split()[0] == "-"
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: route server 127.0.0.1:") and "(and 1 more)" in line
    as_json = runner.invoke(main, ["--url", lone_login, "--token", TOKEN, "--json", "status"], env=_env())
    assert as_json.exit_code == 3 and '"status": "unreachable"' in as_json.stdout
