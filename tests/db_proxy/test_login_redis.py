"""The login's pipelined Redis connection (db_proxy/login_redis.py): replies in order, failures
raised (the caller falls back), a late reply drops the connection, no reconnect storm."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest

from db_proxy.login_redis import RedisUnavailable, ReplyError, ScriptPipe, _Incomplete, pack, parse
from db_proxy.server import connect_redis

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def test_replies_are_parsed_whole_or_not_at_all() -> None:
    wire = b"$3\r\nabc\r\n:42\r\n$-1\r\n+OK\r\n-NOSCRIPT no\r\n*2\r\n$1\r\nx\r\n:1\r\n"
    values, pos = [], 0
    while pos < len(wire):
        value, pos = parse(wire, pos)
        values.append(value)
    assert values[:4] == [b"abc", 42, None, b"OK"] and values[5] == [b"x", 1]
    assert isinstance(values[4], ReplyError) and str(values[4]).startswith("NOSCRIPT")
    for cut in range(1, len(b"*2\r\n$1\r\nx\r\n:1\r\n")):
        with pytest.raises(_Incomplete):
            parse(b"*2\r\n$1\r\nx\r\n:1\r\n"[:cut], 0)
    assert pack("GET", "k", 7) == b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\n7\r\n"


@pytest.fixture
async def pipe() -> AsyncIterator[ScriptPipe]:
    client = await connect_redis(REDIS_URL)
    assert client is not None
    made = ScriptPipe.for_client(client)
    await client.aclose()
    assert made is not None
    yield made
    made.close()


async def test_many_calls_at_once_get_their_own_replies(pipe: ScriptPipe) -> None:
    key = f"imc:test:{secrets.token_hex(4)}"
    assert await pipe.call("SET", key, "v", "EX", 60) == b"OK"
    replies = await asyncio.gather(*(pipe.call("INCR", key + "n") for _ in range(200)), pipe.call("GET", key))
    assert sorted(replies[:200]) == list(range(1, 201)) and replies[200] == b"v"
    script = "return ARGV[1] .. KEYS[1]"
    await pipe.call("SCRIPT", "FLUSH")  # NOSCRIPT first: loaded and run again
    assert await pipe.run_script(script, ["k"], ["a"]) == b"ak"
    with pytest.raises(ReplyError):
        await pipe.run_script("return redis.call('NOSUCHCOMMAND')", [], [])
    await pipe.call("DEL", key, key + "n")


class Silent:
    """A server that accepts connections and never answers (or hangs up when told)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.got_data = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            while await reader.read(4096):
                self.got_data.set()
        except ConnectionError:
            pass
        writer.close()

    def hang_up(self) -> None:
        for writer in self.writers:
            writer.close()


async def test_a_late_reply_drops_the_connection_and_no_reconnect_storm_follows() -> None:
    silent = Silent()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = ScriptPipe("127.0.0.1", port, timeout=0.2, retry_after=60.0)
    try:
        with pytest.raises(RedisUnavailable, match="no redis reply"):
            await pipe.call("PING")
        assert silent.accepted == 1
        server.close()
        await server.wait_closed()
        with pytest.raises(RedisUnavailable):
            await pipe.call("PING")  # the connection fails...
        with pytest.raises(RedisUnavailable, match="not tried again yet"):
            await pipe.call("PING")  # ...and is not tried again at once
    finally:
        pipe.close()
        silent.hang_up()
        server.close()


async def test_a_lost_connection_fails_its_calls_at_once() -> None:
    silent = Silent()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = ScriptPipe("127.0.0.1", port, timeout=60.0)
    try:
        calls = [asyncio.ensure_future(pipe.call("PING")) for _ in range(3)]
        await silent.got_data.wait()
        silent.hang_up()
        for call in calls:
            with pytest.raises(RedisUnavailable, match="connection"):
                await call
    finally:
        pipe.close()
        silent.hang_up()
        server.close()
        await server.wait_closed()


async def test_too_many_waiting_calls_are_refused_at_once() -> None:
    silent = Silent()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = ScriptPipe("127.0.0.1", port, timeout=60.0, max_pending=2)
    try:
        waiting = [asyncio.ensure_future(pipe.call("PING")) for _ in range(2)]
        await silent.got_data.wait()
        with pytest.raises(RedisUnavailable, match="waiting already"):
            await pipe.call("PING")
        pipe.close()
        for call in waiting:
            with pytest.raises(RedisUnavailable):
                await call
    finally:
        pipe.close()
        silent.hang_up()
        server.close()
        await server.wait_closed()
