"""Users made through the admin API (users.create, users.import) as a
TeamTalk client sees them: the login name as user_real_name, a search key
as user_domain, a department the client's department list has."""

from __future__ import annotations

from common.commands import Rpcs
from common.pb import buddy_pb2, internal_pb2
from db_proxy.storage.schema import DEFAULT_DEPARTMENT
from tests.admin_backend.conftest import TIMEOUT, Harness

CONFLICT = internal_pb2.ERR_CONFLICT


async def test_created_and_imported_users_as_a_client_sees_them(harness: Harness) -> None:
    h = harness
    await h.user("alice")
    await h.user("zhangsan", nick="张三")
    sales = (await h.call("depts.create", name="Sales"))["department"]
    rows = [
        {"name": "li", "password": "p", "nick": "李四"},
        {"name": "east1", "password": "p", "department": "Sales/East"},  # East is created
        {"name": "east2", "password": "p", "department": "/Sales/East", "nick": "E2"},
        {"name": "north", "password": "p", "department": "North/"},
        {"name": "sales", "password": "p", "department": "Sales"},
        {"name": "bad", "password": "p", "department": "Sales//East"},
    ]
    result = await h.call("users.import", rows=rows)
    assert result["created"] == 5 and [s["name"] for s in result["skipped"]] == ["bad"]

    all_users = await h.client.call(
        Rpcs.ALL_USER, buddy_pb2.IMAllUserReq(user_id=1, latest_update_time=0), TIMEOUT
    )
    depts = await h.client.call(
        Rpcs.DEPARTMENT, buddy_pb2.IMDepartmentReq(user_id=1, latest_update_time=0), TIMEOUT
    )
    by_id = {d.dept_id: d for d in depts.dept_list}

    def path(dept_id: int) -> str:
        d = by_id[dept_id]  # KeyError: a department the client cannot list
        return f"{path(d.parent_dept_id)}/{d.dept_name}" if d.parent_dept_id else d.dept_name

    seen = {
        u.user_real_name: (u.user_nick_name, u.user_domain, path(u.department_id))
        for u in all_users.user_list
    }
    assert seen == {
        "alice": ("alice", "alice", DEFAULT_DEPARTMENT),
        "zhangsan": ("张三", "zhangsan", DEFAULT_DEPARTMENT),
        "li": ("李四", "lisi", DEFAULT_DEPARTMENT),
        "east1": ("east1", "east1", "Sales/East"),
        "east2": ("E2", "east2", "Sales/East"),
        "north": ("north", "north", "North"),
        "sales": ("sales", "sales", "Sales"),
    }
    assert sum(d.dept_name == "East" for d in depts.dept_list) == 1
    assert by_id[sales["id"]].parent_dept_id == 0
    # The default department stays: users without one need it.
    default = next(d.dept_id for d in depts.dept_list if d.dept_name == DEFAULT_DEPARTMENT)
    assert await h.error("depts.delete", id=default) == CONFLICT
    assert await h.error("depts.update", id=default, name="everyone") == CONFLICT
