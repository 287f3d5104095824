"""users.*: create, list, show, update, passwd, disable/enable, delete."""

from __future__ import annotations

import json

from common.commands import Cmd, Rpcs
from common.errors import ImError
from common.pb import base_pb2, buddy_pb2, internal_pb2
from tests.admin_backend.conftest import TIMEOUT, Harness, admin_call

BAD, NOT_FOUND, CONFLICT = internal_pb2.ERR_BAD_REQUEST, internal_pb2.ERR_NOT_FOUND, internal_pb2.ERR_CONFLICT
OK = base_pb2.REFUSE_REASON_NONE

USER_KEYS = {
    "id",
    "name",
    "nick",
    "gender",
    "avatar",
    "department_id",
    "email",
    "real_name",
    "tel",
    "domain",
    "status",
    "sign_info",
    "disabled",
    "updated",
    "external_id",
}


async def all_users_since(h: Harness, since: int) -> dict[int, base_pb2.UserInfo]:
    """What a client's incremental all-user sync gets."""
    req = buddy_pb2.IMAllUserReq(user_id=1, latest_update_time=since)
    res = await h.client.call(Rpcs.ALL_USER, req, TIMEOUT)
    return {u.user_id: u for u in res.user_list}


async def test_create_show_and_log_in(harness: Harness) -> None:
    h = harness
    dept = (await h.call("depts.create", name="Eng"))["department"]
    profile = {
        "nick": "Zoë",
        "gender": 2,
        "avatar": "http://a/z.png",
        "department_id": dept["id"],
        "email": "zoe@example.com",
        "real_name": "张三",
        "tel": "+86 10",
        "domain": "zoe",
        "sign_info": "hi",
    }
    user = await h.user("zoe", "pw-1", **profile)
    assert set(user) == USER_KEYS
    assert {k: user[k] for k in profile} == profile
    assert (user["name"], user["status"], user["disabled"]) == ("zoe", 0, False)
    assert user["id"] > 0 and user["updated"] > 0
    assert (await h.call("users.show", user="zoe"))["user"] == user
    assert (await h.call("users.show", user=user["id"]))["user"] == user
    assert (await h.call("users.show", user=str(user["id"])))["user"] == user
    assert await h.login("zoe", "pw-1") == OK
    assert await h.login("zoe", "wrong") != OK
    # The stored hash is scrypt at the configured cost, never the password or its md5.
    stored = await h.store.user_by_name("zoe")
    assert stored is not None and stored.password_hash.startswith("scrypt$4$")
    # No nick given: the login name.
    assert (await h.user("bare"))["nick"] == "bare"


async def test_create_refusals(harness: Harness) -> None:
    h = harness
    await h.user("taken")
    assert await h.error("users.create", name="taken", password="x") == CONFLICT
    for bad in (
        {"password": "x"},
        {"name": "", "password": "x"},
        {"name": "two words", "password": "x"},
        {"name": "tab\tname", "password": "x"},
        {"name": "n" * 65, "password": "x"},
        {"name": 7, "password": "x"},
        {"name": "ok"},
        {"name": "ok", "password": ""},
        {"name": "ok", "password": "x", "gender": "2"},
        {"name": "ok", "password": "x", "gender": True},
        {"name": "ok", "password": "x", "nick": "n" * 65},
        {"name": "ok", "password": "x", "shoe_size": 44},
        {"name": "ok", "password": "x", "status": 1},  # not a create field
    ):
        assert await h.error("users.create", **bad) == BAD, bad
    assert await h.error("users.create", name="ok", password="x", department_id=999) == NOT_FOUND
    assert (await h.user("n" * 64))["name"] == "n" * 64
    assert await h.store.user_by_name("ok") is None


async def test_unknown_method_and_malformed_arguments(harness: Harness) -> None:
    h = harness
    assert await h.error("users.frobnicate") == BAD
    for raw in ("not json", "[1, 2]"):
        call = internal_pb2.AdminCall(method="users.list", args_json=raw)
        try:
            await h.db.call(Rpcs.ADMIN_CALL, call, TIMEOUT)
        except ImError as exc:
            assert exc.code == BAD
        else:
            raise AssertionError(f"{raw!r} was accepted")
    assert await admin_call(h.db, "users.list", {}) == {"users": [], "total": 0}


