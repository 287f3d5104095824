"""Retention: the sans-IO plan, and runs against the store on both engines
(exactly the old rows of the configured type go, in bounded batches, two
runs at once are safe, history reads still work)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from db_proxy import retention as r
from db_proxy.retention import AUDIT, DEDUP, GROUP, SINGLE, Batch, Policy, Retention, RetentionPlan
from db_proxy.storage import open_store
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import gmsg, make_users, msg

NOW = 1_800_000_000
DAY = 86400


def test_the_plan_walks_each_kind_until_a_short_batch() -> None:
    plan = RetentionPlan(Policy(single_days=30, group_days=0, audit_days=365, batch_rows=10), NOW)
    single_before = NOW - 30 * DAY
    steps: list[Batch] = []
    deleted = {SINGLE: [10, 10, 3], DEDUP: [0], AUDIT: [10, 0]}
    while (batch := plan.next_batch()) is not None:
        steps.append(batch)
        plan.done(batch, deleted[batch.kind].pop(0))
    assert [(b.kind, b.session_type, b.before) for b in steps] == [
        (SINGLE, SESSION_SINGLE, single_before),
        (SINGLE, SESSION_SINGLE, single_before),
        (SINGLE, SESSION_SINGLE, single_before),
        (DEDUP, SESSION_SINGLE, single_before),
        (AUDIT, 0, (NOW - 365 * DAY) * 1000),
        (AUDIT, 0, (NOW - 365 * DAY) * 1000),
    ]
    assert all(b.limit == 10 for b in steps)
    assert plan.deleted == {SINGLE: 23, GROUP: 0, AUDIT: 10, DEDUP: 0}
    assert plan.finished and not plan.more


def test_keep_forever_plans_nothing() -> None:
    plan = RetentionPlan(Policy(single_days=0, group_days=0, audit_days=0), NOW)
    assert plan.next_batch() is None and plan.finished


def test_a_run_stops_at_max_batches_and_says_there_is_more() -> None:
    plan = RetentionPlan(Policy(group_days=1, audit_days=0, batch_rows=5), NOW, max_batches=3)
    for _ in range(3):
        batch = plan.next_batch()
        assert batch is not None and batch.kind == GROUP
        plan.done(batch, 5)
    assert plan.next_batch() is None and plan.more


class Counting:
    """A store whose deletes are recorded (the rows each batch removed)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.batches: list[tuple[str, int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def delete_messages_before(self, session_type: int, before: int, limit: int) -> int:
        n = await self.store.delete_messages_before(session_type, before, limit)
        self.batches.append(("messages", session_type, n))
        return n

    async def delete_dedup_before(self, session_type: int, before: int, limit: int) -> int:
        n = await self.store.delete_dedup_before(session_type, before, limit)
        self.batches.append(("dedup", session_type, n))
        return n


async def fill(store: SqlStore) -> dict[str, Any]:
    """17 old 1:1 messages (with client ids: dedup rows), 4 new ones, 6 old group messages."""
    a, b, c = await make_users(store, 3)
    group = await store.create_group("g", "", a, 1, [a, b, c])
    old, new = NOW - 40 * DAY, NOW - 10 * DAY
    await store.save_messages(
        [msg(a, b, b"old%d" % i, client_msg_id=i + 1, create_time=old + i) for i in range(10)]
    )
    await store.save_messages(
        [msg(b, c, b"old%d" % i, client_msg_id=i + 1, create_time=old + i) for i in range(7)]
    )
    await store.save_messages(
        [msg(a, b, b"new%d" % i, client_msg_id=100 + i, create_time=new) for i in range(4)]
    )
    await store.save_messages([gmsg(c, group.id, b"g%d" % i, create_time=old) for i in range(6)])
    return {"a": a, "b": b, "c": c, "group": group.id}


async def count(store: SqlStore, sql: str) -> int:
    async with store.db.reading() as tx:
        rows = await tx.fetchall(sql)
    return int(rows[0][0])


async def test_a_run_deletes_exactly_the_old_messages_of_the_type_in_batches(store: SqlStore) -> None:
    ids = await fill(store)
    counting = Counting(store)
    retention = Retention(
        Policy(single_days=30, audit_days=0, batch_rows=4), store, counting, clock=lambda: NOW
    )
    before = r.DELETED.labels(SINGLE)._value.get()
    plan = await retention.run()
    assert plan.deleted == {SINGLE: 17, GROUP: 0, AUDIT: 0, DEDUP: 17}
    assert r.DELETED.labels(SINGLE)._value.get() - before == 17
    assert [n for kind, _, n in counting.batches if kind == "messages"] == [4, 4, 4, 4, 1]
    assert all(n <= 4 for _, _, n in counting.batches)
    assert all(st == SESSION_SINGLE for _, st, _ in counting.batches)
    # The new 1:1 messages and every group message are left, and still read as before.
    left = await store.message_list(ids["a"], SESSION_SINGLE, ids["b"], 0, 50)
    assert sorted(m.msg_data for m in left) == [b"new%d" % i for i in range(4)]
    assert [m.msg_id for m in left] == [14, 13, 12, 11]  # ids are never reused
    assert await store.message_list(ids["b"], SESSION_SINGLE, ids["c"], 0, 50) == []
    assert len(await store.message_list(ids["a"], SESSION_GROUP, ids["group"], 0, 50)) == 6
    assert await count(store, "SELECT COUNT(*) FROM message_dedup") == 4
    # A later message of a pruned conversation gets the next id.
    [saved] = await store.save_messages([msg(ids["b"], ids["c"], b"after", create_time=NOW)])
    assert saved.msg_id == 8
    # Nothing more is old enough.
    assert (await retention.run()).deleted == dict.fromkeys((SINGLE, GROUP, AUDIT, DEDUP), 0)


async def test_group_retention_leaves_1to1_messages(store: SqlStore) -> None:
    ids = await fill(store)
    retention = Retention(
        Policy(group_days=30, audit_days=0, batch_rows=2000), store, store, clock=lambda: NOW
    )
    assert (await retention.run()).deleted[GROUP] == 6
    assert await count(store, "SELECT COUNT(*) FROM messages WHERE session_type = 1") == 21
    assert await store.message_list(ids["b"], SESSION_GROUP, ids["group"], 0, 50) == []


async def test_audit_retention(store: SqlStore) -> None:
    from db_proxy.storage.model import AuditRecord

    for days in (400, 380, 10):
        await store.add_audit(AuditRecord(0, (NOW - days * DAY) * 1000, "w", "api", "", "POST /x", "", 200))
    retention = Retention(Policy(audit_days=365, batch_rows=1), store, store, clock=lambda: NOW)
    plan = await retention.run()
    assert plan.deleted[AUDIT] == 2 and plan.batches == 3
    [kept] = await store.audit_entries(10)
    assert kept.at_ms == (NOW - 10 * DAY) * 1000


async def test_two_runs_at_once_delete_each_row_once(store: SqlStore, store_url: str) -> None:
    await fill(store)
    async with open_store(store_url) as other:  # another db_proxy's connection
        policy = Policy(single_days=30, group_days=30, audit_days=0, batch_rows=3)
        runs = [Retention(policy, s, s, clock=lambda: NOW) for s in (store, other)]
        plans = await asyncio.gather(*(run.run() for run in runs))
    assert sum(p.deleted[SINGLE] for p in plans) == 17
    assert sum(p.deleted[GROUP] for p in plans) == 6
    assert await count(store, "SELECT COUNT(*) FROM messages") == 4


@pytest.mark.parametrize("rows", [1, 7])
async def test_batch_size_bounds_every_delete(store: SqlStore, rows: int) -> None:
    await fill(store)
    counting = Counting(store)
    policy = Policy(single_days=30, group_days=30, audit_days=0, batch_rows=rows)
    await Retention(policy, store, counting, clock=lambda: NOW).run()
    assert max(n for _, _, n in counting.batches) == rows
    assert await count(store, "SELECT COUNT(*) FROM messages") == 4


async def test_the_background_loop_runs_on_its_interval(store: SqlStore) -> None:
    await fill(store)
    retention = Retention(
        Policy(single_days=30, group_days=30, audit_days=0, interval=0.05), store, store, clock=lambda: NOW
    )
    runs_before = r.LAST_RUN._value.get()
    retention.start()
    try:
        for _ in range(500):  # bounded: 10 s at most
            if r.LAST_RUN._value.get() > runs_before:  # a run ended
                break
            await asyncio.sleep(0.02)
    finally:
        await retention.stop()
    assert await count(store, "SELECT COUNT(*) FROM messages") == 4
