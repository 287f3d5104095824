"""groups.*: create, list, show, members, dismiss; members online hear of changes."""

from __future__ import annotations

from common.commands import Cmd
from common.pb import base_pb2, internal_pb2
from tests.admin_backend.conftest import Harness

BAD, NOT_FOUND = internal_pb2.ERR_BAD_REQUEST, internal_pb2.ERR_NOT_FOUND
ADD, DEL = base_pb2.GROUP_MODIFY_TYPE_ADD, base_pb2.GROUP_MODIFY_TYPE_DEL


async def users(h: Harness, *names: str) -> list[int]:
    return [(await h.user(name))["id"] for name in names]


async def test_create_show_list(harness: Harness) -> None:
    h = harness
    ann, ben, cal = await users(h, "ann", "ben", "cal")
    await h.online(ben, 1)
    group = (await h.call("groups.create", name="Team", creator="ann", members=[ben, "cal", "ben"]))["group"]
    assert group == {
        "id": group["id"],
        "name": "Team",
        "avatar": "",
        "creator_id": ann,
        "type": "normal",
        "version": 1,
        "members": [ann, ben, cal],
    }
    _, notify = await h.gateway.delivered(Cmd.GROUP_CHANGE_MEMBER_NOTIFY)
    assert (notify.group_id, notify.change_type, list(notify.chg_user_id_list)) == (
        group["id"],
        ADD,
        [ann, ben, cal],
    )
    temp = (await h.call("groups.create", name="Chat", creator=ben, type="temp", avatar="http://a/1"))[
        "group"
    ]
    assert (temp["type"], temp["members"], temp["avatar"]) == ("temp", [ben], "http://a/1")
    assert (await h.call("groups.show", id=group["id"]))["group"] == group
    assert (await h.call("groups.show", id=str(temp["id"])))["group"] == temp
    assert await h.call("groups.list") == {"groups": [group, temp], "total": 2}
    assert await h.call("groups.list", offset=1, limit=5) == {"groups": [temp], "total": 2}
    # Clients see the group as one of theirs.
    normal = await h.store.normal_groups_of(cal)
    assert normal == [(group["id"], 1)]


async def test_create_refusals(harness: Harness) -> None:
    h = harness
    await users(h, "ann")
    for bad in (
        {"creator": "ann"},
        {"name": "", "creator": "ann"},
        {"name": "n" * 65, "creator": "ann"},
        {"name": "g", "creator": "ann", "type": "secret"},
        {"name": "g", "creator": "ann", "members": "ben"},
        {"name": "g"},
        {"name": "g", "creator": "ann", "owner": "ann"},
    ):
        assert await h.error("groups.create", **bad) == BAD, bad
    assert await h.error("groups.create", name="g", creator="nobody") == NOT_FOUND
    assert await h.error("groups.create", name="g", creator="ann", members=["ghost"]) == NOT_FOUND
    assert await h.error("groups.show", id=4242) == NOT_FOUND
    assert await h.error("groups.show", id=0) == BAD
    assert (await h.call("groups.list"))["total"] == 0


async def test_members(harness: Harness) -> None:
    h = harness
    ann, ben, cal, dan = await users(h, "ann", "ben", "cal", "dan")
    group = (await h.call("groups.create", name="T", creator=ann, members=[ben]))["group"]
    await h.online(cal, 7)
    await h.online(ben, 8)
    changed = await h.call("groups.members", id=group["id"], add=["cal", dan, ben], remove=["ben"])
    # ben is in both lists: left as he is.
    assert (changed["added"], changed["removed"]) == ([cal, dan], [])
    assert changed["group"]["members"] == [ann, ben, cal, dan] and changed["group"]["version"] == 2
    _, notify = await h.gateway.delivered(Cmd.GROUP_CHANGE_MEMBER_NOTIFY)
    assert (notify.change_type, list(notify.chg_user_id_list)) == (ADD, [cal, dan])
    assert list(notify.cur_user_id_list) == [ann, ben, cal, dan]
    removed = await h.call("groups.members", id=group["id"], remove=["ben", "cal"])
    assert (removed["added"], removed["removed"]) == ([], [ben, cal])
    assert removed["group"]["members"] == [ann, dan] and removed["group"]["version"] == 3
    _, notify = await h.gateway.delivered(Cmd.GROUP_CHANGE_MEMBER_NOTIFY)
    assert (notify.change_type, list(notify.chg_user_id_list)) == (DEL, [ben, cal])
    # Nothing to change: the version stays.
    same = await h.call("groups.members", id=group["id"], remove=["ben"])
    assert (same["added"], same["removed"], same["group"]["version"]) == ([], [], 3)
    assert await h.error("groups.members", id=4242, add=[ann]) == NOT_FOUND
    assert await h.error("groups.members", id=group["id"], add=["ghost"]) == NOT_FOUND
    assert await h.error("groups.members", id=group["id"], add=ann) == BAD
    # A member that joins sees only what comes after.
    assert await h.store.message_list(dan, 2, group["id"], 0, 10) == []


async def test_dismiss(harness: Harness) -> None:
    h = harness
    ann, ben = await users(h, "ann", "ben")
    group = (await h.call("groups.create", name="T", creator=ann, members=[ben]))["group"]
    await h.call("send", **{"from": "ann", "to_group": group["id"], "text": "last words"})
    await h.online(ben, 3)
    dismissed = (await h.call("groups.dismiss", id=group["id"]))["group"]
    assert dismissed["members"] == [] and dismissed["version"] == group["version"] + 1
    _, notify = await h.gateway.delivered(Cmd.GROUP_CHANGE_MEMBER_NOTIFY)
    assert (notify.change_type, list(notify.chg_user_id_list), list(notify.cur_user_id_list)) == (
        DEL,
        [ann, ben],
        [],
    )
    assert await h.error("groups.show", id=group["id"]) == NOT_FOUND
    assert await h.error("groups.dismiss", id=group["id"]) == NOT_FOUND
    assert await h.error("groups.members", id=group["id"], add=[ann]) == NOT_FOUND
    assert await h.call("groups.list") == {"groups": [], "total": 0}
    assert await h.store.normal_groups_of(ben) == []
    # The members' sessions with it are hidden and their unread counts cleared.
    assert await h.store.unread_sessions(ben) == []
    assert await h.error("send", **{"from": "system", "to_group": group["id"], "text": "x"}) == NOT_FOUND
