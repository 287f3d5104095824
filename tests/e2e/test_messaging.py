"""The core message path across real processes: discovery, login, 1:1
messages across gateways, offline pull, dedup, read acks, bad input."""

from __future__ import annotations

import asyncio
import struct

from common.codec import encode_frame
from common.commands import Cmd
from common.pb import base_pb2, message_pb2
from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient, discover


async def test_discovery_json_is_teamtalks(cluster: Cluster) -> None:
    reply = await asyncio.to_thread(discover, cluster.discovery_url)
    assert reply["code"] == 0
    assert isinstance(reply["port"], str)
    assert int(reply["port"]) in {cluster.gateway_port("msg-1"), cluster.gateway_port("msg-2")}
    assert set(reply) >= {"msg", "priorIP", "backupIP", "msfsPrior", "msfsBackup", "discovery"}


async def test_messages_both_ways_across_gateways(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    clients += [alice, bob]
    ids = []
    for i in range(5):
        ack = await alice.send_text(bob.user_id, b"\x00a2b" + bytes([i, 0xFF]), client_msg_id=100 + i)
        assert (ack.user_id, ack.session_id) == (alice.user_id, bob.user_id)
        ids.append(ack.msg_id)
        push = await bob.next_push(Cmd.MSG_DATA)
        assert (push.from_user_id, push.to_session_id, push.msg_id) == (
            alice.user_id,
            bob.user_id,
            ack.msg_id,
        )
        assert push.msg_data == b"\x00a2b" + bytes([i, 0xFF])
        assert push.create_time > 0
        reply = await bob.send_text(alice.user_id, f"re {i}".encode(), client_msg_id=200 + i)
        ids.append(reply.msg_id)
        back = await alice.next_push(Cmd.MSG_DATA)
        assert (back.from_user_id, back.msg_id, back.msg_data) == (
            bob.user_id,
            reply.msg_id,
            f"re {i}".encode(),
        )
    # One conversation, one id space, strictly increasing.
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[-1] - ids[0] == len(ids) - 1


async def test_offline_recipient_finds_the_message_on_login(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("alice", "msg-1")
    clients.append(alice)
    carol_id = cluster.users["carol"]
    ack = await alice.send_text(carol_id, b"while you were out", client_msg_id=7)
    carol = await cluster.client("carol")
    clients.append(carol)
    unread = await carol.unread()
    [info] = [u for u in unread.unreadinfo_list if u.session_id == alice.user_id]
    assert (info.unread_cnt, info.latest_msg_id, info.latest_msg_data) == (
        1,
        ack.msg_id,
        b"while you were out",
    )
    assert info.latest_msg_from_user_id == alice.user_id
    listed = await carol.msg_list(alice.user_id)
    assert next((m.msg_id, m.from_session_id, m.msg_data) for m in listed.msg_list) == (
        ack.msg_id,
        alice.user_id,
        b"while you were out",
    )
    # Reading clears the count; the reader's other device is told.
    carol_phone = await cluster.client("carol", client_type=base_pb2.CLIENT_TYPE_ANDROID)
    clients.append(carol_phone)
    carol.send(
        Cmd.MSG_READ_ACK,
        message_pb2.IMMsgDataReadAck(
            user_id=0, session_id=alice.user_id, msg_id=ack.msg_id, session_type=base_pb2.SESSION_TYPE_SINGLE
        ),
    )
    notify = await carol_phone.next_push(Cmd.MSG_READ_NOTIFY)
    assert (notify.user_id, notify.session_id, notify.msg_id) == (carol.user_id, alice.user_id, ack.msg_id)
    assert (await carol.unread()).total_cnt == 0


async def test_message_list_pages_newest_first(cluster: Cluster, clients: list[TTClient]) -> None:
    dave = await cluster.client("dave", "msg-1")
    clients.append(dave)
    erin_id = cluster.users["erin"]
    acked = [(await dave.send_text(erin_id, f"m{i}".encode())).msg_id for i in range(7)]
    first = await dave.msg_list(erin_id, begin=0, count=3)
    assert [m.msg_id for m in first.msg_list] == acked[::-1][:3]
    second = await dave.msg_list(erin_id, begin=first.msg_list[-1].msg_id - 1, count=3)
    assert [m.msg_id for m in second.msg_list] == acked[::-1][3:6]


async def test_resend_gets_the_original_ack_and_is_delivered_once(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("alice", "msg-2")
    erin = await cluster.client("erin", "msg-1")
    clients += [alice, erin]
    first = await alice.send_text(erin.user_id, b"once", client_msg_id=424242)
    again = await alice.send_text(erin.user_id, b"once", client_msg_id=424242)
    assert again.msg_id == first.msg_id
    await erin.next_push(Cmd.MSG_DATA)
    marker = await alice.send_text(erin.user_id, b"marker")
    push = await erin.next_push(Cmd.MSG_DATA)
    assert push.msg_id == marker.msg_id  # no second copy of "once" came in between
    listed = await erin.msg_list(alice.user_id, count=5)
    assert [m.msg_data for m in listed.msg_list].count(b"once") == 1


async def test_senders_other_device_gets_a_copy(cluster: Cluster, clients: list[TTClient]) -> None:
    bob_pc = await cluster.client("bob", "msg-1")
    bob_phone = await cluster.client("bob", "msg-2", client_type=base_pb2.CLIENT_TYPE_IOS)
    dave = await cluster.client("dave", "msg-2")
    clients += [bob_pc, bob_phone, dave]
    ack = await bob_pc.send_text(dave.user_id, b"copy me")
    copy = await bob_phone.next_push(Cmd.MSG_DATA)
    assert (copy.msg_id, copy.from_user_id, copy.msg_data) == (ack.msg_id, bob_pc.user_id, b"copy me")
    await dave.next_push(Cmd.MSG_DATA)
    await asyncio.sleep(0.2)
    assert not [c for c, _ in bob_pc.pushes if c == Cmd.MSG_DATA]  # not echoed to the sending connection


async def test_wrong_password_is_refused_with_code_6(cluster: Cluster) -> None:
    client = TTClient()
    await client.connect("127.0.0.1", cluster.gateway_port("msg-1"))
    res = await client.login("alice", "not the password")
    assert res.result_code == 6 and not res.HasField("user_info")
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()


async def test_command_before_login_closes_the_connection(cluster: Cluster) -> None:
    client = TTClient()
    await client.connect("127.0.0.1", cluster.gateway_port("msg-1"))
    client.send(Cmd.UNREAD_CNT_REQ, message_pb2.IMUnreadMsgCntReq(user_id=1))
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()


async def test_bad_input_closes_only_that_connection(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-1")
    clients += [alice, bob]
    # A header that declares 100 MB: refused at the header.
    alice.send_raw(struct.pack(">IHHHHHH", 100 << 20, 1, 0, 3, 0x0301, 1, 0))
    await asyncio.wait_for(alice.closed.wait(), 5)
    # A frame whose body is garbage.
    garbage = TTClient()
    await garbage.connect("127.0.0.1", cluster.gateway_port("msg-1"))
    garbage.send_raw(encode_frame(Cmd.LOGIN_REQ, b"\xff\xfe\xfd"))
    await asyncio.wait_for(garbage.closed.wait(), 5)
    await garbage.close()
    # Everyone else carries on.
    ack = await bob.send_text(cluster.users["carol"], b"still here")
    assert ack.msg_id > 0
    assert not cluster.local.dead()
