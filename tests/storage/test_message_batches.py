"""The group-commit transaction of a batch of messages (issue 12): few round trips, still exact.

Multi-row INSERTs, the ids allocated and read back in one script, the COMMIT in
the last one, the dedup table read only after its key refused a resend: ids stay
consecutive per conversation in batch order, resends are found (in the batch,
across batches, mixed with new messages), and a batch is all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from db_proxy.storage import sql_base
from db_proxy.storage.model import SESSION_SINGLE, InvalidValue, StoreError
from db_proxy.storage.sql import SqlStore
from db_proxy.storage.sql_base import Step, values_steps
from tests.storage.conftest import msg


async def ids_of(store: SqlStore, user: int, peer: int) -> list[int]:
    return [m.msg_id for m in await store.message_list(user, SESSION_SINGLE, peer, 0, 1000)]


async def count(store: SqlStore, table: str) -> int:
    async with store.db.reading() as tx:
        ((n,),) = await tx.fetchall(f"SELECT COUNT(*) FROM {table}")
    return int(n)


async def test_ids_are_consecutive_per_conversation_in_batch_order(store: SqlStore) -> None:
    batch = [msg(1 + i % 3, 10 + i % 2, f"m{i}".encode(), client_msg_id=i + 1) for i in range(60)]
    saved = await store.save_messages(batch)
    seen: dict[tuple[int, int], list[int]] = {}
    for m, s in zip(batch, saved, strict=True):
        assert not s.duplicate
        seen.setdefault((m.from_user_id, m.to_id), []).append(s.msg_id)
    for (a, b), ids in seen.items():
        assert ids == list(range(1, len(ids) + 1))
        stored = await store.message_list(a, SESSION_SINGLE, b, 0, 1000)
        assert [m.msg_data for m in reversed(stored)] == [
            m.msg_data for m in batch if (m.from_user_id, m.to_id) == (a, b)
        ]


async def test_resends_mixed_with_new_messages_are_found(store: SqlStore) -> None:
    first = await store.save_messages([msg(1, 2, b"a", client_msg_id=5), msg(3, 4, b"x", client_msg_id=5)])
    # One resend of an earlier batch, one new message, one resend inside the batch.
    saved = await store.save_messages(
        [
            msg(1, 2, b"b", client_msg_id=6),
            msg(1, 2, b"a", client_msg_id=5),
            msg(3, 4, b"y", client_msg_id=6),
            msg(3, 4, b"y", client_msg_id=6),
        ]
    )
    assert [(s.msg_id, s.duplicate) for s in saved] == [(2, False), (1, True), (2, False), (2, True)]
    assert saved[1].create_time == first[0].create_time
    assert await ids_of(store, 1, 2) == [2, 1]
    assert await ids_of(store, 3, 4) == [2, 1]
    assert await count(store, "message_dedup") == 4
    (again,) = await store.save_messages([msg(1, 2, b"c", client_msg_id=7)])
    assert again.msg_id == 3  # the refused attempt consumed no ids


async def test_a_batch_fails_whole_when_a_statement_fails(store: SqlStore) -> None:
    await store.save_messages([msg(1, 2, b"before")])
    # A value only the engine refuses, in the last script (after the ids were
    # allocated): a create_time beyond BIGINT.
    bad = msg(1, 2, b"x", create_time=2**63)
    with pytest.raises((InvalidValue, StoreError)):
        await store.save_messages([msg(1, 2, b"ok", client_msg_id=9), msg(3, 4, b"ok2"), bad])
    assert await ids_of(store, 1, 2) == [1]
    assert await ids_of(store, 3, 4) == []
    assert await count(store, "message_dedup") == 0  # the first batch had no client msg id
    assert await store.latest_msg_id(3, SESSION_SINGLE, 4) == 0
    (after,) = await store.save_messages([msg(1, 2, b"ok", client_msg_id=9)])
    assert (after.msg_id, after.duplicate) == (2, False)  # nothing of the failed batch was kept


async def test_a_failure_in_the_last_script_rolls_everything_back(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The statement after the messages' INSERT breaks: the ids, the messages and
    # the dedup rows go too (on MySQL the COMMIT in the same query never runs).
    real = sql_base.values_steps

    def broken(head: str, rows: Sequence[Sequence[object]], tail: str = "") -> list[Step]:
        steps = real(head, rows, tail)
        if head.startswith("INSERT INTO sessions"):
            steps.append(("INSERT INTO no_such_table VALUES (1)", []))
        return steps

    monkeypatch.setattr("db_proxy.storage.sql_messages.values_steps", broken)
    with pytest.raises(StoreError):
        await store.save_messages([msg(1, 2, b"a", client_msg_id=1), msg(2, 1, b"b")])
    monkeypatch.undo()
    assert await ids_of(store, 1, 2) == []
    assert await count(store, "message_dedup") == 0
    assert await count(store, "sessions") == 0
    (saved,) = await store.save_messages([msg(1, 2, b"a", client_msg_id=1)])
    assert (saved.msg_id, saved.duplicate) == (1, False)


async def test_a_big_batch_is_split_across_statements(store: SqlStore) -> None:
    body = b"\xff" * 60_000
    batch = [msg(1, 2, body + bytes([i]), client_msg_id=i + 1) for i in range(40)]  # ~2.4 MB
    saved = await store.save_messages(batch)
    assert [s.msg_id for s in saved] == list(range(1, 41))
    stored = await store.message_list(1, SESSION_SINGLE, 2, 0, 100)
    assert [m.msg_data for m in reversed(stored)] == [m.msg_data for m in batch]


def test_values_steps_keeps_order_and_limits() -> None:
    rows = [(i, b"x" * 10) for i in range(1000)]
    steps = values_steps("INSERT INTO t (a, b)", rows, "ON CONFLICT DO NOTHING")
    assert all(len(params) <= sql_base.MAX_PARAMS for _, params in steps)
    assert [p for _, params in steps for p in params] == [v for row in rows for v in row]
    for sql, params in steps:
        assert sql.count("?") == len(params)
        assert sql.endswith(" ON CONFLICT DO NOTHING")
    big = [(b"y" * (600 * 1024),), (b"z" * (600 * 1024),), (b"w",)]
    assert [len(params) for _, params in values_steps("INSERT INTO t (a)", big)] == [1, 2]
    assert values_steps("INSERT INTO t (a)", []) == []


@pytest.mark.mysql
async def test_a_batch_of_new_messages_is_two_round_trips_on_mysql(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.engine != "mysql":
        pytest.skip("round trips are a MySQL matter")
    from db_proxy.storage import mysql

    queries: list[str] = []
    transactions: list[mysql._MysqlTx] = []

    class Cursor:
        def __init__(self, real: Any) -> None:
            self.real = real

        async def __aenter__(self) -> Cursor:
            self.real = await self.real.__aenter__()
            return self

        async def __aexit__(self, *exc: object) -> None:
            await self.real.__aexit__(*exc)

        async def execute(self, sql: str, *args: object) -> Any:
            queries.append(sql[:60])  # one COM_QUERY: one round trip
            return await self.real.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    class Connection:
        def __init__(self, real: Any) -> None:
            self.real = real

        def cursor(self) -> Cursor:
            return Cursor(self.real.cursor())

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    real_init = mysql._MysqlTx.__init__

    def counting(self: mysql._MysqlTx, conn: Any) -> None:
        real_init(self, Connection(conn))  # type: ignore[arg-type]
        transactions.append(self)

    monkeypatch.setattr(mysql._MysqlTx, "__init__", counting)
    await store.save_messages([msg(1 + i % 4, 9, client_msg_id=i + 1) for i in range(32)])
    assert len(queries) == 2, queries
    assert [tx.committed for tx in transactions] == [True]  # the COMMIT went with the rows
