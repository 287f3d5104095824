"""A webhook receiver for the tests: a real aiohttp server on 127.0.0.1, port 0.

It checks each request's signature with the secret, answers what the test
scripts (a status per request in turn, or refusing until a deadline), and
records what it accepted, with an event per arrival so tests wait on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SECRET = "test-webhook-secret"


def signature_ok(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (docs/offline-push.md has the same snippet)."""
    expected = (
        "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, signature)


@dataclass
class Receiver:
    secret: str = SECRET
    #: Statuses to answer, one per request, in turn; then 200.
    script: list[int] = field(default_factory=list)
    #: Answer 503 to every request while this returns True.
    refusing: Callable[[], bool] = lambda: False
    #: Accepted notifications (2xx answered), as JSON, and their headers.
    accepted: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    attempts: int = 0
    bad_signatures: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    #: Serve HTTPS with this context (http otherwise).
    tls: ssl.SSLContext | None = None
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()
        return self

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hook"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        timestamp = request.headers.get("X-Imcluster-Timestamp", "")
        if not signature_ok(self.secret, timestamp, body, request.headers.get("X-Imcluster-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        if abs(time.time() - int(timestamp)) > 300:
            return web.Response(status=401)
        if self.refusing():
            return web.Response(status=503)
        if self.script:
            status = self.script.pop(0)
            if status >= 300:
                return web.Response(status=status)
        data = json.loads(body)
        assert data["id"] == request.headers["X-Imcluster-Id"]
        self.accepted.append(data)
        self.ids.append(data["id"])
        self.arrived.set()
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` notifications were accepted."""
        async with asyncio.timeout(timeout):
            while len(self.accepted) < count:
                self.arrived.clear()
                await self.arrived.wait()

    def for_user(self, user_id: int) -> list[dict[str, Any]]:
        return [n for n in self.accepted if n["user_id"] == user_id]
