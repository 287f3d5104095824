"""Directory, recent sessions, profile changes, devices, P2P and authorization."""

from __future__ import annotations

import asyncio
import time

from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2, login_pb2, message_pb2, other_pb2
from db_proxy.storage import open_store
from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient


async def recent(client: TTClient, since: int = 0) -> dict[tuple[int, int], base_pb2.ContactSessionInfo]:
    res = await client.call(
        Cmd.RECENT_SESSION_REQ, buddy_pb2.IMRecentContactSessionReq(user_id=0, latest_update_time=since)
    )
    return {(s.session_type, s.session_id): s for s in res.contact_session_list}


async def test_recent_sessions_update_both_sides_and_removal_hides_until_next_message(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    member05 = await cluster.client("member05", "msg-1")
    member06 = await cluster.client("member06", "msg-2")
    member05_phone = await cluster.client("member05", "msg-2", client_type=base_pb2.CLIENT_TYPE_ANDROID)
    clients += [member05, member06, member05_phone]
    ack = await member05.send_text(member06.user_id, b"hello session")
    mine = (await recent(member05))[(1, member06.user_id)]
    theirs = (await recent(member06))[(1, member05.user_id)]
    for s in (mine, theirs):
        assert (s.latest_msg_id, s.latest_msg_data, s.latest_msg_from_user_id) == (
            ack.msg_id,
            b"hello session",
            member05.user_id,
        )
        assert s.session_status == base_pb2.SESSION_STATUS_OK
    res = await member05.call(
        Cmd.REMOVE_SESSION_REQ,
        buddy_pb2.IMRemoveSessionReq(
            user_id=0, session_type=base_pb2.SESSION_TYPE_SINGLE, session_id=member06.user_id
        ),
    )
    assert (res.result_code, res.session_id) == (0, member06.user_id)
    notify = await member05_phone.next_push(Cmd.REMOVE_SESSION_NOTIFY)
    assert (notify.user_id, notify.session_id) == (member05.user_id, member06.user_id)
    incremental = await recent(member05, since=mine.updated_time - 1)
    assert incremental[(1, member06.user_id)].session_status == base_pb2.SESSION_STATUS_DELETE
    await member06.send_text(member05.user_id, b"back again")
    assert (await recent(member05))[(1, member06.user_id)].session_status == base_pb2.SESSION_STATUS_OK


async def test_users_info_all_users_and_departments_incremental(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    client = await cluster.client("member07", "msg-1")
    clients.append(client)
    info = await client.call(
        Cmd.USERS_INFO_REQ,
        buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[cluster.users["alice"], 999_999]),
    )
    assert [(u.user_id, u.user_nick_name) for u in info.user_info_list] == [(cluster.users["alice"], "Alice")]
    everyone = await client.call(Cmd.ALL_USER_REQ, buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0))
    assert {u.user_id for u in everyone.user_list} >= set(cluster.users.values())
    since = everyone.latest_update_time
    assert since < time.time()  # rows of the current second are asked for again next time
    nothing_new = await client.call(
        Cmd.ALL_USER_REQ, buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=since)
    )
    # Nothing changed: at most the rows of that last second come again.
    assert {u.user_id for u in nothing_new.user_list} <= {u.user_id for u in everyone.user_list}
    # A user and a department created now show up in the next incremental sync.
    store = open_store(cluster.database_url)
    await store.open()
    try:
        new_id = await store.create_user("newcomer", "scrypt$4$8$1$AA==$AA==", nick="New")
        dept_id = await store.create_department("Research")
    finally:
        await store.close()
    fresh = await client.call(Cmd.ALL_USER_REQ, buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=since))
    assert new_id in {u.user_id for u in fresh.user_list}
    assert len(fresh.user_list) <= len(nothing_new.user_list) + 1
    depts = await client.call(Cmd.DEPARTMENT_REQ, buddy_pb2.IMDepartmentReq(user_id=0, latest_update_time=0))
    assert (dept_id, "Research") in {(d.dept_id, d.dept_name) for d in depts.dept_list}
    # As TeamTalk's clients show and group them: the login name as real name,
    # a search key, a department the list has.
    listed = {d.dept_id for d in depts.dept_list if d.dept_status == base_pb2.DEPT_STATUS_OK}
    for u in [*everyone.user_list, *fresh.user_list]:
        assert u.user_real_name and u.user_domain and u.department_id in listed, u
    assert [(u.user_real_name, u.user_domain) for u in info.user_info_list] == [("alice", "alice")]


async def test_avatar_and_sign_changes_reach_watching_users(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    changer = await cluster.client("member08", "msg-1")
    other = await cluster.client("member09", "msg-2")
    clients += [changer, other]
    # Only a user who asked for the changer's status (it shows it) hears of a change.
    await other.call(Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[changer.user_id]))
    res = await changer.call(
        Cmd.CHANGE_AVATAR_REQ, buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url="http://x/a.png")
    )
    assert res.result_code == 0
    notify = await other.next_push(Cmd.AVATAR_CHANGED_NOTIFY)
    assert (notify.changed_user_id, notify.avatar_url) == (changer.user_id, "http://x/a.png")
    res = await changer.call(
        Cmd.CHANGE_SIGN_INFO_REQ, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info="busy")
    )
    assert res.result_code == 0
    notify = await other.next_push(Cmd.SIGN_INFO_CHANGED_NOTIFY)
    assert (notify.changed_user_id, notify.sign_info) == (changer.user_id, "busy")
    info = await other.call(
        Cmd.USERS_INFO_REQ, buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[changer.user_id])
    )
    assert (info.user_info_list[0].avatar_url, info.user_info_list[0].sign_info) == ("http://x/a.png", "busy")


