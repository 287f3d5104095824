"""A client that behaves like TeamTalk's when the cluster misbehaves.

It finds its gateway through discovery and, when the connection closes,
finds one again and logs in again. A message not acked in time is resent
with the same client msg id (the server deduplicates it), a bounded number
of times. Every figure a scenario prints is counted here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.support.ttclient import ServerClosed, TTClient

Connect = Callable[[str], Awaitable[tuple[TTClient, str]]]

ACK_TIMEOUT = 2.0  # what a resend waits for; a real client waits longer, the bed is small
MAX_ATTEMPTS = 20  # per message: bounded even if the cluster never recovers


@dataclass
class Acked:
    peer: int
    data: bytes
    client_msg_id: int
    msg_id: int
    at: float  # monotonic time of the ack
    attempts: int


@dataclass
class Resender:
    """One user's connection, reconnected through discovery, and what it sent."""

    name: str
    connect: Connect
    client: TTClient | None = None
    gateway: str = ""
    acked: list[Acked] = field(default_factory=list)
    resent: int = 0
    reconnects: int = 0
    gateways: list[str] = field(default_factory=list)  # where it logged in, in order
    _next_id: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def open(self) -> TTClient:
        self.client, self.gateway = await self.connect(self.name)
        self.gateways.append(self.gateway)
        return self.client

    async def reconnect(self, dead: TTClient) -> TTClient:
        """A new connection, unless another task already replaced ``dead``."""
        async with self._lock:
            if self.client is not dead and self.client is not None:
                return self.client
            await dead.close()
            self.reconnects += 1
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    return await self.open()
                except (OSError, AssertionError, ServerClosed, TimeoutError):
                    await asyncio.sleep(0.2)  # discovery may still hand out the dead gateway
            raise RuntimeError(f"{self.name} could not reconnect")

    def new_client_msg_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, peer: int, data: bytes) -> Acked:
        """Send until acked, with one client msg id for every attempt."""
        client_msg_id = self.new_client_msg_id()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            client = self.client or await self.open()
            if client.closed.is_set():  # the gateway went away between two messages
                client = await self.reconnect(client)
            try:
                ack = await client.send_text(peer, data, client_msg_id, timeout=ACK_TIMEOUT)
            except TimeoutError:
                self.resent += 1
                continue
            except (ServerClosed, ConnectionError):
                self.resent += 1
                await self.reconnect(client)
                continue
            acked = Acked(peer, data, client_msg_id, ack.msg_id, time.monotonic(), attempt)
            self.acked.append(acked)
            return acked
        raise RuntimeError(f"{self.name}: {data!r} not acked after {MAX_ATTEMPTS} attempts")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
