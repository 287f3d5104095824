"""The message workers under overload, on a real store: a flood into one
conversation is refused past its share while another conversation on the
same worker is admitted; behind a stalled commit, queued jobs are refused
after the wait bound while the commit itself completes (an ack means stored)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from common.errors import Overloaded
from common.pb import internal_pb2
from db_proxy import workers
from db_proxy.push import LogAppender
from db_proxy.storage.model import SESSION_SINGLE, NewMessage, SavedMessage
from db_proxy.workers import MessageWorkers
from tests.db_proxy.conftest import DbProxy

ORIGIN = internal_pb2.Origin(gateway_id="gw-1", conn_id=3)


@contextlib.asynccontextmanager
async def one_worker(db: DbProxy, queue_size: int, max_wait: float = 2.0) -> AsyncIterator[MessageWorkers]:
    pool = MessageWorkers(db.store, LogAppender(db.log), 1, queue_size, batch_size=64, max_wait=max_wait)
    pool.start()
    try:
        yield pool
    finally:
        await pool.stop(timeout=5.0)


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("imcluster_db_jobs_refused_total", {"reason": reason}) or 0.0


async def test_a_flood_is_refused_past_its_share_and_another_conversation_still_gets_in(db: DbProxy) -> None:
    carol = await db.store.create_user("carol", "h")
    before = refused("conversation_full")
    async with one_worker(db, queue_size=16) as pool:  # a conversation may hold 4
        flood = [
            pool.save(NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"f%d" % i, 1), ORIGIN)
            for i in range(4)
        ]
        with pytest.raises(Overloaded, match="conversation full"):
            pool.save(NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"one too many", 1), ORIGIN)
        other = pool.save(NewMessage(carol, SESSION_SINGLE, db.bob, 1, b"victim", 1), ORIGIN)
        saved: list[SavedMessage] = await asyncio.wait_for(asyncio.gather(*flood, other), 10)
    assert [s.msg_id for s in saved[:4]] == [1, 2, 3, 4]  # the flood's order is its sending order
    assert saved[4].msg_id == 1
    assert refused("conversation_full") == before + 1


async def test_behind_a_stalled_commit_queued_jobs_are_refused_and_the_commit_completes(
    db: DbProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "EXPIRE_INTERVAL", 0.05)
    save = db.store.save_messages
    entered, release = asyncio.Event(), asyncio.Event()

    async def stalled(batch: list[NewMessage]) -> list[SavedMessage]:
        entered.set()
        await release.wait()  # a lock held by someone else
        result: list[SavedMessage] = await save(batch)
        return result

    monkeypatch.setattr(db.store, "save_messages", stalled)
    before = refused("queue_timeout")
    async with one_worker(db, queue_size=16, max_wait=0.3) as pool:
        first = pool.save(NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"in the transaction", 1), ORIGIN)
        await asyncio.wait_for(entered.wait(), 5)
        started = time.monotonic()
        behind = [
            pool.save(NewMessage(db.alice, SESSION_SINGLE, db.bob, 1, b"b%d" % i, 1), ORIGIN)
            for i in range(3)
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*behind, return_exceptions=True), 5)
        waited = time.monotonic() - started
        assert all(isinstance(o, Overloaded) for o in outcomes), outcomes
        assert 0.3 <= waited < 1.0
        assert not first.done()  # never abandoned
        release.set()
        stored = await asyncio.wait_for(first, 5)
    assert stored.msg_id == 1
    assert refused("queue_timeout") == before + 3
    listed = await db.store.message_list(db.alice, SESSION_SINGLE, db.bob, 0, 10)
    assert [m.msg_data for m in listed] == [b"in the transaction"]
