"""Groups over two gateways: membership, history from joining, fan-out, unread."""

from __future__ import annotations

import asyncio

from common.commands import Cmd
from common.pb import base_pb2, group_pb2, message_pb2
from tests.e2e.conftest import CROWD, Cluster
from tests.support.ttclient import TTClient

ADD, DEL = base_pb2.GROUP_MODIFY_TYPE_ADD, base_pb2.GROUP_MODIFY_TYPE_DEL


async def create_group(
    client: TTClient,
    members: list[int],
    group_type: base_pb2.GroupType.ValueType = base_pb2.GROUP_TYPE_TMP,
    name: str = "team",
) -> int:
    res = await client.call(
        Cmd.GROUP_CREATE_REQ,
        group_pb2.IMGroupCreateReq(
            user_id=0, group_type=group_type, group_name=name, group_avatar="", member_id_list=members
        ),
    )
    assert res.result_code == 0, res
    assert set(res.user_id_list) == {client.user_id, *members}
    return int(res.group_id)


async def group_list(client: TTClient, group_id: int) -> list[base_pb2.MsgInfo]:
    res = await client.call(
        Cmd.MSG_LIST_REQ,
        message_pb2.IMGetMsgListReq(
            user_id=0,
            session_type=base_pb2.SESSION_TYPE_GROUP,
            session_id=group_id,
            msg_id_begin=0,
            msg_cnt=50,
        ),
    )
    return list(res.msg_list)


async def change(
    client: TTClient, group_id: int, kind: base_pb2.GroupModifyType.ValueType, members: list[int]
) -> group_pb2.IMGroupChangeMemberRsp:
    res: group_pb2.IMGroupChangeMemberRsp = await client.call(
        Cmd.GROUP_CHANGE_MEMBER_REQ,
        group_pb2.IMGroupChangeMemberReq(
            user_id=0, change_type=kind, group_id=group_id, member_id_list=members
        ),
    )
    return res