async def test_device_token_and_push_shield(cluster: Cluster, clients: list[TTClient]) -> None:
    phone = await cluster.client("member10", "msg-1", client_type=base_pb2.CLIENT_TYPE_IOS)
    clients.append(phone)
    res = await phone.call(
        Cmd.DEVICE_TOKEN_REQ,
        login_pb2.IMDeviceTokenReq(
            user_id=0, device_token="apns-token", client_type=base_pb2.CLIENT_TYPE_IOS
        ),
    )
    assert res.user_id == phone.user_id
    query = await phone.call(Cmd.QUERY_PUSH_SHIELD_REQ, login_pb2.IMQueryPushShieldReq(user_id=0))
    assert (query.result_code, query.shield_status) == (0, 0)
    res = await phone.call(Cmd.PUSH_SHIELD_REQ, login_pb2.IMPushShieldReq(user_id=0, shield_status=1))
    assert (res.result_code, res.shield_status) == (0, 1)
    query = await phone.call(Cmd.QUERY_PUSH_SHIELD_REQ, login_pb2.IMQueryPushShieldReq(user_id=0))
    assert query.shield_status == 1


async def test_p2p_command_is_relayed_to_the_peer_across_gateways(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    typer = await cluster.client("member11", "msg-1")
    clients.append(typer)
    # As a client does, the typer follows its peer and types once it sees it
    # online. Sent right after the peer's login instead, the command races
    # msg-2's news of the session to the route server (over another link)
    # and, if it wins, is dropped as to a user offline (counted in
    # imcluster_route_pushes_dropped{reason="no_session"}): a P2P command is
    # ephemeral, like a typing notice to someone not (yet) online.
    peer_id = cluster.users["member12"]
    await typer.call(Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[peer_id]))
    peer = await cluster.client("member12", "msg-2")
    clients.append(peer)
    seen = await typer.next_push(Cmd.USER_STAT_NOTIFY)
    assert (seen.user_stat.user_id, seen.user_stat.status) == (peer_id, base_pb2.USER_STATUS_ONLINE)
    typer.send(
        Cmd.P2P_CMD, other_pb2.IMP2PCmdMsg(from_user_id=1, to_user_id=peer.user_id, cmd_msg_data="typing")
    )
    got = await peer.next_push(Cmd.P2P_CMD)
    assert (got.from_user_id, got.to_user_id, got.cmd_msg_data) == (typer.user_id, peer.user_id, "typing")


async def test_user_id_fields_in_requests_are_not_trusted(cluster: Cluster, clients: list[TTClient]) -> None:
    sender = await cluster.client("member13", "msg-1")
    victim_id = cluster.users["member14"]
    nosy = await cluster.client("member15", "msg-2")
    clients += [sender, nosy]
    await sender.send_text(victim_id, b"private")
    unread = await nosy.call(Cmd.UNREAD_CNT_REQ, message_pb2.IMUnreadMsgCntReq(user_id=victim_id))
    assert unread.user_id == nosy.user_id and unread.total_cnt == 0
    listed = await nosy.call(
        Cmd.MSG_LIST_REQ,
        message_pb2.IMGetMsgListReq(
            user_id=victim_id,
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            session_id=sender.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        ),
    )
    assert list(listed.msg_list) == []
    sessions = await nosy.call(
        Cmd.RECENT_SESSION_REQ, buddy_pb2.IMRecentContactSessionReq(user_id=victim_id, latest_update_time=0)
    )
    assert sessions.user_id == nosy.user_id and list(sessions.contact_session_list) == []


async def test_latest_id_and_messages_by_id(cluster: Cluster, clients: list[TTClient]) -> None:
    a = await cluster.client("member16", "msg-1")
    b = await cluster.client("member17", "msg-2")
    clients += [a, b]
    acks = [await a.send_text(b.user_id, f"n{i}".encode()) for i in range(3)]
    latest = await b.call(
        Cmd.LATEST_MSG_ID_REQ,
        message_pb2.IMGetLatestMsgIdReq(
            user_id=0, session_type=base_pb2.SESSION_TYPE_SINGLE, session_id=a.user_id
        ),
    )
    assert latest.latest_msg_id == acks[-1].msg_id
    by_id = await b.call(
        Cmd.MSG_BY_ID_REQ,
        message_pb2.IMGetMsgByIdReq(
            user_id=0,
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            session_id=a.user_id,
            msg_id_list=[acks[0].msg_id, acks[2].msg_id],
        ),
    )
    assert sorted((m.msg_id, m.msg_data) for m in by_id.msg_list) == [
        (acks[0].msg_id, b"n0"),
        (acks[2].msg_id, b"n2"),
    ]


async def test_message_to_an_unknown_user_is_not_acked(cluster: Cluster, clients: list[TTClient]) -> None:
    a = await cluster.client("member18", "msg-1")
    clients.append(a)
    try:
        await a.send_text(4_000_000, b"into the void", timeout=1.5)
    except TimeoutError:
        pass
    else:
        raise AssertionError("a message to a user that does not exist was acked")
    await asyncio.sleep(0)
