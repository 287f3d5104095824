"""A small HTTP/2 server over TLS (ALPN "h2" only) on 127.0.0.1, built on the h2 library: the
APNs stand-in's transport.

The protocol object only moves bytes between the transport and h2 and collects each stream's
headers and body; once a stream ends, ``handler`` answers it (synchronously: what it records is
there by the time the client has its answer, so a test needs no waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    alpn: str | None  # the protocol TLS agreed on: "h2", or the test is wrong


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[Request], Response]


@dataclass
class Server:
    port: int
    connections: int = 0  # TLS connections accepted (HTTP/2 multiplexes: one is the norm)
    open: set[asyncio.Transport] = field(default_factory=set)  # closed when the server stops


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Protocol(asyncio.Protocol):
    def __init__(self, handler: Handler, server: Server) -> None:
        self._handler = handler
        self._server = server
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self._streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self._transport: asyncio.Transport | None = None
        self._alpn: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._alpn = transport.get_extra_info("ssl_object").selected_alpn_protocol()
        self._server.connections += 1
        self._server.open.add(transport)
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()  # the GOAWAY h2 queued
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                headers = {_text(name): _text(value) for name, value in event.headers or ()}
                self._streams[event.stream_id] = (headers, bytearray())
            elif isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                self._streams[event.stream_id][1].extend(event.data or b"")
                self._h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                self._answer(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._close()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server.open.discard(self._transport)

    def _answer(self, stream_id: int) -> None:
        headers, body = self._streams.pop(stream_id)
        request = Request(headers[":method"], headers[":path"], headers, bytes(body), self._alpn)
        response = self._handler(request)
        fields = [(":status", str(response.status)), ("content-length", str(len(response.body)))]
        self._h2.send_headers(
            stream_id, fields + list(response.headers.items()), end_stream=not response.body
        )
        if response.body:
            self._h2.send_data(stream_id, response.body, end_stream=True)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@contextlib.asynccontextmanager
async def serve(handler: Handler, context: ssl.SSLContext, host: str = "127.0.0.1") -> AsyncIterator[Server]:
    """Serve ``handler`` on ``host``, a free port; ``context`` should offer ALPN "h2" only."""
    state = Server(port=0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(handler, state), host, 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for transport in list(state.open):
            transport.close()
        await server.wait_closed()
