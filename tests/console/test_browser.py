"""The console end to end: Debian's Chromium, driven by Playwright, against
a real cluster (every server its own process) on SQLite and on MariaDB +
Redis, with a real TeamTalk client on the other side of each action.

Screenshots of every page go to var/test-artifacts/console/. Never a
downloaded browser: /usr/bin/chromium or a skip that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from common.commands import Cmd
from common.pb import base_pb2
from common.teamtalk_text import decode_text
from tests.e2e.conftest import PASSWORD, REDIS_URL, Cluster, _start
from tests.support.databases import fresh_mysql_url
from tests.support.delivery_logs import fresh_delivery_log_url
from tests.support.ttclient import TTClient

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "console"
TOKEN = "console-e2e-token-0123456789"
OPERATOR = "olga"
EVIL = "<script>alert(1)</script>"
WAIT = 15.0  # seconds for the route server to list a new session


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql+redis", marks=pytest.mark.mysql)])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("console-cluster")
    admin = {"login": {"IMCLUSTER_LOGIN_SERVER__ADMIN_TOKEN": TOKEN}}
    msg = {"load_report_interval": "0.5"}  # the dashboard's connection counts come with load reports
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            started = _start(tmp, f"sqlite:///{tmp}/im.db", None, "memory://", msg=msg, environ=admin)
        else:
            log_url = stack.enter_context(fresh_delivery_log_url("redis"))
            url = stack.enter_context(fresh_mysql_url())
            started = _start(tmp, url, REDIS_URL, log_url, msg=msg, environ=admin)
        stack.callback(started.local.stop)
        yield started
        started.local.stop()
        started.assert_no_tracebacks()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    """A fresh Chromium profile; every JavaScript dialog fails the test (none may ever open)."""
    async with async_playwright() as driver:
        context = await driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            tab = context.pages[0] if context.pages else await context.new_page()
            tab.set_default_timeout(15_000)
            dialogs: list[str] = []
            tab.on("dialog", lambda dialog: dialogs.append(dialog.message))
            yield tab
            assert dialogs == [], f"a script ran in the console: {dialogs}"
        finally:
            await context.close()


def _base(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.local.by_name('login-1').info['http_port']}/console"


def _engine(cluster: Cluster) -> str:
    return "sqlite" if cluster.redis_url is None else "mysql"


async def _shot(page: Page, cluster: Cluster, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{_engine(cluster)}-{name}.png"), full_page=True)


async def _flash(page: Page) -> str:
    return " | ".join(await page.locator("p.flash").all_inner_texts())


async def _log_in(page: Page, cluster: Cluster, screenshot: bool = False) -> None:
    await page.goto(f"{_base(cluster)}/")
    assert page.url == f"{_base(cluster)}/login"  # nothing but the login page without a session
    await page.fill("input[name=operator]", OPERATOR)
    await page.fill("input[name=token]", TOKEN)
    if screenshot:
        await _shot(page, cluster, "login")
    await page.click("form[action='/console/login'] button")
    assert page.url == f"{_base(cluster)}/"
    assert await page.locator("header .operator").inner_text() == OPERATOR


async def _closed_after_kick(client: TTClient) -> None:
    kick = await client.next_push(Cmd.KICK_USER, timeout=10)
    assert kick.user_id == client.user_id
    await asyncio.wait_for(client.closed.wait(), 10)


async def test_an_admin_day_in_the_browser(cluster: Cluster, page: Page, clients: list[TTClient]) -> None:
    base = _base(cluster)
    name = f"visitor-{_engine(cluster)}"
    await _log_in(page, cluster, screenshot=True)

    # The dashboard: both gateways, every server up.
    main = page.locator("main")
    await main.get_by_role("cell", name="msg-1", exact=True).wait_for()
    text = await main.inner_text()
    assert "msg-2" in text and "unreachable" not in text
    await _shot(page, cluster, "dashboard")

    # Create a user whose nick is markup: shown as text, never run (a dialog fails the test).
    await page.goto(f"{base}/users")
    form = page.locator("form[method=post][action='/console/users']")
    await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=password]").fill(PASSWORD)
    await form.locator("input[name=nick]").fill(EVIL)
    await form.locator("button").click()
    assert page.url == f"{base}/users/{name}"
    assert "Created user" in await _flash(page)
    assert await page.locator("input[name=nick]").input_value() == EVIL
    await _shot(page, cluster, "user")
    await page.goto(f"{base}/users?search=visitor")
    assert EVIL in await main.inner_text()
    await _shot(page, cluster, "users")

    # A real TeamTalk client logs in as it; the online page shows it on its gateway.
    client = await cluster.client(name, gateway="msg-2", client_type=base_pb2.CLIENT_TYPE_MAC)
    clients.append(client)
    row = page.locator("tr", has=page.locator(f"a[href='/console/users/{name}']"))
    deadline = time.monotonic() + WAIT
    await page.goto(f"{base}/online")
    while await row.count() == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # the route server hears of the login from the gateway
        await page.reload()
    cells = await row.locator("td").all_inner_texts()
    assert cells[:4] == [name, EVIL, "msg-2", "mac"], cells
    await _shot(page, cluster, "online")

    # A notice from the system account reaches the client.
    await page.goto(f"{base}/send?user={name}")
    await page.fill("textarea[name=text]", "maintenance at 18:00")
    await _shot(page, cluster, "send")
    await page.click("form[action='/console/send'] button")
    assert "Sent message" in await _flash(page)
    pushed = await client.next_push(Cmd.MSG_DATA)
    assert decode_text(pushed.msg_data) == "maintenance at 18:00"

    # Kick it from the online page: the client is told and closed.
    await page.goto(f"{base}/online")
    await row.get_by_role("button", name="Kick").click()
    assert f"Kicked {name}: 1 session(s) closed." in await _flash(page)
    await _closed_after_kick(client)

    # Disable it: it can no longer log in.
    await page.goto(f"{base}/users/{name}")
    await page.get_by_role("button", name="Disable").click()
    assert f"Disabled {name}" in await _flash(page)
    assert await page.get_by_role("button", name="Enable").count() == 1
    refused = TTClient()
    clients.append(refused)
    await refused.connect("127.0.0.1", cluster.gateway_port("msg-1"))
    assert (await refused.login(name, PASSWORD)).result_code != 0

    # Departments and groups, for the record.
    await page.goto(f"{base}/departments")
    department = f"Support {_engine(cluster)}"
    await page.fill("form[action='/console/departments'] input[name=name]", department)
    await page.click("form[action='/console/departments'] button")
    assert f"Created the department {department}." in await _flash(page)
    await _shot(page, cluster, "departments")
    await page.goto(f"{base}/groups")
    groups = page.locator("form[action='/console/groups']")
    await groups.locator("input[name=name]").fill(f"ops-{_engine(cluster)}")
    await groups.locator("input[name=creator]").fill("alice")
    await groups.locator("input[name=members]").fill("bob, carol")
    await groups.locator("button").click()
    assert "Created the group" in await _flash(page)
    assert {"alice", "bob", "carol"} <= set(await page.locator("main table a").all_inner_texts())
    await _shot(page, cluster, "group")
    await page.goto(f"{base}/groups")
    await _shot(page, cluster, "groups")

    # Log out: the pages are gone again.
    await page.click("header form.logout button")
    assert page.url == f"{base}/login"
    await page.goto(f"{base}/users")
    assert page.url == f"{base}/login"
    cluster.assert_no_tracebacks()


async def test_the_audit_page_lists_the_console_actions(cluster: Cluster, page: Page) -> None:
    """Needs db_proxy's audit.record and audit.list (H4's side of issue 13)."""
    base = _base(cluster)
    await _log_in(page, cluster)
    await page.goto(f"{base}/users/alice")
    await page.get_by_role("button", name="Unlock (clear failed logins)").click()
    await page.goto(f"{base}/audit?who={OPERATOR}")
    await _shot(page, cluster, "audit")
    rows = page.locator("table.audit tbody tr")
    first = await rows.first.locator("td").all_inner_texts()
    assert first[1:7] == [OPERATOR, "console", "127.0.0.1", "console: unlock user", "alice", "200"], first
    assert "console: log in" in await page.locator("table.audit").inner_text()
    cluster.assert_no_tracebacks()
