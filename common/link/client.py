"""The connecting end: a self-healing link to one of several interchangeable servers.

An :class:`Upstream` connects, runs the handshake and counts as ready only
once the peer has answered it (a frozen process whose kernel still accepts
is not a link). The bare TCP connect has its own, short bound
(``tcp_connect_timeout``): a host that drops SYNs (cut off, a full accept
queue) would otherwise hold an attempt for the kernel's SYN retransmits, up
to the whole connect-and-handshake bound, and relinking after a cut is slow.
It reconnects with :class:`~common.link.settings.Backoff`, rotating through
its addresses, and re-runs ``on_connected`` (a snapshot, a registration) on
every new link.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from common.link.handshake import Identity
from common.link.protocol import Link, LinkDown
from common.link.session import LinkSession, Side
from common.link.settings import Backoff, LinkSettings
from common.pb import internal_pb2
from common.rpc import Commands, OneWay, ReqT, ResT, Rpc

log = logging.getLogger("link")

#: Default bound of the bare TCP connect.
TCP_CONNECT_TIMEOUT_S = 1.0


class Upstream:
    def __init__(
        self,
        name: str,
        addresses: list[tuple[str, int]],
        me: Identity | internal_pb2.LinkHello,
        *,
        settings: LinkSettings | None = None,
        expect_role: int | None = None,
        commands: Commands | None = None,
        on_connected: Callable[[Link], Awaitable[None] | None] | None = None,
        max_in_flight: int = 16384,
        backoff: Backoff | None = None,
        tcp_connect_timeout: float | None = None,
    ) -> None:
        if not addresses:
            raise ValueError(f"{name}: no addresses configured")
        self.name = name
        self.addresses = addresses
        self.me = me if isinstance(me, Identity) else Identity(me.role, me.node_id)
        self.settings = settings or LinkSettings()
        self.expect_role = expect_role
        self.commands = commands
        self.on_connected = on_connected
        self.max_in_flight = max_in_flight
        self.backoff = backoff or Backoff()
        self.link: Link | None = None
        self.attempts = 0  # connection attempts (tests watch it)
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connecting: asyncio.Task[Link] | None = None
        self._connect_timeout = self.settings.connect_timeout + self.settings.timing.handshake_timeout
        #: The TCP connect alone (before TLS and the handshake): a loopback or
        #: LAN peer that is up answers a SYN within milliseconds.
        self.tcp_connect_timeout = (
            tcp_connect_timeout
            if tcp_connect_timeout is not None
            else min(TCP_CONNECT_TIMEOUT_S, self.settings.connect_timeout)
        )

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.is_open and self._ready.is_set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"upstream-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self.link is not None:
            self.link.close()
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            # Cancelling a connect in the middle of its TLS handshake leaks the
            # socket (asyncio on 3.11); let it finish, it is bounded anyway.
            await asyncio.wait({connecting}, timeout=self._connect_timeout)
        if (
            connecting is not None
            and connecting.done()
            and not connecting.cancelled()
            and connecting.exception() is None
        ):
            connecting.result().abort()
        if self.link is not None:
            self.link.abort()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _open_link(self) -> Link:
        link = self.link
        if link is None or not self._ready.is_set() or not link.is_open:
            raise LinkDown(f"{self.name} is unavailable")
        return link

    async def call(self, rpc: Rpc[ReqT, ResT], request: ReqT, timeout: float) -> ResT:
        return await self._open_link().call(rpc, request, timeout)

    def request(self, rpc: Rpc[Any, ResT], body: bytes, timeout: float) -> asyncio.Future[ResT]:
        """:meth:`Link.request` on the current link; LinkDown at once if there is none."""
        return self._open_link().request(rpc, body, timeout)

    def send(self, command: OneWay[Any] | int, message: Message) -> bool:
        link = self.link
        return link is not None and self._ready.is_set() and link.send(command, message)

    def send_raw(self, command_id: int, body: bytes) -> bool:
        link = self.link
        return link is not None and self._ready.is_set() and link.send_raw(command_id, body)

    # -- LinkOwner ----------------------------------------------------------------

    def link_authenticated(self, link: Link, peer: Identity) -> tuple[int, str] | None:
        return None  # only the accepting side is asked

    def link_made(self, link: Link) -> None:
        pass

    def commands_for(self, peer: Identity) -> Commands | None:
        return self.commands

    def link_opened(self, link: Link) -> None:
        pass

    def link_closed(self, link: Link) -> None:
        pass

    # -- the connect loop -------------------------------------------------------------

    def _new_link(self) -> Link:
        settings = self.settings

        def session(now: float) -> LinkSession:
            return LinkSession(
                Side.CLIENT,
                self.me,
                settings.secrets,
                now,
                timing=settings.timing,
                expect_role=self.expect_role,
                max_in_flight=self.max_in_flight,
            )

        return Link(self, session)

    async def _tcp_connect(self, host: str, port: int) -> socket.socket:
        """A connected socket to ``host``, each address tried within ``tcp_connect_timeout``."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.tcp_connect_timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                async with asyncio.timeout(self.tcp_connect_timeout):
                    await loop.sock_connect(sock, address)
            except TimeoutError:
                sock.close()
                error = TimeoutError(f"no answer to connecting within {self.tcp_connect_timeout:g} s")
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
            else:
                return sock
        raise error or OSError(f"no address for {host}")

    async def _connect(self, host: str, port: int) -> Link:
        loop = asyncio.get_running_loop()
        ssl = self.settings.client_ssl
        sock = await self._tcp_connect(host, port)
        try:
            _, link = await loop.create_connection(
                self._new_link,
                sock=sock,
                ssl=ssl,
                server_hostname="" if ssl is not None else None,
                ssl_handshake_timeout=self.settings.timing.handshake_timeout if ssl is not None else None,
            )
        except BaseException:
            sock.close()
            raise
        try:
            # The session's own handshake deadline bounds this.
            await link.opened
        except BaseException:
            link.abort()
            raise
        return link

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = random.randrange(len(self.addresses))
        delay = 0.0
        failures = 0
        for attempt in itertools.count():
            if delay:
                await asyncio.sleep(delay)
            if self._stopping:
                return
            host, port = self.addresses[(start + attempt) % len(self.addresses)]
            self.attempts += 1
            self._connecting = loop.create_task(self._connect(host, port))
            try:
                link = await asyncio.wait_for(asyncio.shield(self._connecting), self._connect_timeout)
            except (OSError, TimeoutError, LinkDown) as exc:
                if not self._connecting.done():
                    self._connecting.cancel()
                delay = self.backoff.failed()
                failures += 1
                # The first failure of a streak is news (a refused secret, a bad
                # certificate, a peer down); the retries after it are not.
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level, "%s: cannot link to %s:%d: %s (retrying)", self.name, host, port, exc or "timeout"
                )
                continue
            failures = 0
            if self._stopping:
                link.abort()
                return
            self.link = link
            self.backoff.link_up(loop.time())
            try:
                if self.on_connected is not None:
                    result = self.on_connected(link)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                log.exception("%s: set-up on %s:%d failed", self.name, host, port)
                link.abort()
            if link.is_open:
                self._ready.set()
                log.info("%s: linked to %s:%d (%s)", self.name, host, port, link.node_id)
                await link.lost
            self._ready.clear()
            self.link = None
            delay = self.backoff.link_down(loop.time())
            if not self._stopping:
                log.warning(
                    "%s: link to %s:%d lost (%s); reconnecting",
                    self.name,
                    host,
                    port,
                    link.closed_reason or "closed",
                )
