"""The console's door: nothing without a session, the login form and its
throttle, the cookie, CSRF, expiry on a fake clock, logout, the headers."""

from __future__ import annotations

import logging
import re
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from login_server.balancer import Balancer
from login_server.config import LoginServerConfig
from login_server.console.sessions import LoginThrottle, Sessions
from login_server.server import build_app
from tests.console.conftest import TOKEN, Browser, FakeClock
from tests.console.memory import MemoryBackends

PAGES = [
    "/console",
    "/console/",
    "/console/users",
    "/console/users/alice",
    "/console/departments",
    "/console/groups",
    "/console/groups/1",
    "/console/online",
    "/console/send",
    "/console/audit",
    "/console/no-such-page",
    "/console/users/alice/delete",
]


def _cookie(header: str) -> SimpleCookie:
    cookie = SimpleCookie()
    cookie.load(header)
    return cookie


@pytest.mark.parametrize("path", PAGES)
async def test_without_a_session_every_page_redirects_to_the_login(browser: Browser, path: str) -> None:
    response = await browser.client.get(path, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/console/login"
    assert browser.backends.calls == []


@pytest.mark.parametrize("path", ["/console/users", "/console/kick", "/console/users/alice/disable"])
async def test_without_a_session_a_post_does_nothing(browser: Browser, path: str) -> None:
    browser.backends.add_user("alice")
    response = await browser.client.post(path, data={"user": "alice"}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/console/login"
    assert browser.backends.calls == [] and not browser.backends.find("alice")["disabled"]


async def test_the_login_page_and_the_stylesheet_are_public_with_the_security_headers(
    browser: Browser,
) -> None:
    for path, kind in (("/console/login", "text/html"), ("/console/static/console.css", "text/css")):
        response = await browser.client.get(path)
        assert response.status == 200 and response.content_type == kind
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script" not in csp and "unsafe" not in csp  # no script allowed at all
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = await (await browser.client.get("/console/login")).text()
    assert "<script" not in page and 'name="token"' in page and 'type="password"' in page


async def test_the_right_token_gives_a_strict_http_only_cookie(browser: Browser) -> None:
    response = await browser.login("olga")
    assert response.status == 303 and response.headers["Location"] == "/console/"
    cookie = _cookie(response.headers["Set-Cookie"])["imcluster_console"]
    assert len(cookie.value) >= 40
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
    assert not cookie["secure"]  # plain http here; behind TLS it is Secure (next test)
    page = await browser.page("/console/")
    assert "olga" in page and "Log out" in page
    [entry] = browser.backends.audit
    assert (entry["who"], entry["via"], entry["action"], entry["status"]) == (
        "olga",
        "console",
        "console: log in",
        200,
    )


async def test_the_cookie_is_secure_behind_tls(browser: Browser) -> None:
    response = await browser.client.post(
        "/console/login",
        data={"operator": "olga", "token": TOKEN},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert _cookie(response.headers["Set-Cookie"])["imcluster_console"]["secure"]


async def test_each_login_gets_a_new_session(browser: Browser) -> None:
    first = _cookie((await browser.login()).headers["Set-Cookie"])["imcluster_console"].value
    second = _cookie((await browser.login()).headers["Set-Cookie"])["imcluster_console"].value
    assert first != second and len(browser.console.sessions) == 2


@pytest.mark.parametrize(
    ("operator", "token"), [("olga", "wrong"), ("olga", TOKEN + "x"), ("olga", ""), ("", TOKEN)]
)
async def test_a_wrong_token_or_no_name_is_refused(browser: Browser, operator: str, token: str) -> None:
    response = await browser.login(operator, token)
    assert response.status == 401
    assert "Set-Cookie" not in response.headers
    assert (await browser.client.get("/console/", allow_redirects=False)).status == 303
    assert [e["status"] for e in browser.backends.audit] == [401]


async def test_failed_logins_are_throttled_per_source_and_logged_once_per_interval(
    browser: Browser, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "login_server.console")
    for _ in range(5):
        assert (await browser.login("mallory", "guess")).status == 401
    # Spent: even the right token waits now, and says for how long.
    refused = await browser.login("olga", TOKEN)
    assert refused.status == 429 and "try again in 30 s" in await refused.text()
    assert [r.getMessage() for r in caplog.records] == ["console: failed login as 'mallory' from 127.0.0.1"]
    clock.now += 30  # one more attempt per 30 s
    assert (await browser.login("olga", TOKEN)).status == 303
    assert browser.console.throttle.wait("127.0.0.1") == 0  # a success forgets the failures
    clock.now += 10
    caplog.clear()
    assert (await browser.login("mallory", "guess")).status == 401
    assert "(5 more since the last line)" in caplog.records[0].getMessage()


async def test_a_post_needs_the_session_csrf_token(logged_in: Browser) -> None:
    backends = logged_in.backends
    backends.add_user("alice")
    for data in ({}, {"csrf": "forged"}, {"csrf": logged_in.csrf[:-1]}):
        response = await logged_in.client.post(
            "/console/users/alice/disable", data=data, allow_redirects=False
        )
        assert response.status == 403
        assert "security token" in await response.text()
    assert "users.disable" not in backends.calls and not backends.find("alice")["disabled"]
    page = await logged_in.act("/console/users/alice/disable")
    assert "Disabled alice" in page and backends.find("alice")["disabled"]


async def test_a_post_from_another_origin_is_refused_whatever_it_carries(logged_in: Browser) -> None:
    logged_in.backends.add_user("alice")
    response = await logged_in.client.post(
        "/console/users/alice/disable",
        data={"csrf": logged_in.csrf},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    )
    assert response.status == 403 and not logged_in.backends.find("alice")["disabled"]


async def test_a_session_ends_after_30_idle_minutes(logged_in: Browser, clock: FakeClock) -> None:
    for _ in range(3):
        clock.now += 29 * 60  # active: each request moves the idle deadline
        await logged_in.page("/console/users")
    clock.now += 30 * 60
    response = await logged_in.client.get("/console/users", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/console/login"
    assert len(logged_in.console.sessions) == 0


async def test_a_session_ends_8_hours_after_login_however_active(
    logged_in: Browser, clock: FakeClock
) -> None:
    for _ in range(16):
        clock.now += 29 * 60
        await logged_in.page("/console/")
    clock.now += 20 * 60  # 8 h 4 min after login
    assert (await logged_in.client.get("/console/", allow_redirects=False)).status == 303


async def test_logout_ends_the_session_for_good(logged_in: Browser) -> None:
    cookie = logged_in.client.session.cookie_jar.filter_cookies(logged_in.client.make_url("/console/"))
    old = cookie["imcluster_console"].value
    response = await logged_in.post("/console/logout")
    assert response.status == 303 and response.headers["Location"] == "/console/login"
    assert _cookie(response.headers["Set-Cookie"])["imcluster_console"].value == ""
    replayed = await logged_in.client.get(
        "/console/", headers={"Cookie": f"imcluster_console={old}"}, allow_redirects=False
    )
    assert replayed.status == 303
    assert logged_in.backends.audit[-1]["action"] == "console: log out"


def test_the_session_table_is_bounded_and_drops_the_least_recently_used() -> None:
    clock = FakeClock()
    sessions = Sessions(clock, max_entries=3)
    opened = [sessions.open(f"op{i}") for i in range(3)]
    clock.now += 1
    assert sessions.get(opened[0].id) is opened[0]  # used: now the most recent
    fourth = sessions.open("op3")
    assert len(sessions) == 3
    assert sessions.get(opened[1].id) is None  # the least recently used went
    assert {s.operator for s in (sessions.get(opened[0].id), sessions.get(fourth.id)) if s} == {"op0", "op3"}
    assert sessions.get("") is None and sessions.get("nonsense") is None


def test_the_throttle_table_is_bounded() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock, burst=1, refill=60, max_sources=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
    assert throttle.wait("10.0.3.231") == 60  # the latest are still held back
    clock.now += 60
    assert throttle.wait("10.0.3.231") == 0 and len(throttle) == 99  # refilled: forgotten


async def test_no_admin_token_means_no_console() -> None:
    client = TestClient(TestServer(build_app(LoginServerConfig(), Balancer(), MemoryBackends())))
    await client.start_server()
    try:
        for path in ("/console", "/console/login", "/console/static/console.css"):
            assert (await client.get(path, allow_redirects=False)).status == 404, path
    finally:
        await client.close()


async def test_build_app_mounts_the_console_with_the_api() -> None:
    config = LoginServerConfig(admin_token=TOKEN)
    client = TestClient(TestServer(build_app(config, Balancer(), MemoryBackends())))
    await client.start_server()
    try:
        assert (await client.get("/console/login")).status == 200
        response = await client.post(
            "/console/login", data={"operator": "o", "token": TOKEN}, allow_redirects=False
        )
        assert response.status == 303
    finally:
        await client.close()


def test_the_https_frontend_fronts_the_same_login_servers_as_discovery() -> None:
    scripts = Path(__file__).resolve().parents[2] / "scripts" / "haproxy"
    servers = re.compile(r"^\s*server\s+(\S+\s+\S+)", re.MULTILINE)
    console = (scripts / "console-https.cfg").read_text()
    assert servers.findall(console) == servers.findall((scripts / "haproxy.cfg").read_text()) != []
    assert "X-Forwarded-Proto https" in console and "balance source" in console
    assert re.search(r"path_beg /admin/ /console$", (scripts / "haproxy.cfg").read_text(), re.MULTILINE)
