"""DB_SAVE_MSGS on a real store: every item saved as a single DB_SAVE_MSG would be,
in the order given, and answered in its place; a refused item fails alone."""

from __future__ import annotations

import asyncio

from common.commands import Rpcs
from common.errors import InvalidArgument, NotFound, Overloaded
from common.pb import base_pb2, internal_pb2, message_pb2
from tests.db_proxy.conftest import ORIGIN, DbProxy


def send(
    db: DbProxy, to: int, data: bytes, client_msg_id: int, msg_type: int = base_pb2.MSG_TYPE_SINGLE_TEXT
) -> internal_pb2.DbSaveMsgReq:
    msg = message_pb2.IMMsgData(
        from_user_id=db.alice,
        to_session_id=to,
        msg_id=client_msg_id,
        create_time=0,
        msg_type=base_pb2.MsgType.ValueType(msg_type),
        msg_data=data,
    )
    return internal_pb2.DbSaveMsgReq(msg=msg, session_type=base_pb2.SESSION_TYPE_SINGLE, origin=ORIGIN)


def error_of(outcome: internal_pb2.DbSaveMsgOutcome) -> int:
    assert outcome.HasField("error") and not outcome.HasField("saved")
    return outcome.error.code


async def stored(db: DbProxy, peer: int) -> list[bytes]:
    found = await db.store.message_list(db.alice, base_pb2.SESSION_TYPE_SINGLE, peer, 0, 100)
    return [m.msg_data for m in sorted(found, key=lambda m: m.msg_id)]


async def test_a_batch_is_saved_in_order_and_a_refused_item_fails_alone(db: DbProxy) -> None:
    ghost = 4_000_000
    batch = internal_pb2.DbSaveMsgBatch(
        items=[
            send(db, db.bob, b"m0", 1),
            send(db, ghost, b"to nobody", 2),  # refused at the commit, in its place
            send(db, db.bob, b"m1", 3),
            send(db, db.bob, b"wrong type", 4, base_pb2.MSG_TYPE_GROUP_TEXT),  # refused at once
            send(db, db.bob, b"m2", 5),
            send(db, db.bob, b"m0", 1),  # a resend of the first: its original answer
        ]
    )
    res = await db.call(Rpcs.DB_SAVE_MSGS, batch)
    assert len(res.results) == 6
    assert error_of(res.results[1]) == NotFound.code
    assert error_of(res.results[3]) == InvalidArgument.code
    saved = [res.results[i].saved for i in (0, 2, 4)]
    assert [s.msg_id for s in saved] == sorted(s.msg_id for s in saved)
    assert len({s.msg_id for s in saved}) == 3 and not any(s.duplicate for s in saved)
    resend = res.results[5].saved
    assert resend.duplicate and resend.msg_id == saved[0].msg_id
    assert await stored(db, db.bob) == [b"m0", b"m1", b"m2"]


async def test_a_batch_is_the_same_as_its_items_sent_one_by_one(db: DbProxy) -> None:
    carol = await db.store.create_user("carol", "h")
    single = await db.call(Rpcs.DB_SAVE_MSG, send(db, carol, b"alone", 10))
    res = await db.call(
        Rpcs.DB_SAVE_MSGS,
        internal_pb2.DbSaveMsgBatch(items=[send(db, carol, b"b%d" % i, 11 + i) for i in range(5)]),
    )
    ids = [r.saved.msg_id for r in res.results]
    assert ids == list(range(single.msg_id + 1, single.msg_id + 6))
    pushes = [p for p in await db.pushes() if p.to_id == carol]
    assert [p.msg_id for p in pushes] == [single.msg_id, *ids]
    bodies = [message_pb2.IMMsgData.FromString(p.body).msg_data for p in pushes]
    assert bodies == [b"alone", *(b"b%d" % i for i in range(5))]
    assert await db.call(Rpcs.DB_SAVE_MSGS, internal_pb2.DbSaveMsgBatch()) == internal_pb2.DbSaveMsgBatchRes()


async def test_two_batches_in_one_turn_keep_their_order(db: DbProxy) -> None:
    first = asyncio.ensure_future(
        db.call(
            Rpcs.DB_SAVE_MSGS,
            internal_pb2.DbSaveMsgBatch(items=[send(db, db.bob, b"a%d" % i, 100 + i) for i in range(3)]),
        )
    )
    second = asyncio.ensure_future(
        db.call(
            Rpcs.DB_SAVE_MSGS,
            internal_pb2.DbSaveMsgBatch(items=[send(db, db.bob, b"b%d" % i, 200 + i) for i in range(3)]),
        )
    )
    one, two = await asyncio.gather(first, second)
    assert max(r.saved.msg_id for r in one.results) < min(r.saved.msg_id for r in two.results)
    assert await stored(db, db.bob) == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2"]


async def test_a_saturated_worker_refuses_the_items_past_its_bound_and_saves_the_rest(db: DbProxy) -> None:
    # The workers' queues hold 64 jobs (conftest): one conversation's 100 messages overflow one.
    items = [send(db, db.bob, b"m%d" % i, 1000 + i) for i in range(100)]
    res = await db.call(Rpcs.DB_SAVE_MSGS, internal_pb2.DbSaveMsgBatch(items=items))
    codes = [r.error.code if r.HasField("error") else 0 for r in res.results]
    assert Overloaded.code in codes and codes[0] == 0
    kept = [b"m%d" % i for i, code in enumerate(codes) if code == 0]
    assert set(codes) <= {0, Overloaded.code}
    assert await stored(db, db.bob) == kept