async def test_not_found(harness: Harness) -> None:
    h = harness
    for ref in (99_999, "nobody", "99999"):
        assert await h.error("users.show", user=ref) == NOT_FOUND
        assert await h.error("users.update", user=ref, fields={"nick": "x"}) == NOT_FOUND
        assert await h.error("users.passwd", user=ref, password="x") == NOT_FOUND
        assert await h.error("users.unlock", user=ref) == NOT_FOUND
        assert await h.error("users.disable", user=ref) == NOT_FOUND
        assert await h.error("users.delete", user=ref) == NOT_FOUND
    for bad in (None, True, 1.5, "", ["alice"]):
        assert await h.error("users.show", user=bad) == BAD


async def test_list_pages_and_search(harness: Harness) -> None:
    h = harness
    names = ["alice", "ALBERT", "bob", "carol_x", "carolyn", "dave"]
    ids = [(await h.user(n, nick=f"Nick {n.title()}"))["id"] for n in names]
    listed = await h.call("users.list")
    assert [u["id"] for u in listed["users"]] == ids and listed["total"] == 6
    page = await h.call("users.list", offset=2, limit=2)
    assert [u["name"] for u in page["users"]] == ["bob", "carol_x"] and page["total"] == 6
    assert (await h.call("users.list", limit=0)) == {"users": [], "total": 6}
    assert len((await h.call("users.list", limit=5000))["users"]) == 6  # cut to the maximum, not refused
    # Substring of name or nick, in any case of ASCII letters.
    found = await h.call("users.list", search="al")
    assert [u["name"] for u in found["users"]] == ["alice", "ALBERT"] and found["total"] == 2
    assert [u["name"] for u in (await h.call("users.list", search="NICK D"))["users"]] == ["dave"]
    # LIKE's wildcards are plain characters.
    assert [u["name"] for u in (await h.call("users.list", search="l_x"))["users"]] == ["carol_x"]
    assert (await h.call("users.list", search="%"))["total"] == 0
    paged = await h.call("users.list", search="carol", limit=1, offset=1)
    assert [u["name"] for u in paged["users"]] == ["carolyn"] and paged["total"] == 2
    for bad in ({"offset": -1}, {"limit": "10"}, {"search": 3}, {"sort": "name"}):
        assert await h.error("users.list", **bad) == BAD


async def test_update_bumps_updated_for_client_sync(harness: Harness) -> None:
    h = harness
    user = await h.user("yan")
    async with h.store.db.transaction() as tx:
        await tx.execute("UPDATE users SET updated = 100 WHERE id = ?", (user["id"],))
    dept = (await h.call("depts.create", name="Ops"))["department"]
    fields = {"nick": "Yan Y", "status": 2, "department_id": dept["id"], "sign_info": "busy", "gender": 1}
    changed = (await h.call("users.update", user="yan", fields=fields))["user"]
    assert {k: changed[k] for k in fields} == fields and changed["updated"] > 100
    synced = await all_users_since(h, 100)
    assert synced[user["id"]].user_nick_name == "Yan Y" and synced[user["id"]].status == 2
    assert (await h.call("users.update", user=user["id"], fields={}))["user"] == changed
    for bad in (
        {"fields": {"name": "has space"}},  # a rename is allowed (tests/ldap/test_rename.py)
        {"fields": {"disabled": True}},
        {"fields": {"password_hash": "x"}},
        {"fields": {"tel": "9" * 33}},
        {"fields": "nick=x"},
        {},
    ):
        assert await h.error("users.update", user="yan", **bad) == BAD, bad
    assert await h.error("users.update", user="yan", fields={"department_id": 424242}) == NOT_FOUND
    assert (await h.call("users.show", user="yan"))["user"] == changed


