"""depts.*: list, create, update (no cycles), delete (only when empty), and what
a client's incremental department sync sees of it."""

from __future__ import annotations

from common.commands import Rpcs
from common.pb import base_pb2, buddy_pb2, internal_pb2
from db_proxy.storage.schema import DEFAULT_DEPARTMENT
from tests.admin_backend.conftest import TIMEOUT, Harness

BAD, NOT_FOUND, CONFLICT = internal_pb2.ERR_BAD_REQUEST, internal_pb2.ERR_NOT_FOUND, internal_pb2.ERR_CONFLICT


async def synced(h: Harness, since: int) -> dict[int, base_pb2.DepartInfo]:
    """A client's incremental department sync after ``since``."""
    req = buddy_pb2.IMDepartmentReq(user_id=1, latest_update_time=since)
    res = await h.client.call(Rpcs.DEPARTMENT, req, TIMEOUT)
    return {d.dept_id: d for d in res.dept_list}


async def backdate(h: Harness) -> None:
    """Every department last changed long ago: a sync after 100 sees only what changes next."""
    async with h.store.db.transaction() as tx:
        await tx.execute("UPDATE departments SET updated = 100")


async def test_create_and_list(harness: Harness) -> None:
    h = harness
    eng = (await h.call("depts.create", name="Engineering", priority=3))["department"]
    assert eng == {"id": eng["id"], "name": "Engineering", "parent_id": 0, "priority": 3}
    web = (await h.call("depts.create", name="Web", parent_id=eng["id"]))["department"]
    # The same name elsewhere is fine; twice under one parent is not.
    top_web = (await h.call("depts.create", name="Web"))["department"]
    assert await h.error("depts.create", name="Web", parent_id=eng["id"]) == CONFLICT
    assert await h.error("depts.create", name="Orphan", parent_id=4242) == NOT_FOUND
    for bad in ({}, {"name": ""}, {"name": "  "}, {"name": "n" * 65}, {"name": "x", "priority": "1"}):
        assert await h.error("depts.create", **bad) == BAD, bad
    default, *made = (await h.call("depts.list"))["departments"]
    assert default["name"] == DEFAULT_DEPARTMENT and made == [eng, web, top_web]
    assert set(await synced(h, 0)) == {default["id"], eng["id"], web["id"], top_web["id"]}


async def test_update_and_cycles(harness: Harness) -> None:
    h = harness
    a = (await h.call("depts.create", name="A"))["department"]
    b = (await h.call("depts.create", name="B", parent_id=a["id"]))["department"]
    c = (await h.call("depts.create", name="C", parent_id=b["id"]))["department"]
    other = (await h.call("depts.create", name="X", parent_id=b["id"]))["department"]
    await backdate(h)
    renamed = (await h.call("depts.update", id=c["id"], name="C2", priority=7))["department"]
    assert renamed == {"id": c["id"], "name": "C2", "parent_id": b["id"], "priority": 7}
    seen = await synced(h, 100)
    assert list(seen) == [c["id"]] and seen[c["id"]].dept_name == "C2"
    # A department cannot move under itself or anything inside it.
    for parent in (a["id"], b["id"], c["id"]):
        assert await h.error("depts.update", id=a["id"], parent_id=parent) == BAD
    assert await h.error("depts.update", id=b["id"], parent_id=c["id"]) == BAD
    assert await h.error("depts.update", id=a["id"], parent_id=4242) == NOT_FOUND
    assert await h.error("depts.update", id=4242, name="x") == NOT_FOUND
    assert await h.error("depts.update", id=other["id"], name="C2") == CONFLICT
    moved = (await h.call("depts.update", id=c["id"], parent_id=0))["department"]
    assert moved["parent_id"] == 0
    # Now that C is out of A, A may go under C.
    assert (await h.call("depts.update", id=a["id"], parent_id=c["id"]))["department"]["parent_id"] == c["id"]
    assert (await h.call("depts.update", id=a["id"]))["department"]["parent_id"] == c["id"]
    for bad in ({}, {"id": "x"}, {"id": a["id"], "name": ""}, {"id": a["id"], "parent_id": -1}):
        assert await h.error("depts.update", **bad) == BAD, bad


async def test_delete_only_when_empty(harness: Harness) -> None:
    h = harness
    top = (await h.call("depts.create", name="Top"))["department"]
    sub = (await h.call("depts.create", name="Sub", parent_id=top["id"]))["department"]
    user = await h.user("worker", department_id=sub["id"])
    assert await h.error("depts.delete", id=top["id"]) == CONFLICT  # a sub-department
    assert await h.error("depts.delete", id=sub["id"]) == CONFLICT  # a user
    await h.call("users.update", user=user["id"], fields={"department_id": 0})
    await backdate(h)
    assert (await h.call("depts.delete", id=sub["id"]))["department"] == sub
    assert (await h.call("depts.delete", id=top["id"]))["department"] == top
    assert [d["name"] for d in (await h.call("depts.list"))["departments"]] == [DEFAULT_DEPARTMENT]
    assert await h.error("depts.delete", id=top["id"]) == NOT_FOUND
    assert await h.error("depts.update", id=top["id"], name="back") == NOT_FOUND
    assert await h.error("users.update", user="worker", fields={"department_id": sub["id"]}) == NOT_FOUND
    # A syncing client is told both are gone.
    seen = await synced(h, 100)
    assert {d: seen[d].dept_status for d in seen} == {
        top["id"]: base_pb2.DEPT_STATUS_DELETE,
        sub["id"]: base_pb2.DEPT_STATUS_DELETE,
    }
    # The name is free again.
    again = (await h.call("depts.create", name="Top"))["department"]
    assert again["id"] != top["id"]


async def test_deleted_users_do_not_keep_a_department(harness: Harness) -> None:
    h = harness
    dept = (await h.call("depts.create", name="Temp"))["department"]
    await h.user("leaver", department_id=dept["id"])
    await h.call("users.delete", user="leaver")
    assert (await h.call("depts.delete", id=dept["id"]))["department"] == dept
