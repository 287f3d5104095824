"""users.import: rows checked one by one, bad ones skipped with a reason, the
rest hashed concurrently and created together."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from common.pb import base_pb2, internal_pb2
from db_proxy.storage.sql import SqlStore, TransientError
from tests.admin_backend.conftest import Harness


@pytest.fixture
def password_log2_n() -> int:
    return 10  # the cost the import must handle quickly


async def test_rows_are_checked_one_by_one(harness: Harness) -> None:
    h = harness
    await h.user("taken")
    sales = (await h.call("depts.create", name="Sales"))["department"]
    eng = (await h.call("depts.create", name="Eng"))["department"]
    # Two departments named "Web": a name that does not say which.
    await h.call("depts.create", name="Web")
    await h.call("depts.create", name="Web", parent_id=eng["id"])
    rows: list[Any] = [
        {"name": "ok1", "password": "p1", "nick": "One", "department": "Sales", "email": "1@x", "tel": "1"},
        {"name": "ok2", "password": "p2", "department": eng["id"]},
        {"name": "ok3", "password": "p3", "department": str(sales["id"])},
        {"name": "taken", "password": "p"},
        {"name": "ok1", "password": "p"},
        {"name": "bad name", "password": "p"},
        {"name": "", "password": "p"},
        {"password": "p"},
        {"name": "nopw"},
        {"name": "nodept", "password": "p", "department": "Marketing"},
        {"name": "nodept2", "password": "p", "department": 4242},
        {"name": "ambiguous", "password": "p", "department": "Web"},
        {"name": "badtype", "password": "p", "email": 5},
        {"name": "extra", "password": "p", "role": "admin"},
        "not an object",
        {"name": "ok4", "password": "p4", "department": ""},
    ]
    result = await h.call("users.import", rows=rows)
    assert result["created"] == 4
    expected = [
        (3, "taken", "exists"),
        (4, "ok1", "row 0"),
        (5, "bad name", "whitespace"),
        (6, "", "empty"),
        (7, "", "must be a string"),
        (8, "nopw", "password is required"),
        (9, "nodept", "Marketing"),
        (10, "nodept2", "4242"),
        (11, "ambiguous", "give its id"),
        (12, "badtype", "email"),
        (13, "extra", "role"),
        (14, "", "object"),
    ]
    skipped = result["skipped"]
    assert [(s["row"], s["name"]) for s in skipped] == [(row, name) for row, name, _ in expected]
    for s, (_, _, words) in zip(skipped, expected, strict=True):
        assert words in s["reason"], s
    listed = {u["name"]: u for u in (await h.call("users.list"))["users"]}
    assert sorted(listed) == ["ok1", "ok2", "ok3", "ok4", "taken"]
    assert (listed["ok1"]["nick"], listed["ok1"]["department_id"], listed["ok1"]["email"]) == (
        "One",
        sales["id"],
        "1@x",
    )
    assert (listed["ok2"]["nick"], listed["ok2"]["department_id"]) == ("ok2", eng["id"])
    default = (await h.store.default_department()).id
    assert listed["ok3"]["department_id"] == sales["id"] and listed["ok4"]["department_id"] == default
    assert await h.login("ok3", "p3") == base_pb2.REFUSE_REASON_NONE
    # Importing the same rows again creates nothing.
    again = await h.call("users.import", rows=rows[:4])
    assert again["created"] == 0 and [s["row"] for s in again["skipped"]] == [0, 1, 2, 3]


@pytest.mark.serial  # timed
async def test_a_thousand_rows_in_a_few_seconds(harness: Harness) -> None:
    h = harness
    rows = [{"name": f"bulk{i:04d}", "password": f"pw{i}"} for i in range(1000)]
    started = time.monotonic()
    result = await h.call("users.import", rows=rows)
    took = time.monotonic() - started
    assert result == {"created": 1000, "skipped": []}
    assert took < 10.0, f"1000 rows took {took:.1f} s"
    assert (await h.call("users.list", limit=0))["total"] == 1000
    assert await h.login("bulk0999", "pw999") == base_pb2.REFUSE_REASON_NONE
    stored = await h.store.user_by_name("bulk0500")
    assert stored is not None and stored.password_hash.startswith("scrypt$10$")


async def test_call_limits(harness: Harness) -> None:
    h = harness
    too_many = [{"name": f"u{i}", "password": "p"} for i in range(1001)]
    for bad in ({"rows": too_many}, {"rows": {"name": "x"}}, {}, {"rows": [], "dry_run": True}):
        assert await h.error("users.import", **bad) == internal_pb2.ERR_BAD_REQUEST
    assert await h.call("users.import", rows=[]) == {"created": 0, "skipped": []}


async def test_imports_at_once_all_complete(harness: Harness) -> None:
    """imctl keeps two chunks in flight: on MariaDB their inserts can deadlock
    (InnoDB's unique-name index), and the loser is run again, never refused."""
    h = harness
    # Interleaved names: each chunk's locking read of absent names holds gaps the others insert into.
    chunks = [[{"name": f"at{i * 4 + c:04d}", "password": "pw"} for i in range(200)] for c in range(4)]
    results = await asyncio.gather(*(h.call("users.import", rows=rows) for rows in chunks))
    assert results == [{"created": 200, "skipped": []}] * 4
    assert (await h.call("users.list", limit=0))["total"] == 800


async def test_a_batch_that_loses_a_deadlock_is_run_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the engine says of a deadlock (TransientError: its transaction was
    rolled back whole) makes the import run the batch's transaction again."""
    real = SqlStore.create_users
    lost = 0

    async def loses_once(self: SqlStore, users: Any) -> list[int | None]:
        nonlocal lost
        if lost == 0:
            lost += 1
            raise TransientError("MySQL: (1213, 'Deadlock found when trying to get lock')")
        return await real(self, users)

    monkeypatch.setattr(SqlStore, "create_users", loses_once)
    result = await harness.call("users.import", rows=[{"name": "again1", "password": "pw"}])
    assert result == {"created": 1, "skipped": []} and lost == 1
