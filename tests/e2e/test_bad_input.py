"""Hostile client input over real sockets: each request gets its error reply
at once, the connection stays usable, and no server logs a traceback (the
conftest checks every server log after each test)."""

from __future__ import annotations

import asyncio

from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2, group_pb2, login_pb2, message_pb2
from db_proxy.passwords import md5_hex
from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient, with_raw_field

NOT_UTF8 = b"\xff\xfe bad"
QUICK = 5.0  # a reply, not a timeout: well under the client's own 15 s login timeout


async def test_reads_of_session_zero_get_empty_replies(cluster: Cluster, clients: list[TTClient]) -> None:
    client = await cluster.client("member40", "msg-1")
    clients.append(client)
    listed = await client.call(
        Cmd.MSG_LIST_REQ,
        message_pb2.IMGetMsgListReq(
            user_id=0,
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            session_id=0,
            msg_id_begin=0,
            msg_cnt=20,
        ),
        QUICK,
    )
    assert (listed.user_id, listed.session_id, list(listed.msg_list)) == (client.user_id, 0, [])
    latest = await client.call(
        Cmd.LATEST_MSG_ID_REQ,
        message_pb2.IMGetLatestMsgIdReq(user_id=0, session_type=base_pb2.SESSION_TYPE_GROUP, session_id=0),
        QUICK,
    )
    assert (latest.session_type, latest.session_id, latest.latest_msg_id) == (
        base_pb2.SESSION_TYPE_GROUP,
        0,
        0,
    )
    # Many of them cost the server nothing worth logging, and it still serves.
    for _ in range(200):
        client.send(
            Cmd.LATEST_MSG_ID_REQ,
            message_pb2.IMGetLatestMsgIdReq(
                user_id=0, session_type=base_pb2.SESSION_TYPE_SINGLE, session_id=0
            ),
            seq=0,
        )
    assert (await client.unread()).user_id == client.user_id


async def test_over_long_and_non_utf8_profile_fields_are_refused(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    client = await cluster.client("member41", "msg-2")
    clients.append(client)
    token = await client.call(
        Cmd.DEVICE_TOKEN_REQ,
        login_pb2.IMDeviceTokenReq(
            user_id=0, device_token="t" * 300, client_type=base_pb2.CLIENT_TYPE_WINDOWS
        ),
        QUICK,
    )
    assert token.user_id == client.user_id
    for command, message, field in [
        (Cmd.CHANGE_SIGN_INFO_REQ, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info=""), "sign_info"),
        (Cmd.CHANGE_AVATAR_REQ, buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url=""), "avatar_url"),
    ]:
        res = await client.call(command, with_raw_field(message, field, NOT_UTF8), QUICK)
        assert res.result_code != 0, command
    created = await client.call(
        Cmd.GROUP_CREATE_REQ,
        with_raw_field(
            group_pb2.IMGroupCreateReq(
                user_id=0,
                group_type=base_pb2.GROUP_TYPE_TMP,
                group_name="",
                group_avatar="",
                member_id_list=[client.user_id],
            ),
            "group_name",
            NOT_UTF8,
        ),
        QUICK,
    )
    assert created.result_code != 0 and created.group_id == 0
    assert not client.closed.is_set()
    # Nothing was stored: the profile is what it was.
    info = await client.call(
        Cmd.USERS_INFO_REQ, buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[client.user_id])
    )
    assert (info.user_info_list[0].sign_info, info.user_info_list[0].avatar_url) == ("", "")


async def test_login_name_not_utf8_is_refused_at_once_and_closed(cluster: Cluster) -> None:
    client = TTClient()
    await client.connect("127.0.0.1", cluster.gateway_port("msg-1"))
    try:
        req = login_pb2.IMLoginReq(
            user_name="",
            password=md5_hex("secret"),
            online_status=base_pb2.USER_STATUS_ONLINE,
            client_type=base_pb2.CLIENT_TYPE_WINDOWS,
        )
        command, res = await client.request(Cmd.LOGIN_REQ, with_raw_field(req, "user_name", NOT_UTF8), QUICK)
        assert command == Cmd.LOGIN_RES and isinstance(res, login_pb2.IMLoginRes)
        assert res.result_code == base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED
        await asyncio.wait_for(client.closed.wait(), QUICK)
    finally:
        await client.close()
