"""The console in-process: aiohttp's test client against build_app's admin
API and console over an in-memory cluster (tests/console/memory.py), with a
clock the tests move."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from login_server.admin.api import setup_admin
from login_server.balancer import Balancer
from login_server.console import Console, setup_console
from tests.console.memory import MemoryBackends

TOKEN = "console-test-token"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Browser:
    """A test client with a console session (or none yet)."""

    client: TestClient
    console: Console
    backends: MemoryBackends
    clock: FakeClock
    csrf: str = ""

    async def login(self, operator: str = "olga", token: str = TOKEN) -> ClientResponse:
        response = await self.client.post(
            "/console/login", data={"operator": operator, "token": token}, allow_redirects=False
        )
        if response.status == 303:
            await self.page("/console/")
        return response

    async def page(self, path: str, status: int = 200) -> str:
        response = await self.client.get(path, allow_redirects=False)
        text = await response.text()
        assert response.status == status, (path, response.status, text[:2000])
        found = CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return text

    async def post(self, path: str, data: dict[str, str] | None = None, csrf: bool = True) -> ClientResponse:
        """A form posted as a browser would (no redirects followed: the test reads them)."""
        fields = {**(data or {}), **({"csrf": self.csrf} if csrf else {})}
        return await self.client.post(path, data=fields, allow_redirects=False)

    async def act(self, path: str, data: dict[str, str] | None = None) -> str:
        """Post a form and follow its redirect: the page that says what happened."""
        response = await self.post(path, data)
        assert response.status == 303, (path, response.status, (await response.text())[:2000])
        return await self.page(response.headers["Location"])


@pytest.fixture
def backends() -> MemoryBackends:
    return MemoryBackends()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def browser(backends: MemoryBackends, clock: FakeClock) -> AsyncIterator[Browser]:
    app = web.Application()
    api = setup_admin(app, TOKEN, backends, Balancer())
    console = setup_console(app, TOKEN, api, clock)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Browser(client, console, backends, clock)
    await client.close()


@pytest.fixture
async def logged_in(browser: Browser) -> Browser:
    response = await browser.login()
    assert response.status == 303
    return browser
