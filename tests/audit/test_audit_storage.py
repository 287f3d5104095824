"""audit.record and audit.list on both engines: filters, paging, bounds."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidArgument
from db_proxy.handlers.admin_audit import LIST_MAX, AuditAdmin
from db_proxy.storage import schema
from db_proxy.storage.sql import SqlStore

BASE_MS = 1_767_225_600_000  # 2026-01-01


def entry(i: int, **overrides: object) -> dict[str, object]:
    return {
        "at_ms": BASE_MS + i * 1000,
        "who": "ops@host" if i % 2 else "alice@laptop",
        "via": "api",
        "remote": "10.0.0.7",
        "action": "POST /admin/v1/users" if i % 3 else "DELETE /admin/v1/users/bob",
        "target": f"user{i}",
        "status": 201,
        "detail": {"n": i},
        **overrides,
    }


async def record_many(admin: AuditAdmin, n: int) -> list[int]:
    return [(await admin.record(entry(i)))["id"] for i in range(n)]


async def test_an_entry_is_stored_and_listed_as_recorded(audit_admin: AuditAdmin) -> None:
    [entry_id] = await record_many(audit_admin, 1)
    listed = await audit_admin.list({})
    assert listed == {
        "entries": [{"id": entry_id, **entry(0)}],
        "next_before_id": None,
    }


async def test_newest_first_and_paged_by_before_id(audit_admin: AuditAdmin) -> None:
    ids = await record_many(audit_admin, 7)
    seen: list[int] = []
    before = None
    for _ in range(10):
        args = {"limit": 3, **({"before_id": before} if before else {})}
        page = await audit_admin.list(args)
        seen += [e["id"] for e in page["entries"]]
        before = page["next_before_id"]
        if before is None:
            break
    assert seen == sorted(ids, reverse=True)


async def test_filters_who_action_prefix_and_time(audit_admin: AuditAdmin) -> None:
    await record_many(audit_admin, 12)
    by_who = (await audit_admin.list({"who": "ops@host"}))["entries"]
    assert {e["target"] for e in by_who} == {f"user{i}" for i in range(12) if i % 2}
    deletes = (await audit_admin.list({"action": "DELETE "}))["entries"]
    assert {e["target"] for e in deletes} == {f"user{i}" for i in range(12) if i % 3 == 0}
    window = (await audit_admin.list({"since_ms": BASE_MS + 3000, "until_ms": BASE_MS + 6000}))["entries"]
    assert [e["target"] for e in window] == ["user5", "user4", "user3"]  # since inclusive, until not
    both = (await audit_admin.list({"who": "ops@host", "action": "POST", "since_ms": BASE_MS + 4000}))[
        "entries"
    ]
    assert [e["target"] for e in both] == ["user11", "user7", "user5"]


async def test_like_wildcards_in_the_prefix_are_literal(audit_admin: AuditAdmin) -> None:
    await audit_admin.record(entry(0, action="a%b"))
    await audit_admin.record(entry(1, action="axb"))
    await audit_admin.record(entry(2, action="a_c!"))
    assert [e["action"] for e in (await audit_admin.list({"action": "a%"}))["entries"]] == ["a%b"]
    assert [e["action"] for e in (await audit_admin.list({"action": "a_"}))["entries"]] == ["a_c!"]
    assert [e["action"] for e in (await audit_admin.list({"action": "a_c!"}))["entries"]] == ["a_c!"]


async def test_long_texts_are_cut_to_their_columns(audit_admin: AuditAdmin) -> None:
    long = {key: "é" * (limit + 50) for key, limit in schema.AUDIT_TEXT_LIMITS.items()}
    await audit_admin.record(entry(0, **long))
    [stored] = (await audit_admin.list({}))["entries"]
    for key, limit in schema.AUDIT_TEXT_LIMITS.items():
        assert stored[key] == "é" * limit


async def test_a_long_detail_is_kept_cut_within_the_limit(audit_admin: AuditAdmin, store: SqlStore) -> None:
    detail = {"rows": ['quote " and \\ backslash ' * 10] * 100}
    await audit_admin.record(entry(0, detail=detail))
    [stored] = (await audit_admin.list({}))["entries"]
    assert set(stored["detail"]) == {"truncated"}
    assert json.dumps(detail, separators=(",", ":")).startswith(stored["detail"]["truncated"][:100])
    [record] = await store.audit_entries(1)
    assert len(record.detail) <= schema.AUDIT_DETAIL_LIMIT


async def test_a_lone_surrogate_is_replaced_not_refused(audit_admin: AuditAdmin) -> None:
    await audit_admin.record(entry(0, who="x\ud800y", detail={"k": "\udfff"}))
    [stored] = (await audit_admin.list({}))["entries"]
    assert stored["who"] == "x?y"
    assert stored["detail"] == {"k": "?"}


async def test_at_ms_zero_is_now(audit_admin: AuditAdmin) -> None:
    await audit_admin.record(entry(0, at_ms=0))
    [stored] = (await audit_admin.list({}))["entries"]
    assert stored["at_ms"] > BASE_MS


async def test_list_limit_is_bounded(audit_admin: AuditAdmin, store: SqlStore) -> None:
    for i in range(LIST_MAX + 5):
        await audit_admin.record(entry(i))
    page = await audit_admin.list({"limit": 10_000})
    assert len(page["entries"]) == LIST_MAX
    assert page["next_before_id"] == page["entries"][-1]["id"]
    rest = await audit_admin.list({"limit": 10_000, "before_id": page["next_before_id"]})
    assert len(rest["entries"]) == 5 and rest["next_before_id"] is None


@pytest.mark.parametrize(
    "args",
    [
        {"who": 5},
        {"action": None},
        {"action": ""},
        {"status": "ok"},
        {"at_ms": -1},
        {"detail": [1, 2]},
        {"secret": "x"},
    ],
)
async def test_bad_record_arguments_are_refused(audit_admin: AuditAdmin, args: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        await audit_admin.record({**entry(0), **args})


@pytest.mark.parametrize(
    "args",
    [{"limit": 0}, {"limit": "5"}, {"before_id": -1}, {"who": "x" * 65}, {"since_ms": 1.5}, {"order": "asc"}],
)
async def test_bad_list_arguments_are_refused(audit_admin: AuditAdmin, args: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        await audit_admin.list(args)


async def test_old_entries_are_deleted_in_batches(store: SqlStore, audit_admin: AuditAdmin) -> None:
    await record_many(audit_admin, 9)
    assert await store.delete_audit_before(BASE_MS + 5000, 3) == 3
    assert await store.delete_audit_before(BASE_MS + 5000, 3) == 2
    assert await store.delete_audit_before(BASE_MS + 5000, 3) == 0
    left = (await audit_admin.list({}))["entries"]
    assert [e["target"] for e in left] == ["user8", "user7", "user6", "user5"]
