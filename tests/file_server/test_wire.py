"""Golden bytes of every file-transfer command (0x0501-0x050C), written by
hand from the field numbers and wire types of TeamTalk's IM.File.proto.

Each body is spelled out byte by byte (tag = field << 3 | wire type; 0
varint, 2 length-delimited), not produced by an encoder: a renumbered field,
a changed type or a message bound to the wrong command breaks these.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from common.codec import FrameDecoder, encode_frame
from common.commands import Cmd, decode_body
from common.pb import base_pb2, file_pb2

T1 = b"\x74\x31"  # "t1", a task id
A_TXT = b"\x61\x2e\x74\x78\x74"  # "a.txt"
IP = b"\x31\x2e\x32\x2e\x33\x2e\x34"  # "1.2.3.4"
# IpAddr{ip="1.2.3.4" (1: 0x0a, 7 bytes), port=8600 (2: 0x10, varint 0x98 0x43)}: 12 bytes
IP_ADDR = bytes([0x0A, 0x07]) + IP + bytes([0x10, 0x98, 0x43])


def ip() -> base_pb2.IpAddr:
    return base_pb2.IpAddr(ip="1.2.3.4", port=8600)


CASES: list[tuple[int, Message, bytes]] = [
    (
        Cmd.FILE_LOGIN_REQ,  # user_id=11, task_id="t1", file_role=CLIENT_REALTIME_RECVER (2)
        file_pb2.IMFileLoginReq(user_id=11, task_id="t1", file_role=base_pb2.CLIENT_REALTIME_RECVER),
        bytes([0x08, 0x0B, 0x12, 0x02]) + T1 + bytes([0x18, 0x02]),
    ),
    (
        Cmd.FILE_LOGIN_RES,  # result_code=4, task_id="t1"
        file_pb2.IMFileLoginRsp(result_code=4, task_id="t1"),
        bytes([0x08, 0x04, 0x12, 0x02]) + T1,
    ),
    (
        Cmd.FILE_STATE,  # state=CLIENT_FILE_DONE (3), task_id="t1", user_id=12
        file_pb2.IMFileState(state=base_pb2.CLIENT_FILE_DONE, task_id="t1", user_id=12),
        bytes([0x08, 0x03, 0x12, 0x02]) + T1 + bytes([0x18, 0x0C]),
    ),
    (
        Cmd.FILE_PULL_DATA_REQ,  # task_id="t1", user_id=12, trans_mode=ONLINE, offset=32768, data_size=32768
        file_pb2.IMFilePullDataReq(
            task_id="t1", user_id=12, trans_mode=base_pb2.FILE_TYPE_ONLINE, offset=32768, data_size=32768
        ),
        bytes([0x0A, 0x02])
        + T1
        + bytes([0x10, 0x0C, 0x18, 0x01, 0x20, 0x80, 0x80, 0x02, 0x28, 0x80, 0x80, 0x02]),
    ),
    (
        Cmd.FILE_PULL_DATA_RES,  # result_code=0, task_id="t1", user_id=11, offset=300, file_data=00 ff
        file_pb2.IMFilePullDataRsp(
            result_code=0, task_id="t1", user_id=11, offset=300, file_data=b"\x00\xff"
        ),
        bytes([0x08, 0x00, 0x12, 0x02]) + T1 + bytes([0x18, 0x0B, 0x20, 0xAC, 0x02, 0x2A, 0x02, 0x00, 0xFF]),
    ),
    (
        Cmd.FILE_REQ,  # from=11, to=12, file_name="a.txt", file_size=1000, trans_mode=OFFLINE
        file_pb2.IMFileReq(
            from_user_id=11,
            to_user_id=12,
            file_name="a.txt",
            file_size=1000,
            trans_mode=base_pb2.FILE_TYPE_OFFLINE,
        ),
        bytes([0x08, 0x0B, 0x10, 0x0C, 0x1A, 0x05]) + A_TXT + bytes([0x20, 0xE8, 0x07, 0x28, 0x02]),
    ),
    (
        Cmd.FILE_RES,  # result_code=0, from=11, to=12, "a.txt", task_id="t1", [1.2.3.4:8600], ONLINE
        file_pb2.IMFileRsp(
            result_code=0,
            from_user_id=11,
            to_user_id=12,
            file_name="a.txt",
            task_id="t1",
            ip_addr_list=[ip()],
            trans_mode=base_pb2.FILE_TYPE_ONLINE,
        ),
        bytes([0x08, 0x00, 0x10, 0x0B, 0x18, 0x0C, 0x22, 0x05])
        + A_TXT
        + bytes([0x2A, 0x02])
        + T1
        + bytes([0x32, 0x0C])
        + IP_ADDR
        + bytes([0x38, 0x01]),
    ),
    (
        Cmd.FILE_NOTIFY,  # from=11, to=12, "a.txt", 1000, "t1", [ip], OFFLINE, offline_ready=1
        file_pb2.IMFileNotify(
            from_user_id=11,
            to_user_id=12,
            file_name="a.txt",
            file_size=1000,
            task_id="t1",
            ip_addr_list=[ip()],
            trans_mode=base_pb2.FILE_TYPE_OFFLINE,
            offline_ready=1,
        ),
        bytes([0x08, 0x0B, 0x10, 0x0C, 0x1A, 0x05])
        + A_TXT
        + bytes([0x20, 0xE8, 0x07, 0x2A, 0x02])
        + T1
        + bytes([0x32, 0x0C])
        + IP_ADDR
        + bytes([0x38, 0x02, 0x40, 0x01]),
    ),
    (
        Cmd.FILE_HAS_OFFLINE_REQ,  # user_id=12, attach_data="x" (field 20: tag 0xa2 0x01)
        file_pb2.IMFileHasOfflineReq(user_id=12, attach_data=b"x"),
        bytes([0x08, 0x0C, 0xA2, 0x01, 0x01, 0x78]),
    ),
    (
        Cmd.FILE_HAS_OFFLINE_RES,  # user_id=12, [OfflineFileInfo{11, "t1", "a.txt", 1000}], [ip]
        file_pb2.IMFileHasOfflineRsp(
            user_id=12,
            offline_file_list=[
                base_pb2.OfflineFileInfo(from_user_id=11, task_id="t1", file_name="a.txt", file_size=1000)
            ],
            ip_addr_list=[ip()],
        ),
        bytes([0x08, 0x0C, 0x12, 0x10, 0x08, 0x0B, 0x12, 0x02])
        + T1
        + bytes([0x1A, 0x05])
        + A_TXT
        + bytes([0x20, 0xE8, 0x07, 0x1A, 0x0C])
        + IP_ADDR,
    ),
    (
        Cmd.FILE_ADD_OFFLINE_REQ,  # from=11, to=12, task_id="t1", file_name="a.txt", file_size=1000
        file_pb2.IMFileAddOfflineReq(
            from_user_id=11, to_user_id=12, task_id="t1", file_name="a.txt", file_size=1000
        ),
        bytes([0x08, 0x0B, 0x10, 0x0C, 0x1A, 0x02])
        + T1
        + bytes([0x22, 0x05])
        + A_TXT
        + bytes([0x28, 0xE8, 0x07]),
    ),
    (
        Cmd.FILE_DEL_OFFLINE_REQ,  # from=11, to=12, task_id="t1"
        file_pb2.IMFileDelOfflineReq(from_user_id=11, to_user_id=12, task_id="t1"),
        bytes([0x08, 0x0B, 0x10, 0x0C, 0x1A, 0x02]) + T1,
    ),
]


def test_every_file_command_has_a_case() -> None:
    assert sorted(command for command, _, _ in CASES) == list(range(0x0501, 0x050D))


@pytest.mark.parametrize(("command", "message", "golden"), CASES, ids=[f"0x{c:04x}" for c, _, _ in CASES])
def test_golden_body(command: int, message: Message, golden: bytes) -> None:
    assert message.SerializeToString() == golden
    assert decode_body(command, golden) == message  # the command carries that message type


def test_golden_frame() -> None:
    """IMFileLoginReq as a whole frame: length 24, version 1, flag 0, service 5, command 0x0501, seq 3."""
    body = bytes([0x08, 0x0B, 0x12, 0x02]) + T1 + bytes([0x18, 0x02])
    frame = (
        bytes(
            [0x00, 0x00, 0x00, 0x18, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x05, 0x01, 0x00, 0x03, 0x00, 0x00]
        )
        + body
    )
    assert encode_frame(Cmd.FILE_LOGIN_REQ, body, 3) == frame
    decoder = FrameDecoder()
    decoder.feed(frame)
    decoded = decoder.next_frame()
    assert decoded is not None and (decoded.command_id, decoded.seq_num, decoded.body) == (0x0501, 3, body)
