"""The gateway's client side: coalesced writes, eager handlers, the deadline wheel, the open-file
limit and what an idle logged-in connection costs in memory (issue 12)."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import tracemalloc
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common import connection
from common.codec import encode_frame
from common.commands import Cmd
from common.connection import CHUNK, DeadlineWheel
from common.pb import base_pb2, buddy_pb2, internal_pb2, login_pb2, message_pb2
from common.runner import raise_open_file_limit
from msg_server.client import ClientConnection, _go_on
from msg_server.config import MsgServerConfig
from msg_server.gateway import Gateway
from msg_server.server import warn_open_files
from tests.protocol.fakes import USER, FakeDb, FakeRoute, feed, logged_in, make, settle
from tests.protocol.memory import MemoryTransport


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("imcluster_errors_total", {"kind": kind}) or 0.0


def push_body(n: int) -> bytes:
    return message_pb2.IMMsgData(
        from_user_id=8,
        to_session_id=7,
        msg_id=n + 1,
        create_time=1,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=bytes([n % 256]) * 100,
    ).SerializeToString()


# -- coalesced writes -----------------------------------------------------------------


async def test_frames_of_one_turn_go_out_in_one_write() -> None:
    _, conn, transport, _ = await logged_in()
    transport.writes.clear()
    for n in range(50):
        assert conn.send_raw(Cmd.MSG_DATA, push_body(n))
    assert transport.writes == []  # held until the end of the turn
    await settle()
    assert len(transport.writes) == 1
    assert [f.body for f, _ in transport.frames()] == [push_body(n) for n in range(50)]
    conn.send_raw(Cmd.MSG_DATA, push_body(1))
    await settle()
    assert len(transport.writes) == 2  # the next turn: its own write


async def test_replies_and_pushes_keep_their_order_in_one_write() -> None:
    _, conn, transport, _ = await logged_in()
    transport.writes.clear()
    conn.send_raw(Cmd.MSG_DATA, push_body(1))
    ack = message_pb2.IMMsgDataAck(
        user_id=7, session_id=8, msg_id=1, session_type=base_pb2.SESSION_TYPE_SINGLE
    )
    assert await conn.reply(Cmd.MSG_DATA_ACK, ack, 9)
    conn.send_raw(Cmd.MSG_DATA, push_body(2))
    await settle()
    assert len(transport.writes) == 1
    assert [(f.command_id, f.seq_num) for f, _ in transport.frames()] == [
        (Cmd.MSG_DATA, 0),
        (Cmd.MSG_DATA_ACK, 9),
        (Cmd.MSG_DATA, 0),
    ]


async def test_a_full_chunk_is_written_at_once() -> None:
    _, conn, transport, _ = await logged_in()
    transport.writes.clear()
    body = push_body(1) * 8  # a valid body repeated: 1 KB or so
    count = 2 * CHUNK // len(body)
    for _ in range(count):
        conn.send_raw(Cmd.MSG_DATA, body)
    assert transport.writes and max(transport.writes) <= CHUNK  # not held past a chunk
    await settle()
    assert len(transport.frames()) == count


async def test_a_slow_reader_is_still_cut_off_past_max_write_buffer() -> None:
    _, conn, transport, _ = await logged_in(max_write_buffer=256 * 1024)
    transport.stuck = True
    before = errors("slow_reader")
    body = b"y" * 4000
    sent = 0
    while conn.send_raw(Cmd.MSG_DATA, body):  # the peer reads nothing
        sent += 1
        assert sent < 10_000, "never cut off"
    assert transport.aborted
    assert errors("slow_reader") == before + 1
    # Bounded: the transport's high-water mark + one chunk + max_write_buffer.
    assert sent * len(body) <= transport.high + 2 * CHUNK + 256 * 1024


async def test_close_after_coalesced_frames_still_delivers_them() -> None:
    _, conn, transport, _ = await logged_in()
    transport.written.clear()
    for n in range(3):
        conn.send_raw(Cmd.MSG_DATA, push_body(n))
    conn.close()
    assert transport.closed and not transport.aborted
    assert [f.body for f, _ in transport.frames()] == [push_body(n) for n in range(3)]
    await settle()  # the turn's flush finds nothing more to write (no write after close)


async def test_abort_drops_coalesced_frames() -> None:
    _, conn, transport, _ = await logged_in()
    transport.written.clear()
    conn.send_raw(Cmd.MSG_DATA, push_body(1))
    conn.abort()
    await settle()
    assert transport.aborted and transport.frames() == []


async def test_a_fan_out_encodes_a_body_once(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, conn, transport, _ = await logged_in()
    others = []
    for _ in range(20):
        other = ClientConnection(gateway)
        other_transport = MemoryTransport(other)
        other.connection_made(other_transport)
        others.append((other, other_transport))
    calls = []
    real = connection.encode_frame

    def counting(command_id: int, body: bytes, seq_num: int = 0) -> bytes:
        calls.append(command_id)
        return real(command_id, body, seq_num)

    monkeypatch.setattr(connection, "encode_frame", counting)
    body = push_body(7)
    for other, _ in [(conn, transport), *others]:
        assert other.send_raw(Cmd.MSG_DATA, bytes(bytearray(body)))  # equal, not the same object
    await settle()
    assert len(calls) == 1
    for _, t in [(conn, transport), *others]:
        assert [f.body for f, _ in t.frames()][-1] == body


# -- handlers started eagerly ---------------------------------------------------------


async def test_a_handler_that_answers_without_waiting_costs_no_task() -> None:
    gateway, conn, transport, _ = await logged_in()
    transport.written.clear()
    # No route server: answered from the gateway's own state without a wait, so no task
    # and never in flight.
    feed(conn, Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=7, user_id_list=[8]), seq=3)
    assert conn.pending == 0 and not gateway.requests
    await settle()
    [(frame, res)] = transport.frames()  # answered (at the end of its turn)
    assert frame.seq_num == 3 and [s.user_id for s in res.user_stat_list] == [8]


async def test_a_waiting_handler_goes_on_as_a_task_and_counts_in_flight() -> None:
    gateway, conn, transport, fake = await logged_in(max_pending_requests=4)
    transport.written.clear()
    fake.release.clear()
    for seq in range(1, 7):
        conn.data_received(encode_frame(Cmd.UNREAD_CNT_REQ, b"\x08\x00", seq))
    await settle()
    assert conn.pending == 4 and len(gateway.requests) == 4 and conn.dispatch_paused
    fake.release.set()
    for _ in range(50):
        await asyncio.sleep(0)
        if conn.pending == 0 and len(fake.requests) == 6:
            break
    await settle()
    assert [f.seq_num for f, _ in transport.frames()] == [1, 2, 3, 4, 5, 6]
    assert not gateway.requests and not conn.dispatch_paused


async def test_go_on_passes_results_failures_and_cancellation_through() -> None:
    loop = asyncio.get_running_loop()
    got: list[Any] = []

    async def handler(fut: asyncio.Future[int]) -> None:
        try:
            got.append(await fut)
        except ValueError as exc:
            got.append(f"failed: {exc}")
        except asyncio.CancelledError:
            got.append("cancelled")
            raise

    for outcome in ("result", "failure", "cancel"):
        fut: asyncio.Future[int] = loop.create_future()
        coro = handler(fut)
        waiting = coro.send(None)
        assert waiting is fut
        task = asyncio.ensure_future(_go_on(coro, waiting))
        await asyncio.sleep(0)
        if outcome == "result":
            fut.set_result(5)
            await task
        elif outcome == "failure":
            fut.set_exception(ValueError("no"))
            await task
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert got == [5, "failed: no", "cancelled"]


# -- deadlines --------------------------------------------------------------------------


class Item:
    def __init__(self, since: float, timeout: float) -> None:
        self.deadline_slot: float | None = None
        self.deadline_since = since
        self.deadline_timeout = timeout
        self.expired = asyncio.Event()

    def deadline_expired(self) -> None:
        self.expired.set()


async def test_the_wheel_expires_untouched_items_and_moves_touched_ones() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(loop)
    now = loop.time()
    items = [Item(now, 0.05) for _ in range(1000)]
    for item in items:
        wheel.add(item)
    assert wheel.timers <= 2 and len(wheel) == 1000  # a timer per bucket, not per item
    touched, gone = items[0], items[1]
    wheel.discard(gone)
    touched.deadline_since = now + 0.1  # touched: due later
    await asyncio.wait_for(items[2].expired.wait(), 2.0)
    await asyncio.sleep(0)
    assert all(item.expired.is_set() for item in items[2:])
    assert not touched.expired.is_set() and not gone.expired.is_set()
    assert len(wheel) == 1  # the touched one, in a later bucket
    await asyncio.wait_for(touched.expired.wait(), 2.0)
    assert len(wheel) == 0 and wheel.timers == 0


async def test_login_timeout_and_heartbeat_timeout_use_the_wheel() -> None:
    _, conn, transport, _ = make(login_timeout=0.05)
    await asyncio.wait_for(conn.lost, 2.0)
    assert transport.aborted
    _, conn, transport, _ = await logged_in(heartbeat_timeout_pc=0.05)
    assert conn.deadline_timeout == 0.05
    await asyncio.wait_for(conn.lost, 2.0)
    assert transport.aborted


# -- the open-file limit ------------------------------------------------------------------


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lower = min(soft, 512) if hard == resource.RLIM_INFINITY else min(soft, hard - 1, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lower, hard))
    try:
        got = raise_open_file_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert got == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_limit_below_max_connections_is_said_clearly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="msg"):
        assert not warn_open_files(10_000, 10_000, 20_000, 20_000)
        assert caplog.records == []
        assert warn_open_files(100_000, 19_744, 20_000, 20_000)
    [record] = caplog.records
    assert "below max_connections 100000" in record.getMessage()
    assert "at most 19744 clients" in record.getMessage()


# -- memory ------------------------------------------------------------------------------


class StubTransport:
    """Just enough transport for a connection that logs in and then stays idle."""

    __slots__ = ("port", "protocol")

    def __init__(self, protocol: ClientConnection, port: int) -> None:
        self.protocol = protocol
        self.port = port

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", self.port) if name == "peername" else default

    def write(self, data: bytes) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class ManyUsers(FakeDb):
    """Logs ``u<id>`` in as user ``<id>``, remembering nothing per request."""

    def _answer(self, req: Any) -> Any:
        if isinstance(req, internal_pb2.DbLoginReq):
            info = base_pb2.UserInfo()
            info.CopyFrom(USER)
            info.user_id = int(req.user_name[1:])
            return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, user_info=info)
        return super()._answer(req)


class Forgetful(list[Any]):
    def append(self, item: Any) -> None:
        pass


# Python-side bytes per logged-in idle connection: the object, its decoder and flow state,
# its deadline wheel entry, rate-limit and admission entries, its session entry, the
# gateway's sets. Measured 1,319 B at 2,000 (1,251 B at 10,000); it was 3,428 B before
# issue 12. The stub transport stands in for uvloop's (~1 KB of RSS, not counted here).
BYTES_PER_CONNECTION = 1_500


async def test_an_idle_logged_in_connection_costs_at_most_its_budget() -> None:
    unlimited = {
        "max_connections": 100_000,
        "max_connections_per_source": 10**7,
        "max_unauthenticated": 10**7,
        "max_unauthenticated_per_source": 10**7,
        "login_rate_per_source": 1e9,
        "login_burst_per_source": 10**9,
    }
    gateway = Gateway(MsgServerConfig(**unlimited))  # type: ignore[arg-type]
    db = ManyUsers()
    db.requests = Forgetful()
    gateway.db_call = db  # type: ignore[method-assign,assignment]
    gateway.route_call = FakeRoute()  # type: ignore[method-assign,assignment]
    count, warm = 2000, 50
    frames = [
        encode_frame(
            Cmd.LOGIN_REQ,
            login_pb2.IMLoginReq(
                user_name=f"u{i + 1}",
                password="right",
                online_status=base_pb2.USER_STATUS_ONLINE,
                client_type=base_pb2.CLIENT_TYPE_WINDOWS,
            ).SerializeToString(),
            1,
        )
        for i in range(count + warm)
    ]
    conns: list[ClientConnection] = []

    def connect(i: int) -> None:
        conn = ClientConnection(gateway)
        conn.connection_made(StubTransport(conn, 10_000 + i))  # type: ignore[arg-type]
        conn.data_received(frames[i])
        conns.append(conn)

    for i in range(warm):  # what the first connections make once (module state, buckets)
        connect(i)
    await settle()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(warm, warm + count):
            connect(i)
        await settle()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert all(conn.logged_in for conn in conns)
    assert gateway.logged_in == warm + count
    per_connection = (after - before) / count
    assert per_connection <= BYTES_PER_CONNECTION, f"{per_connection:.0f} B per idle connection"


async def test_one_failing_write_leaves_the_other_connections_written() -> None:
    gateway, conn, transport, _ = await logged_in()
    other = ClientConnection(gateway)
    other_transport = MemoryTransport(other)
    other.connection_made(other_transport)

    def broken(data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("the handler is closed")

    transport.write = broken  # type: ignore[method-assign]
    conn.send_raw(Cmd.MSG_DATA, push_body(1))
    other.send_raw(Cmd.MSG_DATA, push_body(2))
    await settle()
    assert transport.aborted
    assert [f.body for f, _ in other_transport.frames()] == [push_body(2)]
