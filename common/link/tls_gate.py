"""TLS on the accepting side, done by hand so a failed handshake is seen.

With ``create_server(ssl=...)`` a peer whose certificate is refused vanishes
without a word (uvloop logs nothing). A :class:`TlsGate` accepts the plain
TCP connection, upgrades it with ``loop.start_tls`` and hands the TLS
transport to the link, so a failure is logged with the peer's address,
counted (``imcluster_link_auth_failures_total{reason="tls"}``) and closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from common.log import format_peer
from common.metrics import LINK_AUTH_FAILURES

log = logging.getLogger("link")


class TlsGate(asyncio.Protocol):
    def __init__(
        self,
        context: ssl.SSLContext,
        handshake_timeout: float,
        make_protocol: Callable[[], asyncio.Protocol],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.make_protocol = make_protocol
        self.tasks = tasks
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass
        transport.pause_reading()  # type: ignore[attr-defined]  # the ClientHello is start_tls's to read
        task = asyncio.get_running_loop().create_task(self._upgrade())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _upgrade(self) -> None:
        transport = self.transport
        assert transport is not None
        peer = format_peer(transport.get_extra_info("peername"))
        protocol = self.make_protocol()
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport,
                protocol,
                self.context,
                server_side=True,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:  # SSLError is an OSError; said for the reader
            LINK_AUTH_FAILURES.labels("tls").inc()
            log.warning("[%s] TLS handshake failed: %s; closing", peer, exc)
            transport.abort()
            return
        if secured is None:  # the peer went away during the handshake
            transport.abort()
            return
        protocol.connection_made(secured)

    def data_received(self, data: bytes) -> None:
        pass  # reading is paused until start_tls takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
