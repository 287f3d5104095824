"""Multi-device policy, kicks across gateways, presence and its notifications."""

from __future__ import annotations

import asyncio

from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2, login_pb2
from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient

WINDOWS, MAC = base_pb2.CLIENT_TYPE_WINDOWS, base_pb2.CLIENT_TYPE_MAC
IOS, ANDROID = base_pb2.CLIENT_TYPE_IOS, base_pb2.CLIENT_TYPE_ANDROID


async def test_same_class_login_kicks_and_closes_the_old_session_across_gateways(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    old = await cluster.client("frank", "msg-1", WINDOWS)
    phone = await cluster.client("frank", "msg-2", ANDROID)
    clients += [old, phone]
    new = await cluster.client("frank", "msg-2", MAC)  # desktop class again
    clients.append(new)
    kick = await old.next_push(Cmd.KICK_USER)
    assert (kick.user_id, kick.kick_reason) == (old.user_id, base_pb2.KICK_REASON_DUPLICATE_USER)
    await asyncio.wait_for(old.closed.wait(), 5)  # TeamTalk leaves it open; we close it
    # The mobile session is of the other class and stays.
    await asyncio.sleep(0.3)
    assert not phone.closed.is_set() and not phone.pushed(Cmd.KICK_USER)
    ack = await new.send_text(cluster.users["grace"], b"I am the new one")
    assert ack.msg_id > 0


async def test_mobile_kicks_the_desktop_session(cluster: Cluster, clients: list[TTClient]) -> None:
    phone = await cluster.client("grace", "msg-2", IOS)
    clients.append(phone)
    desktop = await cluster.client("grace", "msg-1", WINDOWS)
    clients.append(desktop)
    online = await phone.next_push(Cmd.PC_LOGIN_STATUS_NOTIFY)
    assert (online.user_id, online.login_stat) == (phone.user_id, base_pb2.USER_STATUS_ONLINE)
    res = await phone.call(Cmd.KICK_PC_CLIENT_REQ, login_pb2.IMKickPCClientReq(user_id=0))
    assert (res.user_id, res.result_code) == (phone.user_id, 0)
    kick = await desktop.next_push(Cmd.KICK_USER)
    assert kick.kick_reason == base_pb2.KICK_REASON_MOBILE_KICK
    await asyncio.wait_for(desktop.closed.wait(), 5)
    offline = await phone.next_push(Cmd.PC_LOGIN_STATUS_NOTIFY)
    assert offline.login_stat == base_pb2.USER_STATUS_OFFLINE


async def test_desktop_may_not_kick_desktops(cluster: Cluster, clients: list[TTClient]) -> None:
    desktop = await cluster.client("heidi", "msg-1", WINDOWS)
    clients.append(desktop)
    res = await desktop.call(Cmd.KICK_PC_CLIENT_REQ, login_pb2.IMKickPCClientReq(user_id=0))
    assert res.result_code != 0
    assert not desktop.closed.is_set()


async def test_status_changes_reach_watchers_across_gateways(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    watcher = await cluster.client("member01", "msg-1")
    bystander = await cluster.client("member02", "msg-1")
    clients += [watcher, bystander]
    target = cluster.users["member03"]
    res = await watcher.call(Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[target]))
    assert [(s.user_id, s.status) for s in res.user_stat_list] == [(target, base_pb2.USER_STATUS_OFFLINE)]
    member03 = await cluster.client("member03", "msg-2")
    notify = await watcher.next_push(Cmd.USER_STAT_NOTIFY)
    assert (notify.user_stat.user_id, notify.user_stat.status) == (target, base_pb2.USER_STATUS_ONLINE)
    res = await watcher.call(Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[target]))
    assert res.user_stat_list[0].status == base_pb2.USER_STATUS_ONLINE
    await member03.close()
    notify = await watcher.next_push(Cmd.USER_STAT_NOTIFY)
    assert (notify.user_stat.user_id, notify.user_stat.status) == (target, base_pb2.USER_STATUS_OFFLINE)
    # Only those who follow the user hear of it, not every online client.
    assert not bystander.pushed(Cmd.USER_STAT_NOTIFY)


async def test_logout_is_answered_and_closed(cluster: Cluster) -> None:
    client = await cluster.client("member04", "msg-2")
    res = await client.call(Cmd.LOGOUT_REQ, login_pb2.IMLogoutReq())
    assert res.result_code == 0
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()
