"""imctl user / dept / group against a live cluster; imports seen by a client."""

from __future__ import annotations

import time
from pathlib import Path

from common.commands import Cmd
from common.pb import buddy_pb2
from tests.cli.conftest import PASSWORD, AdminCluster
from tests.support.ttclient import TTClient


def test_users_and_departments(cluster: AdminCluster) -> None:
    sales = cluster.json("dept", "add", "Sales")["department"]
    east = cluster.json("dept", "add", "East", "--parent", "Sales", "--priority", "2")["department"]
    assert east["parent_id"] == sales["id"]
    created = cluster.json(
        "user",
        "add",
        "erin",
        "--password",
        PASSWORD,
        "--nick",
        "Erin",
        "--department",
        "East",
        "--email",
        "e@x",
    )["user"]
    assert (created["name"], created["nick"], created["department_id"]) == ("erin", "Erin", east["id"])
    assert "password" not in created and not any("hash" in key for key in created)

    shown = cluster.json("user", "show", "erin")["user"]
    assert shown == cluster.json("user", "show", str(created["id"]))["user"]
    updated = cluster.json("user", "update", "erin", "--nick", "Erin E.", "--tel", "555")["user"]
    assert (updated["nick"], updated["tel"]) == ("Erin E.", "555")
    assert updated["updated"] >= shown["updated"]
    listing = cluster.json("user", "list", "--search", "eri")
    assert [u["name"] for u in listing["users"]] == ["erin"] and listing["total"] == 1

    table = cluster.ok("user", "list", "--search", "eri")
    assert "NAME" in table.splitlines()[0] and "erin" in table and "1 of 1 users" in table
    assert "Erin E." in cluster.ok("user", "show", "erin")

    # Refusals are one line and exit 1: a name taken, an unknown user.
    taken = cluster.imctl("user", "add", "erin", "--password", "x")
    assert taken.exit_code == 1 and "exists" in taken.stderr and "Traceback" not in taken.output
    missing = cluster.imctl("user", "show", "nobody")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "Error: no user 'nobody'"
    assert cluster.imctl("user", "update", "erin").exit_code == 2  # nothing to change

    # The tree: East moves under a new top-level department, Sales is renamed.
    north = cluster.json("dept", "add", "North")["department"]
    assert cluster.json("dept", "move", "East", str(north["id"]))["department"]["parent_id"] == north["id"]
    assert cluster.json("dept", "rename", str(sales["id"]), "Sales EU")["department"]["name"] == "Sales EU"
    tree = cluster.ok("dept", "list").splitlines()
    north_row = next(i for i, line in enumerate(tree) if " North" in line)
    assert "   East" in tree[north_row + 1]  # indented under its parent
    names = {d["name"]: d for d in cluster.json("dept", "list")["departments"]}
    assert names["East"]["parent_id"] == north["id"] and "Sales EU" in names

    # A department with a user in it is not deleted (409 -> exit 1); an empty one is.
    refused = cluster.imctl("dept", "delete", "East")
    assert refused.exit_code == 1, refused.output
    assert cluster.json("dept", "delete", "Sales EU")["department"]["id"] == sales["id"]
    assert cluster.imctl("dept", "delete", "Sales EU").exit_code == 1  # gone now


def test_groups(cluster: AdminCluster) -> None:
    group = cluster.json("group", "create", "project", "alice", "bob", "--creator", "alice")["group"]
    assert set(group["members"]) == {cluster.users["alice"], cluster.users["bob"]}
    changed = cluster.json("group", "add", str(group["id"]), "carol")
    assert changed["added"] == [cluster.users["carol"]]
    changed = cluster.json("group", "remove", str(group["id"]), "bob")
    assert changed["removed"] == [cluster.users["bob"]]
    shown = cluster.json("group", "show", str(group["id"]))["group"]
    assert set(shown["members"]) == {cluster.users["alice"], cluster.users["carol"]}
    assert str(group["id"]) in cluster.ok("group", "list")
    dismissed = cluster.json("group", "dismiss", str(group["id"]), "--yes")["group"]
    assert dismissed["id"] == group["id"]
    assert cluster.imctl("group", "show", "999999").exit_code == 1


