"""Every admin operation with a client counterpart pushes the same notices as
that client request: same command, same body, same recipients; only the
origin differs (the client's connection, which is skipped; "admin", which
skips nobody). Each path runs on a database of its own, set up alike, so the
ids agree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.message import Message

from common.commands import Cmd, Rpcs
from common.pb import base_pb2, buddy_pb2, group_pb2, internal_pb2
from db_proxy.notices import ADMIN_ORIGIN
from tests.db_proxy.conftest import Frame
from tests.services.conftest import ORIGIN, Node, database_url, node_on

ADD, DEL = base_pb2.GROUP_MODIFY_TYPE_ADD, base_pb2.GROUP_MODIFY_TYPE_DEL


@dataclass
class People:
    alice: int
    bob: int
    carol: int
    group: int  # a normal group of alice (its creator) and bob


async def people(node: Node) -> People:
    alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
    created = await node.services.groups.create(alice, "team", "", base_pb2.GROUP_TYPE_NORMAL, [bob])
    return People(alice, bob, carol, created.result.id)  # its notices are not sent: setup


Path_ = Callable[[Node, People], Awaitable[object]]


async def client_create(node: Node, p: People) -> object:
    req = group_pb2.IMGroupCreateReq(
        user_id=p.alice,
        group_type=base_pb2.GROUP_TYPE_NORMAL,
        group_name="new",
        group_avatar="",
        member_id_list=[p.bob, p.carol],
    )
    res = await node.wrapped(Rpcs.DB_GROUP_CREATE, internal_pb2.DbGroupCreateReq, req)
    assert res.result_code == 0
    return res.group_id


async def admin_create(node: Node, p: People) -> object:
    res = await node.call("groups.create", name="new", creator=p.alice, members=[p.bob, p.carol])
    return res["group"]["id"]


async def client_change(
    node: Node, p: People, change_type: base_pb2.GroupModifyType.ValueType, member: int
) -> object:
    req = group_pb2.IMGroupChangeMemberReq(
        user_id=p.alice, change_type=change_type, group_id=p.group, member_id_list=[member]
    )
    res = await node.wrapped(Rpcs.DB_GROUP_CHANGE_MEMBER, internal_pb2.DbGroupChangeMemberReq, req)
    assert res.result_code == 0
    return list(res.cur_user_id_list)


async def client_add(node: Node, p: People) -> object:
    return await client_change(node, p, ADD, p.carol)


async def client_remove(node: Node, p: People) -> object:
    return await client_change(node, p, DEL, p.bob)


async def admin_add(node: Node, p: People) -> object:
    return (await node.call("groups.members", id=p.group, add=[p.carol]))["group"]["members"]


async def admin_remove(node: Node, p: People) -> object:
    return (await node.call("groups.members", id=p.group, remove=[p.bob]))["group"]["members"]


async def client_avatar(node: Node, p: People) -> object:
    req = buddy_pb2.IMChangeAvatarReq(user_id=p.alice, avatar_url="http://a/1.png")
    res = await node.wrapped(Rpcs.DB_CHANGE_AVATAR, internal_pb2.DbChangeAvatarReq, req)
    return res.result_code


async def admin_avatar(node: Node, p: People) -> object:
    await node.call("users.update", user=p.alice, fields={"avatar": "http://a/1.png"})
    return 0


async def client_sign_info(node: Node, p: People) -> object:
    req = buddy_pb2.IMChangeSignInfoReq(user_id=p.alice, sign_info="away 🌴")
    res = await node.wrapped(Rpcs.DB_CHANGE_SIGN_INFO, internal_pb2.DbChangeSignInfoReq, req)
    return res.result_code


async def admin_sign_info(node: Node, p: People) -> object:
    await node.call("users.update", user=p.alice, fields={"sign_info": "away 🌴"})
    return 0


def everyone(p: People) -> list[int]:
    return sorted([p.alice, p.bob, p.carol])


def members_and_removed(p: People) -> list[int]:
    return sorted([p.alice, p.bob])


def nobody(p: People) -> list[int]:
    return []  # a profile change goes to the user's watchers: the route server knows them


# (the client's path, the admin's, who is told of a group change)
CASES = [
    pytest.param(client_create, admin_create, everyone, id="group-create"),
    pytest.param(client_add, admin_add, everyone, id="add-members"),
    pytest.param(client_remove, admin_remove, members_and_removed, id="remove-members"),
    pytest.param(client_avatar, admin_avatar, nobody, id="avatar"),
    pytest.param(client_sign_info, admin_sign_info, nobody, id="sign-info"),
]


def without_origin(frame: Frame, origin: internal_pb2.Origin) -> tuple[int, bytes, object]:
    """The frame as every path must send it, having checked its origin."""
    command_id, message, key = frame
    assert isinstance(message, internal_pb2.RouteDeliver | internal_pb2.RouteProfileChange)
    assert message.origin == origin
    copy: Message = type(message)()
    copy.CopyFrom(message)
    copy.ClearField("origin")
    return command_id, copy.SerializeToString(deterministic=True), key


async def run(path: Path_, url: str) -> tuple[object, list[Frame], People]:
    async with node_on(url, url) as node:
        p = await people(node)
        node.frames.clear()
        result = await path(node, p)
        return result, list(node.frames), p


@pytest.mark.parametrize(("client", "admin", "told"), CASES)
async def test_a_client_and_an_admin_change_push_the_same(
    client: Path_, admin: Path_, told: Callable[[People], list[int]], engine: str, tmp_path: Path
) -> None:
    async with (
        database_url(engine, tmp_path, "client") as one,
        database_url(engine, tmp_path, "admin") as two,
    ):
        client_result, client_frames, p = await run(client, one)
        admin_result, admin_frames, _ = await run(admin, two)
    assert client_result == admin_result
    assert client_frames, "the change pushed nothing"
    assert [without_origin(f, ORIGIN) for f in client_frames] == [
        without_origin(f, ADMIN_ORIGIN) for f in admin_frames
    ]
    for command_id, message, _ in client_frames:
        if command_id == Cmd.ROUTE_DELIVER:
            assert isinstance(message, internal_pb2.RouteDeliver)
            assert message.command_id == Cmd.GROUP_CHANGE_MEMBER_NOTIFY
            notify = group_pb2.IMGroupChangeMemberNotify.FromString(message.body)
            # The requester's other devices hear too (only its connection is skipped).
            assert list(message.user_ids) == told(p) and notify.user_id == p.alice
        else:
            assert command_id == Cmd.ROUTE_PROFILE_CHANGE
            assert isinstance(message, internal_pb2.RouteProfileChange) and message.user_id == p.alice
