"""A client that behaves like TeamTalk's when the cluster misbehaves.

It finds its gateway through discovery and, when the connection closes,
finds one again and logs in again. A message not acked in time is resent
with the same client msg id (the server deduplicates it), a bounded number
of times. Every connection it opens is kept as a :class:`Connection`: where
it was, when it opened and closed, and every message pushed to it with its
arrival time, which is what the scenarios count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from common.commands import Cmd
from common.conversation import conversation_key, session_type_of
from common.delivery.log import ConversationKey
from common.pb import message_pb2
from tests.support.ttclient import ServerClosed, TTClient

Connect = Callable[[str], Awaitable[tuple[TTClient, str]]]

ACK_TIMEOUT = 2.0  # what a resend waits for; a real client waits longer, the bed is small
MAX_ATTEMPTS = 20  # per message: bounded even if the cluster never recovers
RECONNECT_ATTEMPTS = 50
RECONNECT_PAUSE = 0.2  # discovery may still hand out the dead gateway


@dataclass(frozen=True, slots=True)
class Push:
    at: float  # monotonic arrival time
    conversation: ConversationKey
    msg_id: int
    data: bytes


@dataclass
class Connection:
    """One TCP connection of one device, from login to close."""

    user: str
    device: str
    gateway: str
    client: TTClient
    opened: float
    pushes: list[Push] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.client.closed.is_set()


class _RecordingPushes(list[tuple[int, Message]]):
    """TTClient's push list that keeps message pushes, timed, in the connection instead."""

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self.connection = connection

    def append(self, item: tuple[int, Message]) -> None:
        command, message = item
        if command != Cmd.MSG_DATA or not isinstance(message, message_pb2.IMMsgData):
            super().append(item)
            return
        session_type = session_type_of(message.msg_type) or 0
        key = conversation_key(session_type, message.from_user_id, message.to_session_id)
        self.connection.pushes.append(Push(time.monotonic(), key, message.msg_id, message.msg_data))


@dataclass
class Acked:
    to: int  # the peer's user id, or the group id
    group: bool
    data: bytes
    client_msg_id: int
    msg_id: int
    sent: float  # monotonic time of the first attempt
    at: float  # monotonic time of the ack
    attempts: int
    connection: Connection  # the one the ack came on


@dataclass
class Resender:
    """One device of one user, reconnected through discovery, and what it sent."""

    name: str
    connect: Connect
    device: str = "pc"
    client: TTClient | None = None
    gateway: str = ""
    acked: list[Acked] = field(default_factory=list)
    unacked: int = 0  # given up (attempts or the run's deadline)
    resent: int = 0
    reconnects: int = 0
    gateways: list[str] = field(default_factory=list)  # where it logged in, in order
    connections: list[Connection] = field(default_factory=list)
    _next_id: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def open(self) -> TTClient:
        client, self.gateway = await self.connect(self.name)
        connection = Connection(self.name, self.device, self.gateway, client, time.monotonic())
        client.pushes = _RecordingPushes(connection)
        self.client = client
        self.connections.append(connection)
        self.gateways.append(self.gateway)
        return client

    async def reconnect(self, dead: TTClient) -> TTClient:
        """A new connection, unless another task already replaced ``dead``."""
        async with self._lock:
            if self.client is not dead and self.client is not None:
                return self.client
            await dead.close()
            self.reconnects += 1
            for _attempt in range(RECONNECT_ATTEMPTS):
                try:
                    return await self.open()
                except (OSError, AssertionError, ServerClosed, TimeoutError):
                    await asyncio.sleep(RECONNECT_PAUSE)
            raise RuntimeError(f"{self.name} could not reconnect")

    async def keep_connected(self, stop: asyncio.Event) -> None:
        """Reconnect whenever the connection closes, until ``stop`` (a receiver's loop)."""
        while not stop.is_set():
            client = self.client or await self.open()
            closed = asyncio.ensure_future(client.closed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (closed, stopped):
                waiter.cancel()
            if client.closed.is_set() and not stop.is_set():
                with contextlib.suppress(RuntimeError):
                    await self.reconnect(client)

    def new_client_msg_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, to: int, data: bytes, group: bool = False) -> Acked | None:
        """Send until acked, with one client msg id for every attempt; None if never acked."""
        client_msg_id = self.new_client_msg_id()
        sent = time.monotonic()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            client = self.client or await self.open()
            if client.closed.is_set():  # the gateway went away between two messages
                client = await self.reconnect(client)
            connection = self.connections[-1]
            try:
                if group:
                    ack = await client.send_group_text(to, data, client_msg_id, timeout=ACK_TIMEOUT)
                else:
                    ack = await client.send_text(to, data, client_msg_id, timeout=ACK_TIMEOUT)
            except TimeoutError:
                self.resent += 1
                continue
            except (ServerClosed, ConnectionError):
                self.resent += 1
                await self.reconnect(client)
                continue
            if ack.msg_id == 0:  # refused (no db_proxy reachable): a client tries again
                self.resent += 1
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            acked = Acked(
                to, group, data, client_msg_id, ack.msg_id, sent, time.monotonic(), attempt, connection
            )
            self.acked.append(acked)
            return acked
        self.unacked += 1
        return None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
