"""`imctl status` shows the roles each db_proxy serves, and copes with servers that do not say."""

from __future__ import annotations

import itertools
from typing import Any

from imctl.commands.live import render_status

DB_OK = {"address": "127.0.0.1:2600", "status": "ok", "node_id": "db-1", "workers": 4, "queue_depths": [0, 1]}


def db_rows(result: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The db proxy table of the rendering, each row by its address, cells by header."""
    (block,) = [b for b in render_status(result).split("\n\n") if b.startswith("DB PROXY")]
    header, *lines = block.splitlines()
    starts = [header.index(name) for name in ("DB PROXY", "STATUS", "NODE", "ROLES", "WORKERS")]
    rows = {}
    for line in lines:
        cells = [line[a:b].strip() for a, b in itertools.pairwise(starts)]
        rows[cells[0]] = dict(zip(("address", "status", "node", "roles"), cells, strict=True))
    return rows


def test_roles_are_shown_per_db_proxy() -> None:
    login = {**DB_OK, "roles": ["login", "directory"]}
    messages = {**DB_OK, "address": "127.0.0.1:2601", "node_id": "db-2", "roles": ["messages", "admin"]}
    rows = db_rows({"db_proxies": [login, messages]})
    assert rows["127.0.0.1:2600"]["roles"] == "login,directory"
    assert rows["127.0.0.1:2601"]["roles"] == "messages,admin"


def test_servers_that_do_not_name_roles_are_shown_too() -> None:
    older = dict(DB_OK)  # a db_proxy (or login_server) from before roles
    down = {"address": "127.0.0.1:2601", "status": "unreachable", "error": "refused"}
    rows = db_rows({"db_proxies": [older, down]})
    assert rows["127.0.0.1:2600"] == {
        "address": "127.0.0.1:2600",
        "status": "ok",
        "node": "db-1",
        "roles": "-",
    }
    assert rows["127.0.0.1:2601"]["status"] == "unreachable" and rows["127.0.0.1:2601"]["roles"] == "-"


def test_a_status_without_db_proxies_still_renders() -> None:
    assert "DB PROXY" in render_status({})
