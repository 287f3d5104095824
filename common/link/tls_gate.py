"""TLS on the accepting side, done by hand so a failed handshake is seen.

With ``create_server(ssl=...)`` a peer whose certificate is refused vanishes
without a word (uvloop logs nothing). A :class:`TlsGate` accepts the plain
TCP connection, puts the SSL layer in front of the link itself and watches
the handshake, so a failure is logged with the peer's address,
counted (``imcluster_link_auth_failures_total{reason="tls"}``) and closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable

from common.log import format_peer
from common.metrics import LINK_AUTH_FAILURES

log = logging.getLogger("link")


class TlsGate(asyncio.Protocol):
    """Accepts a plain connection and at once puts an SSL protocol in front of the link.

    The SSL layer is installed synchronously in ``connection_made`` (uvloop
    may deliver the ClientHello in the same callback, so an awaited
    ``start_tls`` would miss it); ``asyncio.sslproto.SSLProtocol`` is the
    layer ``create_server(ssl=...)`` itself uses, and it works on uvloop's
    transports. Its waiter tells us how the handshake ended.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        handshake_timeout: float,
        make_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.make_protocol = make_protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        peer = format_peer(transport.get_extra_info("peername"))
        waiter: asyncio.Future[None] = loop.create_future()
        layer = sslproto.SSLProtocol(
            loop,
            self.make_protocol(),
            self.context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=max(1, round(self.handshake_timeout)),  # typeshed: an int
        )
        transport.set_protocol(layer)
        layer.connection_made(transport)
        waiter.add_done_callback(lambda done: _handshake_done(done, transport, peer))

    def data_received(self, data: bytes) -> None:
        raise AssertionError("unreachable: the SSL layer took over in connection_made")


def _handshake_done(done: asyncio.Future[None], transport: asyncio.BaseTransport, peer: str) -> None:
    exc = None if done.cancelled() else done.exception()
    if exc is None and not done.cancelled():
        return
    LINK_AUTH_FAILURES.labels("tls").inc()
    log.warning("[%s] TLS handshake failed: %s; closing", peer, exc or "cancelled")
    if not transport.is_closing():
        transport.abort()  # type: ignore[attr-defined]