async def test_an_avatar_or_sign_info_change_is_announced_as_a_clients(harness: Harness) -> None:
    """Through the route server to the gateways, as a client's change (db_proxy.notices),
    from "admin": no connection of the user is skipped."""
    h = harness
    user = await h.user("zoe")
    await h.call("users.update", user="zoe", fields={"nick": "Zoe"})  # nothing others are told of
    await h.call("users.update", user="zoe", fields={"avatar": "http://a/z.png", "sign_info": "hi"})
    changes: dict[int, internal_pb2.RouteProfileChange] = {}
    while len(changes) < 2:
        batch = await h.gateway.next(Cmd.ROUTE_PROFILE_BATCH)
        changes.update({c.command_id: c for c in batch.changes})
    assert sorted(changes) == sorted([Cmd.AVATAR_CHANGED_NOTIFY, Cmd.SIGN_INFO_CHANGED_NOTIFY])
    for change in changes.values():
        assert (change.user_id, change.origin.gateway_id) == (user["id"], "admin")
    avatar = buddy_pb2.IMAvatarChangedNotify.FromString(changes[Cmd.AVATAR_CHANGED_NOTIFY].body)
    assert (avatar.changed_user_id, avatar.avatar_url) == (user["id"], "http://a/z.png")
    sign = buddy_pb2.IMSignInfoChangedNotify.FromString(changes[Cmd.SIGN_INFO_CHANGED_NOTIFY].body)
    assert (sign.changed_user_id, sign.sign_info) == (user["id"], "hi")


async def test_passwd_disable_enable(harness: Harness) -> None:
    h = harness
    user = await h.user("pat", "old")
    assert await h.login("pat", "old") == OK
    after = (await h.call("users.passwd", user="pat", password="new"))["user"]
    assert after["id"] == user["id"] and "password" not in json.dumps(after)
    assert await h.login("pat", "old") != OK
    assert await h.login("pat", "new") == OK
    assert await h.error("users.passwd", user="pat", password="") == BAD
    disabled = (await h.call("users.disable", user="pat"))["user"]
    assert disabled["disabled"] is True
    assert await h.login("pat", "new") != OK
    enabled = (await h.call("users.enable", user=user["id"]))["user"]
    assert enabled["disabled"] is False
    assert await h.login("pat", "new") == OK


async def test_delete(harness: Harness) -> None:
    h = harness
    gone = await h.user("gone", "pw")
    other = await h.user("other")
    group = (await h.call("groups.create", name="g", creator="other", members=["gone"]))["group"]
    deleted = (await h.call("users.delete", user="gone"))["user"]
    assert deleted == gone  # as it was
    assert await h.login("gone", "pw") != OK
    assert await h.error("users.show", user="gone") == NOT_FOUND
    assert await h.error("users.show", user=gone["id"]) == NOT_FOUND
    assert await h.error("users.delete", user=gone["id"]) == NOT_FOUND
    assert [u["name"] for u in (await h.call("users.list"))["users"]] == ["other"]
    after = (await h.call("groups.show", id=group["id"]))["group"]
    assert after["members"] == [other["id"]] and after["version"] == group["version"] + 1
    # Clients that synced the user hear of the change; old messages still name it.
    synced = await all_users_since(h, gone["updated"] - 1)
    assert gone["id"] in synced
    # A deleted user can be added to nothing; its name is free again.
    assert await h.error("groups.members", id=group["id"], add=[gone["id"]]) == NOT_FOUND
    again = await h.user("gone", "pw2")
    assert again["id"] != gone["id"]
    assert await h.login("gone", "pw2") == OK


async def test_unlock_ends_the_wait_of_every_address(harness: Harness) -> None:
    h = harness
    user = await h.user("kim", "pw")
    for _ in range(5):  # login_failure_limit, from the harness's one address
        assert await h.login("kim", "wrong") != OK
    assert await h.login("kim", "pw") != OK  # waiting now, even with the right password
    assert (await h.call("users.unlock", user="kim"))["user"]["id"] == user["id"]
    assert await h.login("kim", "pw") == OK
