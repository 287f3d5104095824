"""What the provider tests share: a throwaway CA (made by imctl.certs, as `imctl certs` would)
whose certificate for 127.0.0.1 the local stand-ins serve, a clock the tests move by hand, and
notifications to send."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from common.pb import base_pb2
from db_proxy.offline_push.provider import Device, Notification, Provider
from imctl.certs import issue

HOST = "127.0.0.1"
ANDROID, IOS = base_pb2.CLIENT_TYPE_ANDROID, base_pb2.CLIENT_TYPE_IOS

P = TypeVar("P", bound=Provider)


@dataclass(frozen=True)
class Pki:
    ca_file: str
    cert: str
    key: str

    def server_context(self, alpn: list[str]) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(alpn)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    _, (server,) = issue(tmp_path / "tls", [HOST])
    return Pki(str(tmp_path / "tls" / "ca.pem"), str(server.cert), str(server.key))


class Clock:
    """Monotonic seconds that move only when a test says so (token lifetimes without waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def notification(*devices: tuple[int, str], key: str = "m42:u7", text: str | None = None) -> Notification:
    """A message 42 from user 3 ("alice") to user 7, for ``devices`` given as (client type, token)."""
    return Notification(
        key=key,
        user_id=7,
        from_user_id=3,
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        to_id=3,
        msg_id=42,
        created_at=1_700_000_000,
        sender_name="alice",
        text=text,
        devices=tuple(Device(7, client_type, token) for client_type, token in devices),
    )


@contextlib.asynccontextmanager
async def running(provider: P) -> AsyncIterator[P]:
    """``provider``, closed after (its connections with it)."""
    try:
        yield provider
    finally:
        await provider.close()
