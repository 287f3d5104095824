"""The login's two Redis scripts over one pipelined connection (db_proxy/cache.py uses it).

redis-py spends most of a returning login's time per command on its own machinery (a
connection checked out of the pool and back, a timeout context, packing, a reply parser
in Python): more than the rest of the login. The login's hot path sends one command per
attempt (EVALSHA of the check script, see cache.CHECK_SCRIPT) and, when there is
something to write, one more: that is all this connection carries. Every command of a
loop turn goes out in one write; replies come back in order (Redis answers a connection's
commands in order) and resolve the waiting calls first in, first out.

Failure is the caller's to handle, as with redis-py: a call raises (RedisUnavailable) when
the connection cannot be made or is lost, or when its reply is later than ``timeout``
(the connection is then dropped with every call waiting on it); db_proxy/cache.py then
falls back to its in-process counters. A new connection is tried on the next call, at
most once per ``retry_after`` seconds. Calls waiting are bounded (``max_pending``): past
it a call is refused at once rather than queued.

Only plain TCP (redis://) is spoken here, with AUTH and SELECT from the URL; for any other
connection (TLS, a unix socket) :meth:`ScriptPipe.for_client` answers None and the
scripts go through redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from typing import Any, cast

from common.errors import Unavailable

MAX_PENDING = 10_000
TIMEOUT = 2.0
RETRY_AFTER = 1.0


class RedisUnavailable(Unavailable):
    """The connection failed, was lost, or a reply was late: the caller falls back."""


class ReplyError(Exception):
    """Redis answered an error (``-ERR ...``)."""


class _Incomplete(Exception):
    pass


def pack(*args: bytes | str | int) -> bytes:
    """One command in RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at ``pos``: (value, the position after it); _Incomplete if it is not all there.

    Errors are returned as ReplyError objects (not raised): they answer one call only."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    after = end + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            raise _Incomplete
        return bytes(buf[after : after + size]), after + size + 2
    if kind == b":":
        return int(line), after
    if kind == b"+":
        return line, after
    if kind == b"-":
        return ReplyError(line.decode("utf-8", "replace")), after
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse(buf, after)
            items.append(item)
        return items, after
    raise ValueError(f"not a RESP reply: {bytes(buf[pos : pos + 16])!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: ScriptPipe) -> None:
        self.pipe = pipe
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass

    def send(self, command: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((time.monotonic(), future))
        self.out.append(command)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return future

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.transport is not None and not self.closed:
            data, self.out = b"".join(self.out), []
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        pos = 0
        try:
            while pos < len(self.buffer):
                value, pos = parse(self.buffer, pos)
                if not self.waiting:
                    raise ValueError("a reply nobody asked for")
                _, future = self.waiting.popleft()
                if not future.done():
                    future.set_result(value)
        except _Incomplete:
            pass
        except ValueError as exc:
            self.abort(f"redis protocol: {exc}")
            return
        del self.buffer[:pos]

    def abort(self, why: str) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.fail(why)

    def fail(self, why: str) -> None:
        while self.waiting:
            _, future = self.waiting.popleft()
            if not future.done():
                future.set_exception(RedisUnavailable(why))
                future.add_done_callback(_retrieved)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail(f"redis connection lost: {exc}" if exc else "redis connection closed")
        if self.pipe.protocol is self:
            self.pipe.protocol = None

    def oldest(self) -> float | None:
        return self.waiting[0][0] if self.waiting else None


class ScriptPipe:
    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = TIMEOUT,
        max_pending: int = MAX_PENDING,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout = timeout
        self.max_pending = max_pending
        self.retry_after = retry_after
        self.protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._failed_at = -1e9
        self._watchdog: asyncio.TimerHandle | None = None
        self._shas: dict[str, str] = {}
        self.sent = 0  # commands sent (tests count round trips with it)

    @classmethod
    def for_client(cls, client: Any) -> ScriptPipe | None:
        """A pipe to the Redis a redis-py client talks to; None when it is not plain TCP."""
        try:
            from redis.asyncio.connection import Connection

            pool = client.connection_pool
            if pool.connection_class is not Connection:  # TLS, a unix socket: leave it to redis-py
                return None
            kw = pool.connection_kwargs
            return cls(
                str(kw.get("host", "localhost")),
                int(kw.get("port", 6379)),
                int(kw.get("db", 0) or 0),
                kw.get("username"),
                kw.get("password"),
            )
        except (AttributeError, ImportError, TypeError, ValueError):
            return None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if time.monotonic() - self._failed_at < self.retry_after:
            raise RedisUnavailable("redis unreachable a moment ago; not tried again yet")
        try:
            async with asyncio.timeout(self.timeout):
                _, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
                hello: list[asyncio.Future[Any]] = []
                if self.password:
                    user = [self.username] if self.username else []
                    hello.append(protocol.send(pack("AUTH", *user, self.password)))
                if self.db:
                    hello.append(protocol.send(pack("SELECT", self.db)))
                for reply in await asyncio.gather(*hello):
                    if isinstance(reply, ReplyError):
                        protocol.abort(str(reply))
                        raise RedisUnavailable(f"redis refused: {reply}")
        except (OSError, TimeoutError) as exc:
            self._failed_at = time.monotonic()
            raise RedisUnavailable(f"redis at {self.host}:{self.port}: {exc}") from exc
        except RedisUnavailable:
            self._failed_at = time.monotonic()
            raise
        self.protocol = protocol
        self._arm_watchdog()
        return protocol

    async def _protocol(self) -> _Protocol:
        protocol = self.protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, future: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not future.cancelled():
            future.exception()  # retrieved: each waiter got it

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout / 4, self._watch)

    def _watch(self) -> None:
        """A reply later than ``timeout`` drops the connection (and fails every call on it)."""
        self._watchdog = None
        protocol = self.protocol
        if protocol is None or protocol.closed:
            return
        oldest = protocol.oldest()
        if oldest is not None and time.monotonic() - oldest > self.timeout:
            self.protocol = None
            protocol.abort(f"no redis reply within {self.timeout:.1f} s")
            return
        self._arm_watchdog()

    async def call(self, *args: bytes | str | int) -> Any:
        protocol = await self._protocol()
        if len(protocol.waiting) >= self.max_pending:
            raise RedisUnavailable(f"{self.max_pending} redis calls waiting already")
        self.sent += 1
        return await protocol.send(pack(*args))

    async def run_script(self, script: str, keys: list[str], args: list[bytes | str | int]) -> Any:
        """EVALSHA; on NOSCRIPT (a restarted or flushed Redis) SCRIPT LOAD and once more."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        reply = await self.call("EVALSHA", sha, len(keys), *keys, *args)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            loaded = await self.call("SCRIPT", "LOAD", script)
            if isinstance(loaded, ReplyError):
                raise loaded
            reply = await self.call("EVALSHA", sha, len(keys), *keys, *args)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.protocol is not None:
            self.protocol.abort("closed")
            self.protocol = None


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
