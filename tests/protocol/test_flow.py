"""A connection's flow on a memory transport: the in-flight limit holds, a started
frame has a deadline, a large reply is streamed and only a stalled reader is cut off."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from common.codec import encode_frame
from common.commands import Cmd
from common.connection import CHUNK, WRITE_HIGH
from common.pb import base_pb2, buddy_pb2, internal_pb2, message_pb2
from common.rpc import ReqT, ResT, Rpc
from tests.protocol.fakes import USER, FakeDb, logged_in, settle


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("imcluster_errors_total", {"kind": kind}) or 0.0


class Counting:
    """Wraps the fake db_proxy: how many requests are in flight at most."""

    def __init__(self, fake: FakeDb) -> None:
        self.fake = fake
        self.now = 0
        self.most = 0

    async def __call__(self, key: object, rpc: Rpc[ReqT, ResT], req: ReqT) -> ResT:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await self.fake(key, rpc, req)
        finally:
            self.now -= 1


def unread(seq: int) -> bytes:
    req = message_pb2.IMUnreadMsgCntReq(user_id=0, attach_data=seq.to_bytes(2, "big"))
    return encode_frame(Cmd.UNREAD_CNT_REQ, req.SerializeToString(), seq)


async def test_frames_already_read_wait_while_paused_and_go_in_order_once_drained() -> None:
    # request_burst: this is the in-flight limit, not the rate limit (test_rate_limits.py).
    gateway, conn, transport, fake = await logged_in(max_pending_requests=64, request_burst=10_000)
    counting = Counting(fake)
    gateway.db_call = counting  # type: ignore[method-assign,assignment]
    fake.release.clear()
    flood = b"".join(unread(seq) for seq in range(1, 6001))
    conn.data_received(flood + encode_frame(Cmd.HEARTBEAT, b"", 6001))
    await settle()
    assert len(fake.requests) == 64 and not transport.reading
    assert conn.decoder.buffered == (6000 - 64) * len(unread(1)) + 16  # the rest waits, undecoded
    assert transport.frames() == []  # not even the heartbeat: it waits in order
    fake.release.set()
    for _ in range(2000):  # bounded: 6,000 requests, 32 a round once drained
        await asyncio.sleep(0)
        if len(fake.requests) == 6000 and conn.pending == 0:
            break
    await settle()  # the last replies go out at the end of their loop turn
    assert counting.most <= 64
    order = [int.from_bytes(req.attach_data, "big") for _, req in fake.requests]  # type: ignore[attr-defined]
    assert order == list(range(1, 6001))
    replies = [(f.command_id, f.seq_num) for f, _ in transport.frames()]
    assert sorted(seq for command, seq in replies if command == Cmd.UNREAD_CNT_RES) == list(range(1, 6001))
    # Echoed when dispatched, after the last request (whose replies may still be on the way).
    assert replies.index((Cmd.HEARTBEAT, 6001)) >= 6000 - 64
    assert transport.reading and not transport.closed


async def test_a_trickled_frame_after_login_is_closed_at_partial_frame_timeout() -> None:
    _, conn, transport, _ = await logged_in(partial_frame_timeout=0.3)
    before = errors("partial_frame_timeout")
    frame = unread(2)
    started = time.monotonic()
    for byte in frame[:-1]:  # one byte every 30 ms: 0.6 s for the frame; bounded by its length
        if transport.closed:
            break
        conn.data_received(bytes([byte]))
        await asyncio.sleep(0.03)
    await asyncio.wait_for(conn.lost, 1.0)
    assert 0.3 <= time.monotonic() - started < 0.6
    assert transport.aborted and errors("partial_frame_timeout") == before + 1


async def test_frames_finished_in_time_are_not_a_partial_frame_offence() -> None:
    _, conn, transport, _ = await logged_in(partial_frame_timeout=0.2)
    heartbeat = encode_frame(Cmd.HEARTBEAT, b"", 3)
    for _ in range(4):  # 0.4 s of traffic, each frame done in 0.1 s
        conn.data_received(heartbeat[:8])
        await asyncio.sleep(0.1)
        conn.data_received(heartbeat[8:])
    await asyncio.sleep(0.15)
    assert not transport.closed and len(transport.frames()) == 4


PUSH = message_pb2.IMMsgData(
    from_user_id=8,
    to_session_id=7,
    msg_id=1,
    create_time=0,
    msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
    msg_data=b"p",
).SerializeToString()
ALL_REQ = buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0).SerializeToString()


def big_directory(count: int) -> buddy_pb2.IMAllUserRsp:
    res = buddy_pb2.IMAllUserRsp(user_id=7, latest_update_time=1)
    for i in range(count):
        user = res.user_list.add()
        user.CopyFrom(USER)
        user.user_id = i + 1
        user.user_nick_name = f"user {i:06d} with a nick name of some length"
    return res


async def test_a_large_reply_is_streamed_as_the_reader_drains_and_cut_only_when_it_stalls() -> None:
    gateway, conn, transport, fake = await logged_in(max_write_buffer=64 * 1024, write_stall_timeout=0.4)
    directory = big_directory(30_000)  # about 2 MB in one frame, 32x max_write_buffer
    size = directory.ByteSize() + 16
    assert size > 30 * 64 * 1024
    fake.answers[Cmd.ALL_USER_REQ] = directory
    transport.stuck = True
    conn.data_received(encode_frame(Cmd.ALL_USER_REQ, ALL_REQ, 2))
    conn.data_received(unread(3))  # its reply waits behind the big one
    await settle()
    gateway.push_local(internal_pb2.RouteDeliver(user_ids=[7], command_id=Cmd.MSG_DATA, body=PUSH))
    assert transport.buffer_size <= WRITE_HIGH + CHUNK and not transport.closed
    started = time.monotonic()
    for _ in range(200):  # the reader takes 100 KB every 20 ms: about 0.4 s for the lot
        transport.drain(100_000)
        assert transport.buffer_size <= WRITE_HIGH + CHUNK
        await asyncio.sleep(0.02)
        if transport.buffer_size == 0:
            break
    assert not transport.closed and time.monotonic() - started > 0.4  # longer than the stall timeout
    assert max(transport.writes) <= CHUNK
    frames = transport.frames()
    assert [(f.command_id, f.seq_num) for f, _ in frames] == [
        (Cmd.ALL_USER_RES, 2),
        (Cmd.MSG_DATA, 0),
        (Cmd.UNREAD_CNT_RES, 3),
    ]
    assert len(frames[0][1].user_list) == 30_000

    before = errors("write_stall")
    transport.written.clear()
    conn.data_received(encode_frame(Cmd.ALL_USER_REQ, ALL_REQ, 4))
    stalled = time.monotonic()
    await asyncio.wait_for(conn.lost, 2.0)  # the reader reads nothing now
    assert 0.4 <= time.monotonic() - stalled < 1.0
    assert transport.aborted and errors("write_stall") == before + 1
    assert len(transport.written) <= WRITE_HIGH + CHUNK


async def test_unsolicited_pushes_behind_a_large_reply_are_bounded_by_max_write_buffer() -> None:
    gateway, conn, transport, fake = await logged_in(max_write_buffer=64 * 1024, write_stall_timeout=5.0)
    fake.answers[Cmd.ALL_USER_REQ] = big_directory(10_000)
    transport.stuck = True
    conn.data_received(encode_frame(Cmd.ALL_USER_REQ, ALL_REQ, 2))
    await settle()
    before = errors("slow_reader")
    push = internal_pb2.RouteDeliver(user_ids=[7], command_id=Cmd.MSG_DATA, body=b"x" * 1000)
    for _ in range(100):  # 64 KiB of pushes, then one more
        gateway.push_local(push)
        if transport.closed:
            break
    assert transport.aborted and errors("slow_reader") == before + 1
