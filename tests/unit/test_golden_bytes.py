"""Golden bytes computed by hand from TeamTalk's field numbers and types.

A renumbered field or a changed type breaks these, which is the point: the
client protocol is a contract with existing TeamTalk clients.
"""

from __future__ import annotations

from common.pb import base_pb2, login_pb2, message_pb2


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def test_login_req() -> None:
    req = login_pb2.IMLoginReq(
        user_name="bob",
        password="ab",
        online_status=base_pb2.USER_STATUS_ONLINE,
        client_type=base_pb2.CLIENT_TYPE_ANDROID,
    )
    expected = field_bytes(1, b"bob") + field_bytes(2, b"ab") + field_varint(3, 1) + field_varint(4, 0x12)
    assert req.SerializeToString() == expected


def test_msg_data() -> None:
    msg = message_pb2.IMMsgData(
        from_user_id=7,
        to_session_id=300,
        msg_id=5,
        create_time=1_700_000_000,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=b"\xff\x00hi",
    )
    expected = (
        field_varint(1, 7)
        + field_varint(2, 300)
        + field_varint(3, 5)
        + field_varint(4, 1_700_000_000)
        + field_varint(5, 1)
        + field_bytes(6, b"\xff\x00hi")
    )
    assert msg.SerializeToString() == expected


def test_msg_data_attach_data_is_field_20() -> None:
    msg = message_pb2.IMMsgData(
        from_user_id=0,
        to_session_id=0,
        msg_id=0,
        create_time=0,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=b"",
        attach_data=b"z",
    )
    assert msg.SerializeToString().endswith(varint(20 << 3 | 2) + b"\x01z")


def test_login_res_with_user_info() -> None:
    info = base_pb2.UserInfo(
        user_id=9,
        user_gender=1,
        user_nick_name="N",
        avatar_url="",
        department_id=2,
        email="",
        user_real_name="",
        user_tel="",
        user_domain="",
        status=0,
    )
    res = login_pb2.IMLoginRes(
        server_time=100,
        result_code=base_pb2.REFUSE_REASON_NONE,
        online_status=base_pb2.USER_STATUS_ONLINE,
        user_info=info,
    )
    info_bytes = (
        field_varint(1, 9)
        + field_varint(2, 1)
        + field_bytes(3, b"N")
        + field_bytes(4, b"")
        + field_varint(5, 2)
        + field_bytes(6, b"")
        + field_bytes(7, b"")
        + field_bytes(8, b"")
        + field_bytes(9, b"")
        + field_varint(10, 0)
    )
    expected = field_varint(1, 100) + field_varint(2, 0) + field_varint(4, 1) + field_bytes(5, info_bytes)
    assert res.SerializeToString() == expected


def test_unread_cnt_rsp() -> None:
    res = message_pb2.IMUnreadMsgCntRsp(user_id=1, total_cnt=2)
    res.unreadinfo_list.add(
        session_id=3,
        session_type=1,
        unread_cnt=2,
        latest_msg_id=4,
        latest_msg_data=b"d",
        latest_msg_type=1,
        latest_msg_from_user_id=3,
    )
    info = (
        field_varint(1, 3)
        + field_varint(2, 1)
        + field_varint(3, 2)
        + field_varint(4, 4)
        + field_bytes(5, b"d")
        + field_varint(6, 1)
        + field_varint(7, 3)
    )
    assert res.SerializeToString() == field_varint(1, 1) + field_varint(2, 2) + field_bytes(3, info)


def test_msg_list_req() -> None:
    req = message_pb2.IMGetMsgListReq(
        user_id=1, session_type=base_pb2.SESSION_TYPE_SINGLE, session_id=2, msg_id_begin=0, msg_cnt=20
    )
    expected = (
        field_varint(1, 1)
        + field_varint(2, 1)
        + field_varint(3, 2)
        + field_varint(4, 0)
        + field_varint(5, 20)
    )
    assert req.SerializeToString() == expected
