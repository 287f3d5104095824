"""The gateway's save batcher (msg_server/save_batch.py) over a real loopback link
to a fake db_proxy that records every DB_SAVE_MSGS frame it gets.

Nothing sleeps: the tests wait on the futures the batcher hands out, or on
events the fake sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.commands import Rpcs
from common.errors import InvalidArgument, NotFound, Overloaded, Unavailable
from common.link import Identity, Link, LinkServer, LinkSettings, Timing, Upstream
from common.pb import base_pb2, internal_pb2, message_pb2
from common.rpc import Commands
from msg_server.save_batch import SAVES_REFUSED, SaveBatcher, SaveLimits, encode_batch

TIMING = Timing(heartbeat_interval=5.0, heartbeat_misses=3, handshake_timeout=2.0)
GATEWAY = Identity(internal_pb2.ROLE_GATEWAY, "msg-1")
ORIGIN = internal_pb2.Origin(gateway_id="msg-1", conn_id=1)


@dataclass
class FakeDb:
    """Answers each item in order: msg_id counts up; "missing" -> NotFound, "bad" -> InvalidArgument."""

    frames: list[list[bytes]] = field(default_factory=list)  # the msg_data of each frame's items
    hold: asyncio.Event | None = None  # set: answer; None: answer at once
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    answer_short: bool = False  # answer one outcome too few
    links: list[Link] = field(default_factory=list)
    next_id: int = 0

    async def save_batch(
        self, link: Link, batch: internal_pb2.DbSaveMsgBatch
    ) -> internal_pb2.DbSaveMsgBatchRes:
        self.frames.append([item.msg.msg_data for item in batch.items])
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        res = internal_pb2.DbSaveMsgBatchRes()
        for item in batch.items[: len(batch.items) - 1 if self.answer_short else None]:
            outcome = res.results.add()
            if item.msg.msg_data == b"missing":
                outcome.error.code, outcome.error.message = NotFound.code, "no user 4000000"
            elif item.msg.msg_data == b"bad":
                outcome.error.code, outcome.error.message = InvalidArgument.code, "bad msg_type"
            else:
                self.next_id += 1
                outcome.saved.msg_id, outcome.saved.create_time, outcome.saved.duplicate = (
                    self.next_id,
                    1,
                    False,
                )
        return res


class Server(LinkServer):
    def __init__(self, db: FakeDb) -> None:
        super().__init__(
            {internal_pb2.ROLE_GATEWAY: Commands().rpc(Rpcs.DB_SAVE_MSGS, db.save_batch)},
            role=internal_pb2.ROLE_DB_PROXY,
            node_id="db-1",
            settings=LinkSettings(timing=TIMING),
        )
        self.db = db

    def on_hello(self, link: Link) -> None:
        self.db.links.append(link)


@dataclass
class Bed:
    db: FakeDb
    server: Server
    upstream: Upstream

    def batcher(self, timeout: float = 5.0, **limits: Any) -> SaveBatcher:
        return SaveBatcher(self.upstream, timeout, SaveLimits(**limits))


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    db = FakeDb()
    server = Server(db)
    port = await server.listen("127.0.0.1", 0)
    upstream = Upstream(
        "db@test",
        [("127.0.0.1", port)],
        GATEWAY,
        settings=LinkSettings(timing=TIMING),
        expect_role=internal_pb2.ROLE_DB_PROXY,
    )
    upstream.start()
    assert await upstream.wait_ready(5)
    yield Bed(db, server, upstream)
    if db.hold is not None:
        db.hold.set()
    await upstream.stop()
    await server.close()


def req(data: bytes, to: int = 2) -> internal_pb2.DbSaveMsgReq:
    msg = message_pb2.IMMsgData(
        from_user_id=1,
        to_session_id=to,
        msg_id=0,
        create_time=0,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=data,
    )
    return internal_pb2.DbSaveMsgReq(msg=msg, session_type=base_pb2.SESSION_TYPE_SINGLE, origin=ORIGIN)


def test_the_batch_is_encoded_as_protobuf_would() -> None:
    items = [req(b"a"), req(b"x" * 300), req(b"")]
    expected = internal_pb2.DbSaveMsgBatch(items=items).SerializeToString()
    assert encode_batch([item.SerializeToString() for item in items]) == expected
    assert encode_batch([]) == b""


async def test_a_turn_of_saves_is_one_frame_in_order_each_answered_in_its_place(bed: Bed) -> None:
    batcher = bed.batcher()
    futures = [batcher.save(req(b"m%d" % i)) for i in range(10)]
    assert bed.db.frames == []  # nothing sent before the turn ends
    results = await asyncio.gather(*futures)
    assert bed.db.frames == [[b"m%d" % i for i in range(10)]]
    assert [r.msg_id for r in results] == list(range(1, 11))
    assert batcher.outstanding == 0 and batcher.outstanding_bytes == 0


async def test_a_refused_item_fails_alone_with_the_error_a_single_save_would_raise(bed: Bed) -> None:
    batcher = bed.batcher()
    datas = [b"first", b"missing", b"second", b"bad", b"third"]
    results = await asyncio.gather(*(batcher.save(req(d)) for d in datas), return_exceptions=True)
    assert isinstance(results[1], NotFound) and "4000000" in results[1].message
    assert isinstance(results[3], InvalidArgument)
    saved = [r for r in results if isinstance(r, internal_pb2.DbSaveMsgRes)]
    assert [r.msg_id for r in saved] == [1, 2, 3]
    assert [results[0], results[2], results[4]] == saved


async def test_frames_are_bounded_in_items_and_bytes_and_keep_the_order(bed: Bed) -> None:
    batcher = bed.batcher(max_items=3)
    await asyncio.gather(*(batcher.save(req(b"%d" % i)) for i in range(7)))
    assert bed.db.frames == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]

    bed.db.frames.clear()
    one = len(req(b"x" * 100).SerializeToString())
    batcher = bed.batcher(max_bytes=2 * one)
    big = b"y" * (3 * one)  # larger than a frame's bound: it still goes, alone
    await asyncio.gather(
        *(batcher.save(req(d)) for d in (b"x" * 100, b"x" * 100, b"x" * 100, big, b"x" * 100))
    )
    assert [len(frame) for frame in bed.db.frames] == [2, 1, 1, 1]
    assert bed.db.frames[2] == [big]


async def test_saves_past_the_outstanding_bound_are_refused_at_once_and_counted(bed: Bed) -> None:
    bed.db.hold = asyncio.Event()
    batcher = bed.batcher(max_outstanding=2)
    refused = SAVES_REFUSED.labels("entries")
    before = refused._value.get()
    first = [batcher.save(req(b"a")), batcher.save(req(b"b"))]
    with pytest.raises(Overloaded):
        batcher.save(req(b"c"))
    assert refused._value.get() == before + 1
    await bed.db.arrived.wait()  # sent, not answered: still outstanding
    with pytest.raises(Overloaded):
        batcher.save(req(b"d"))
    bed.db.hold.set()
    await asyncio.gather(*first)
    assert batcher.outstanding == 0
    assert (await batcher.save(req(b"e"))).msg_id == 3  # room again
    assert bed.db.frames == [[b"a", b"b"], [b"e"]]


async def test_the_byte_bound_refuses_too(bed: Bed) -> None:
    bed.db.hold = asyncio.Event()
    size = len(req(b"x" * 1000).SerializeToString())
    batcher = bed.batcher(max_outstanding_bytes=2 * size)
    refused = SAVES_REFUSED.labels("bytes")
    before = refused._value.get()
    kept = [batcher.save(req(b"x" * 1000)), batcher.save(req(b"x" * 1000))]
    with pytest.raises(Overloaded):
        batcher.save(req(b"x" * 1000))
    assert refused._value.get() == before + 1
    bed.db.hold.set()
    await asyncio.gather(*kept)
    # Nothing outstanding: one message larger than the whole bound still goes.
    lone = bed.batcher(max_outstanding_bytes=10)
    assert (await lone.save(req(b"z" * 100))).msg_id == 3


async def test_a_link_that_drops_fails_every_item_of_the_frame(bed: Bed) -> None:
    bed.db.hold = asyncio.Event()
    batcher = bed.batcher()
    futures = [batcher.save(req(b"m%d" % i)) for i in range(5)]
    await bed.db.arrived.wait()
    (server_link,) = bed.db.links
    server_link.abort()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results), results
    assert len({id(r) for r in results}) == 5  # one exception each
    assert batcher.outstanding == 0 and batcher.outstanding_bytes == 0


async def test_a_frame_that_times_out_fails_every_item(bed: Bed) -> None:
    bed.db.hold = asyncio.Event()
    batcher = bed.batcher(timeout=0.05)
    results = await asyncio.gather(*(batcher.save(req(b"m%d" % i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) and "timed out" in r.message for r in results), results
    assert batcher.outstanding == 0


async def test_no_link_at_the_end_of_the_turn_fails_every_item_at_once(bed: Bed) -> None:
    batcher = bed.batcher()
    futures = [batcher.save(req(b"m%d" % i)) for i in range(3)]
    assert bed.upstream.link is not None
    bed.upstream.link.abort()  # down before the frame is sent
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results), results
    assert bed.db.frames == [] and batcher.outstanding == 0


async def test_a_short_answer_fails_only_the_unanswered_items(bed: Bed) -> None:
    bed.db.answer_short = True
    batcher = bed.batcher()
    results = await asyncio.gather(*(batcher.save(req(b"m%d" % i)) for i in range(3)), return_exceptions=True)
    assert [r.msg_id for r in results[:2]] == [1, 2]  # type: ignore[union-attr]
    assert isinstance(results[2], Exception) and "2 of 3" in str(results[2])


async def test_a_cancelled_waiter_does_not_disturb_the_others(bed: Bed) -> None:
    batcher = bed.batcher()
    futures = [batcher.save(req(b"m%d" % i)) for i in range(3)]
    futures[1].cancel()  # its client left; the message is still sent (and may be stored)
    first, third = await asyncio.gather(futures[0], futures[2])
    assert (first.msg_id, third.msg_id) == (1, 3)
    assert bed.db.frames == [[b"m0", b"m1", b"m2"]]


async def test_while_the_oldest_frame_waits_too_long_new_saves_are_refused_at_once(bed: Bed) -> None:
    bed.db.hold = asyncio.Event()
    batcher = bed.batcher(max_wait=-1.0)  # any unanswered frame has waited "too long"
    refused = SAVES_REFUSED.labels("slow")
    before = refused._value.get()
    first = batcher.save(req(b"a"))
    second = batcher.save(req(b"b"))  # same turn: nothing sent yet, so nothing is late
    await bed.db.arrived.wait()
    with pytest.raises(Overloaded, match="not answered"):
        batcher.save(req(b"c"))
    assert refused._value.get() == before + 1
    bed.db.hold.set()
    assert [(await f).msg_id for f in (first, second)] == [1, 2]
    assert batcher.oldest_wait(batcher.loop.time()) == 0.0
    assert (await batcher.save(req(b"d"))).msg_id == 3  # answered: admitted again
