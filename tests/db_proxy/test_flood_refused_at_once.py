"""A flood into the message workers is refused at once, not queued beyond save_max_wait (issue 12).

On a real store (both engines) with commits slowed to a known pace: once the
worker knows its pace, what would wait longer than ``max_wait`` is refused
"overloaded" at admission (counted ``expected_wait``), and every message that
was admitted is committed and answered within ``max_wait`` plus one batch.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from common.errors import Overloaded
from common.pb import internal_pb2
from db_proxy.push import LogAppender
from db_proxy.storage.model import SESSION_SINGLE, NewMessage, SavedMessage
from db_proxy.workers import MessageWorkers
from tests.db_proxy.conftest import DbProxy

ORIGIN = internal_pb2.Origin(gateway_id="gw-1", conn_id=3)
MAX_WAIT = 0.3
BATCH_SECONDS = 0.05  # every commit takes at least this (a slow disk)


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("imcluster_db_jobs_refused_total", {"reason": reason}) or 0.0


async def test_a_flood_is_refused_at_once_and_what_is_admitted_is_answered_in_time(
    db: DbProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [await db.store.create_user(f"flood{i}", "h") for i in range(20)]
    save = db.store.save_messages

    async def slow(batch: list[NewMessage]) -> list[SavedMessage]:
        await asyncio.sleep(BATCH_SECONDS)
        result: list[SavedMessage] = await save(batch)
        return result

    monkeypatch.setattr(db.store, "save_messages", slow)
    before = refused("expected_wait")
    pool = MessageWorkers(db.store, LogAppender(db.log), 1, 1024, batch_size=8, max_wait=MAX_WAIT)
    pool.start()
    try:
        # Learn the pace: a few batches.
        await asyncio.gather(
            *(pool.save(NewMessage(users[0], SESSION_SINGLE, users[1], 1, b"w", 1), ORIGIN) for _ in range(3))
        )
        admitted: list[tuple[float, asyncio.Future[SavedMessage]]] = []
        refusals = 0
        refusal_took = 0.0
        for i in range(400):  # ~50 batches of work offered at once, 6 fit in MAX_WAIT
            a, b = users[i % 10], users[10 + i % 10]
            started = time.monotonic()
            try:
                admitted.append(
                    (started, pool.save(NewMessage(a, SESSION_SINGLE, b, 1, b"f%d" % i, 1), ORIGIN))
                )
            except Overloaded:
                refusals += 1
                refusal_took = max(refusal_took, time.monotonic() - started)
        assert refusals >= 300, refusals
        assert refusal_took < 0.01  # refused there and then
        answered_after: list[float] = []

        async def answered(started: float, future: asyncio.Future[SavedMessage]) -> None:
            await future
            answered_after.append(time.monotonic() - started)

        await asyncio.wait_for(asyncio.gather(*(answered(s, f) for s, f in admitted)), 10)
        assert len(answered_after) == len(admitted) >= 8
        # Admitted: committed within the bound plus the batch in progress (and scheduling slack).
        assert max(answered_after) < MAX_WAIT + 2 * BATCH_SECONDS + 0.15, max(answered_after)
    finally:
        await pool.stop(timeout=5.0)
    assert refused("expected_wait") >= before + refusals - 1