def _write_csv(path: Path, count: int) -> None:
    lines = ["name,password,nick,department,email,tel"]
    lines += [f"imp{i:04d},pw{i},Imported {i},,imp{i}@example.com,{1000 + i}" for i in range(count)]
    lines += [
        "imp0001,pw,Again,,,",  # duplicate of a row above
        "alice,pw,Taken,,,",  # exists already
        "nopass,,No Password,,,",
        "badnews,pw,Bad,Nowhere,,",  # no such department
        "extra,pw,Extra,,,,surplus",  # more fields than the header
        "",
    ]
    path.write_text("\n".join(lines) + "\n")


async def test_import_1000_users_seen_by_a_connected_client(
    cluster: AdminCluster, clients: list[TTClient], tmp_path: Path
) -> None:
    watcher = await cluster.client("dave")
    clients.append(watcher)
    first = await watcher.call(Cmd.ALL_USER_REQ, buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0))
    since = first.latest_update_time

    csv_file = tmp_path / "users.csv"
    _write_csv(csv_file, 1000)
    started = time.monotonic()
    result = await cluster.aimctl("user", "import", str(csv_file), "--chunk-size", "400")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 30
    assert "created 1000 users, skipped 5" in result.stdout
    reasons = {
        line.split("(")[1].split(")")[0]: line for line in result.stdout.splitlines() if "line " in line
    }
    assert set(reasons) == {"imp0001", "alice", "nopass", "badnews", "extra"}
    assert "line 1003 " in reasons["alice"] and "exists" in reasons["alice"]
    assert "line 1002 " in reasons["imp0001"] and "line 3" in reasons["imp0001"]
    assert "department" in reasons["badnews"]

    # Running it again creates nothing (every name taken) and says so, in JSON too.
    again = await cluster.ajson("user", "import", str(csv_file))
    assert again["created"] == 0 and len(again["skipped"]) == 1005
    assert again["skipped"][0] == {"line": 2, "name": "imp0000", "reason": "a user named 'imp0000' exists"}

    # The connected client sees them in its incremental all-user sync, and they can log in.
    fresh = await watcher.call(Cmd.ALL_USER_REQ, buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=since))
    imported = {u.user_nick_name for u in fresh.user_list if u.user_nick_name.startswith("Imported ")}
    assert len(imported) == 1000
    # Imported without a department: in the default one, which the client lists.
    depts = await watcher.call(Cmd.DEPARTMENT_REQ, buddy_pb2.IMDepartmentReq(user_id=0, latest_update_time=0))
    listed = {d.dept_id for d in depts.dept_list}
    for u in (u for u in fresh.user_list if u.user_nick_name.startswith("Imported ")):
        assert u.user_real_name.startswith("imp") and u.user_domain == u.user_real_name, u
        assert u.department_id in listed, u
    newcomer = await cluster.client("imp0999", "msg-2", password="pw999")
    clients.append(newcomer)
    # --strict turns skipped rows into exit 1 for scripts that want that.
    strict = await cluster.aimctl("user", "import", str(csv_file), "--strict")
    assert strict.exit_code == 1


def test_import_rejects_a_bad_header(cluster: AdminCluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("login,passwd\nx,y\n")
    result = cluster.imctl("user", "import", str(bad))
    assert result.exit_code == 2 and "header" in result.stderr
    assert cluster.imctl("user", "import", str(tmp_path / "missing.csv")).exit_code == 2


async def test_unlock_and_a_password_change_end_a_login_delay(cluster: AdminCluster) -> None:
    cluster.json("user", "add", "locky", "--password", PASSWORD)
    port = cluster.gateway_port("msg-1")

    async def login(password: str) -> str:
        client = TTClient()
        await client.connect("127.0.0.1", port, source="127.0.0.2")  # a guesser's address
        try:
            res = await client.login("locky", password)
            return "ok" if res.result_code == 0 else res.result_string
        finally:
            await client.close()

    async def guess_five_times() -> None:
        for i in range(5):
            assert await login(f"guess {i}") == "wrong user name or password"
        assert (await login(PASSWORD)).startswith("too many failed logins; try again in")

    await guess_five_times()
    assert "unlocked user 'locky'" in (await cluster.aimctl("user", "unlock", "locky")).stdout
    assert await login(PASSWORD) == "ok"
    await guess_five_times()
    assert (await cluster.aimctl("user", "passwd", "locky", "--password", "changed")).exit_code == 0
    assert await login("changed") == "ok"
    missing = await cluster.aimctl("user", "unlock", "nobody-such")
    assert missing.exit_code == 1 and "no user" in missing.stderr