async def test_group_life_cycle_across_gateways(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    alice_phone = await cluster.client("alice", "msg-2", client_type=base_pb2.CLIENT_TYPE_ANDROID)
    bob = await cluster.client("bob", "msg-2")
    carol = await cluster.client("carol", "msg-1")
    clients += [alice, alice_phone, bob, carol]
    group_id = await create_group(alice, [bob.user_id, carol.user_id])
    for member in (bob, carol):
        created = await member.next_push(Cmd.GROUP_CHANGE_MEMBER_NOTIFY)
        assert (created.group_id, created.change_type) == (group_id, ADD)

    ack = await alice.send_group_text(group_id, b"\x01hello group")
    assert (ack.session_type, ack.session_id) == (2, group_id)
    for member in (bob, carol, alice_phone):
        push = await member.next_push(Cmd.MSG_DATA)
        assert (push.from_user_id, push.to_session_id, push.msg_id, push.msg_data) == (
            alice.user_id,
            group_id,
            ack.msg_id,
            b"\x01hello group",
        )
    await asyncio.sleep(0.2)
    assert not alice.pushed(Cmd.MSG_DATA)  # not echoed to the sending connection

    second = await bob.send_group_text(group_id, b"second")
    assert second.msg_id == ack.msg_id + 1
    unread = await carol.unread()
    [info] = [u for u in unread.unreadinfo_list if u.session_type == 2 and u.session_id == group_id]
    assert (info.unread_cnt, info.latest_msg_id, info.latest_msg_from_user_id) == (
        2,
        second.msg_id,
        bob.user_id,
    )

    # A member added later sees only what was said after it joined.
    dave = await cluster.client("dave", "msg-2")
    clients.append(dave)
    res = await change(alice, group_id, ADD, [dave.user_id])
    assert (res.result_code, list(res.chg_user_id_list)) == (0, [dave.user_id])
    assert set(res.cur_user_id_list) == {alice.user_id, bob.user_id, carol.user_id, dave.user_id}
    notify = await carol.next_push(Cmd.GROUP_CHANGE_MEMBER_NOTIFY)
    assert list(notify.chg_user_id_list) == [dave.user_id]
    assert await group_list(dave, group_id) == []
    third = await carol.send_group_text(group_id, b"welcome dave")
    assert [m.msg_id for m in await group_list(dave, group_id)] == [third.msg_id]

    # The creator removes carol: she hears of it, then nothing more.
    res = await change(alice, group_id, DEL, [carol.user_id])
    assert res.result_code == 0 and carol.user_id not in res.cur_user_id_list
    removed = await carol.next_push(Cmd.GROUP_CHANGE_MEMBER_NOTIFY)
    assert (removed.change_type, list(removed.chg_user_id_list)) == (DEL, [carol.user_id])
    carol.pushes.clear()
    fourth = await alice.send_group_text(group_id, b"after carol left")
    await dave.next_push(Cmd.MSG_DATA)
    await asyncio.sleep(0.3)
    assert not carol.pushed(Cmd.MSG_DATA)
    assert all(m.msg_id < fourth.msg_id for m in await group_list(carol, group_id)) is True
    assert await group_list(carol, group_id) == []  # non-members read nothing
    # ... and cannot send: no ack.
    try:
        await carol.request(Cmd.MSG_DATA, _group_msg(carol.user_id, group_id, b"let me in"), timeout=1.5)
    except TimeoutError:
        pass
    else:
        raise AssertionError("a non-member's group message was acked")

    # Info is given only for groups the client's version lacks, and only to members.
    info_res = await bob.call(
        Cmd.GROUP_INFO_REQ,
        group_pb2.IMGroupInfoListReq(
            user_id=0, group_version_list=[base_pb2.GroupVersionInfo(group_id=group_id, version=0)]
        ),
    )
    [group] = info_res.group_info_list
    assert (group.group_type, group.group_creator_id) == (2, alice.user_id)
    assert set(group.group_member_list) == {alice.user_id, bob.user_id, dave.user_id}
    up_to_date = await bob.call(
        Cmd.GROUP_INFO_REQ,
        group_pb2.IMGroupInfoListReq(
            user_id=0,
            group_version_list=[base_pb2.GroupVersionInfo(group_id=group_id, version=group.version)],
        ),
    )
    assert list(up_to_date.group_info_list) == []
    outsider = await carol.call(
        Cmd.GROUP_INFO_REQ,
        group_pb2.IMGroupInfoListReq(
            user_id=0, group_version_list=[base_pb2.GroupVersionInfo(group_id=group_id, version=0)]
        ),
    )
    assert list(outsider.group_info_list) == []


def _group_msg(sender: int, group_id: int, data: bytes) -> message_pb2.IMMsgData:
    return message_pb2.IMMsgData(
        from_user_id=sender,
        to_session_id=group_id,
        msg_id=0,
        create_time=0,
        msg_type=base_pb2.MSG_TYPE_GROUP_TEXT,
        msg_data=data,
    )


async def test_permissions_normal_list_and_shield(cluster: Cluster, clients: list[TTClient]) -> None:
    erin = await cluster.client("erin", "msg-1")
    frank = await cluster.client("frank", "msg-2")
    grace = await cluster.client("grace", "msg-1")
    clients += [erin, frank, grace]
    normal = await create_group(
        erin, [frank.user_id], group_type=base_pb2.GROUP_TYPE_NORMAL, name="department"
    )
    temp = await create_group(erin, [frank.user_id], group_type=base_pb2.GROUP_TYPE_TMP, name="chat")
    listed = await frank.call(Cmd.NORMAL_GROUP_LIST_REQ, group_pb2.IMNormalGroupListReq(user_id=0))
    ids = {v.group_id for v in listed.group_version_list}
    assert normal in ids and temp not in ids
    # Only the creator adds to a normal group; any member adds to a temporary one.
    assert (await change(frank, normal, ADD, [grace.user_id])).result_code != 0
    assert (await change(frank, temp, ADD, [grace.user_id])).result_code == 0
    # A member may remove itself but not others.
    assert (await change(frank, temp, DEL, [erin.user_id])).result_code != 0
    assert (await change(grace, temp, DEL, [grace.user_id])).result_code == 0
    # Outsiders change nothing.
    assert (await change(grace, normal, ADD, [grace.user_id])).result_code != 0
    shield = await frank.call(
        Cmd.GROUP_SHIELD_REQ, group_pb2.IMGroupShieldReq(user_id=0, group_id=normal, shield_status=1)
    )
    assert shield.result_code == 0
    info = await frank.call(
        Cmd.GROUP_INFO_REQ,
        group_pb2.IMGroupInfoListReq(
            user_id=0, group_version_list=[base_pb2.GroupVersionInfo(group_id=normal, version=0)]
        ),
    )
    assert info.group_info_list[0].shield_status == 1
    not_member = await grace.call(
        Cmd.GROUP_SHIELD_REQ, group_pb2.IMGroupShieldReq(user_id=0, group_id=normal, shield_status=1)
    )
    assert not_member.result_code != 0


async def test_fifty_members_over_two_gateways(cluster: Cluster, clients: list[TTClient]) -> None:
    members = [await cluster.client(name, "msg-1" if i % 2 else "msg-2") for i, name in enumerate(CROWD)]
    clients += members
    owner, rest = members[0], members[1:]
    group_id = await create_group(owner, [m.user_id for m in rest], name="fifty")
    acks = [await owner.send_group_text(group_id, f"to all {i}".encode()) for i in range(3)]
    for member in rest:
        got = [await member.next_push(Cmd.MSG_DATA) for _ in acks]
        assert [g.msg_id for g in got] == [a.msg_id for a in acks]  # in id order, once each
    await asyncio.sleep(0.3)
    assert all(not m.pushed(Cmd.MSG_DATA) for m in members)  # no duplicates came after
    unread = await rest[-1].unread()
    [info] = [u for u in unread.unreadinfo_list if u.session_id == group_id and u.session_type == 2]
    assert info.unread_cnt == 3
