"""The admin API's audit trail: every authorized request but a GET is
recorded once, by the middleware, naming the operator its caller gives."""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket

import pytest
from prometheus_client import REGISTRY

from imctl.client import ApiClient
from login_server.admin.audit import operator_name
from tests.console.conftest import TOKEN, Browser

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _failures() -> float:
    return REGISTRY.get_sample_value("imcluster_admin_audit_failures_total") or 0.0


async def test_a_change_is_recorded_with_the_operator_target_status_and_no_secret(browser: Browser) -> None:
    headers = {**AUTH, "X-Imcluster-Operator": "ann@admin-host"}
    body = {"name": "zoe", "password": "hunter2", "nick": "Zoe"}
    response = await browser.client.post("/admin/v1/users", json=body, headers=headers)
    assert response.status == 201
    [entry] = browser.backends.audit
    assert entry["who"] == "ann@admin-host" and entry["via"] == "api" and entry["remote"] == "127.0.0.1"
    assert (entry["action"], entry["target"], entry["status"]) == ("POST /admin/v1/users", "zoe", 201)
    assert entry["detail"] == {"name": "zoe", "password": "(redacted)", "nick": "Zoe"}
    assert entry["at_ms"] > 1_600_000_000_000


async def test_reads_and_refused_tokens_are_not_recorded(browser: Browser) -> None:
    browser.backends.add_user("alice")
    for path in ("/admin/v1/users", "/admin/v1/users/alice", "/admin/v1/status", "/admin/v1/online"):
        assert (await browser.client.get(path, headers=AUTH)).status == 200
    assert (await browser.client.post("/admin/v1/kick", json={"user": "alice"})).status == 401
    assert browser.backends.audit == []


async def test_failures_are_recorded_with_their_error(browser: Browser) -> None:
    response = await browser.client.post("/admin/v1/users/nobody/disable", headers=AUTH)
    assert response.status == 404
    response = await browser.client.delete("/admin/v1/departments/x", headers=AUTH)
    assert response.status == 400
    first, second = browser.backends.audit
    assert (first["who"], first["action"], first["target"], first["status"]) == (
        "api",  # no X-Imcluster-Operator: the default
        "POST /admin/v1/users/nobody/disable",
        "nobody",
        404,
    )
    assert first["detail"] == {"error": "no user 'nobody'"}
    assert second["status"] == 400 and "must be a number" in second["detail"]["error"]


@pytest.mark.parametrize(
    ("claimed", "stored"),
    [("", "api"), ("  ", "api"), ("eve <x>; drop", "eve__x___drop"), ("a" * 100, "a" * 64)],
)
async def test_the_claimed_operator_is_made_safe(browser: Browser, claimed: str, stored: str) -> None:
    headers = {**AUTH, "X-Imcluster-Operator": claimed}
    await browser.client.post("/admin/v1/kick", json={"user": "x"}, headers=headers)
    assert browser.backends.audit[-1]["who"] == stored


async def test_a_bulk_body_is_recorded_as_a_count(browser: Browser) -> None:
    rows = [{"name": f"u{i}", "password": "pw"} for i in range(500)]
    response = await browser.client.post("/admin/v1/users/import", json={"rows": rows}, headers=AUTH)
    assert (await response.json())["created"] == 500
    [entry] = browser.backends.audit
    assert entry["detail"]["rows"] == "(500 items)" and "pw" not in repr(entry)


async def test_a_lost_entry_is_logged_and_counted_and_the_change_stands(
    browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    browser.backends.audit_methods = False  # a db_proxy without audit.record
    before = _failures()
    with caplog.at_level(logging.WARNING, "login_server.audit"):
        response = await browser.client.post(
            "/admin/v1/users", json={"name": "zoe", "password": "pw"}, headers=AUTH
        )
    assert response.status == 201 and browser.backends.find("zoe")
    assert _failures() == before + 1
    [line] = caplog.records
    assert "audit entry not stored" in line.getMessage() and "POST /admin/v1/users" in line.getMessage()


async def test_imctl_names_its_user_and_host(browser: Browser) -> None:
    client = ApiClient(str(browser.client.make_url("")), TOKEN)
    await asyncio.to_thread(client.request, "POST", "/users", {"name": "zoe", "password": "pw"})
    [entry] = browser.backends.audit
    assert entry["who"] == operator_name(f"{getpass.getuser()}@{socket.gethostname()}")
    assert "@" in entry["who"] and entry["via"] == "api"
