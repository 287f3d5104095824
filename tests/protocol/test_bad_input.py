"""Bad client input gets the command's error reply at once, costs no db_proxy
round trip when the gateway can tell, and logs no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from common.commands import Cmd
from common.errors import Conflict, Forbidden, InvalidArgument, NotFound, Overloaded, Unavailable
from common.pb import base_pb2, buddy_pb2, group_pb2, login_pb2, message_pb2, other_pb2
from db_proxy.storage.schema import DEVICE_TOKEN_LIMIT, GROUP_TEXT_LIMITS, USER_TEXT_LIMITS
from msg_server.handlers import base, buddy, groups, session
from tests.protocol.fakes import feed, logged_in, login_req, make, settle
from tests.support.ttclient import with_raw_field

NOT_UTF8 = b"\xff\xfe not utf-8"
SINGLE = base_pb2.SESSION_TYPE_SINGLE


@pytest.fixture(autouse=True)
def fresh_log_throttles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees its own first warning (the throttles are gateway-wide)."""
    monkeypatch.setattr(base, "_THROTTLES", {})
    yield


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


def refused(command: str, kind: str) -> float:
    return (
        REGISTRY.get_sample_value("imcluster_gateway_refused_total", {"command": command, "kind": kind})
        or 0.0
    )


def test_gateway_limits_are_storages() -> None:
    assert USER_TEXT_LIMITS["name"] == session.USER_NAME_LIMIT
    assert session.DEVICE_TOKEN_LIMIT == DEVICE_TOKEN_LIMIT
    assert USER_TEXT_LIMITS["avatar"] == buddy.AVATAR_LIMIT
    assert USER_TEXT_LIMITS["sign_info"] == buddy.SIGN_INFO_LIMIT
    assert GROUP_TEXT_LIMITS["name"] == groups.GROUP_NAME_LIMIT
    assert GROUP_TEXT_LIMITS["avatar"] == groups.GROUP_AVATAR_LIMIT


async def test_msg_list_of_session_zero_gets_an_empty_reply_without_asking_db(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, conn, transport, fake = await logged_in()
    req = message_pb2.IMGetMsgListReq(
        user_id=0, session_type=SINGLE, session_id=0, msg_id_begin=5, msg_cnt=20, attach_data=b"mine"
    )
    feed(conn, Cmd.MSG_LIST_REQ, req, seq=4)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.MSG_LIST_RES, 4)
    assert (res.user_id, res.session_type, res.session_id, res.msg_id_begin, res.attach_data) == (
        7,
        SINGLE,
        0,
        5,
        b"mine",
    )
    assert list(res.msg_list) == []
    assert fake.requests == [] and not transport.closed
    no_tracebacks(caplog)


async def test_latest_msg_id_of_session_zero_gets_an_empty_reply(caplog: pytest.LogCaptureFixture) -> None:
    _, conn, transport, fake = await logged_in()
    req = message_pb2.IMGetLatestMsgIdReq(user_id=0, session_type=base_pb2.SESSION_TYPE_GROUP, session_id=0)
    feed(conn, Cmd.LATEST_MSG_ID_REQ, req, seq=5)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.LATEST_MSG_ID_RES, 5)
    assert (res.session_type, res.session_id, res.latest_msg_id) == (base_pb2.SESSION_TYPE_GROUP, 0, 0)
    assert fake.requests == []
    no_tracebacks(caplog)


async def test_over_long_device_token_is_answered_not_stored(caplog: pytest.LogCaptureFixture) -> None:
    _, conn, transport, fake = await logged_in()
    req = login_pb2.IMDeviceTokenReq(user_id=0, device_token="t" * 300, attach_data=b"a")
    feed(conn, Cmd.DEVICE_TOKEN_REQ, req, seq=6)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num, res.user_id, res.attach_data) == (
        Cmd.DEVICE_TOKEN_RES,
        6,
        7,
        b"a",
    )
    assert fake.requests == []
    no_tracebacks(caplog)


async def test_login_name_not_utf8_is_refused_at_once_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    gateway, conn, transport, fake = make()
    feed(conn, Cmd.LOGIN_REQ, with_raw_field(login_req(), "user_name", NOT_UTF8), seq=3)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.LOGIN_RES, 3)
    assert res.result_code == base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED
    assert transport.closed and not conn.logged_in and gateway.sessions == {}
    assert fake.requests == []
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("command", "message", "field"),
    [
        (Cmd.CHANGE_SIGN_INFO_REQ, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info=""), "sign_info"),
        (Cmd.CHANGE_AVATAR_REQ, buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url=""), "avatar_url"),
        (
            Cmd.GROUP_CREATE_REQ,
            group_pb2.IMGroupCreateReq(
                user_id=0,
                group_type=base_pb2.GROUP_TYPE_TMP,
                group_name="",
                group_avatar="",
                member_id_list=[8],
            ),
            "group_name",
        ),
        (
            Cmd.GROUP_CREATE_REQ,
            group_pb2.IMGroupCreateReq(
                user_id=0,
                group_type=base_pb2.GROUP_TYPE_TMP,
                group_name="g",
                group_avatar="",
                member_id_list=[8],
            ),
            "group_avatar",
        ),
    ],
)
async def test_text_not_utf8_gets_a_failed_result_code(
    command: int, message: Message, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, conn, transport, fake = await logged_in()
    feed(conn, command, with_raw_field(message, field, NOT_UTF8), seq=8)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (command + 1, 8)
    assert res.result_code != 0 and res.user_id == 7
    assert fake.requests == [] and not transport.closed
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (Cmd.CHANGE_SIGN_INFO_REQ, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info="s" * 256)),
        (Cmd.CHANGE_AVATAR_REQ, buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url="a" * 256)),
        (
            Cmd.GROUP_CREATE_REQ,
            group_pb2.IMGroupCreateReq(
                user_id=0, group_type=base_pb2.GROUP_TYPE_TMP, group_name="g" * 65, group_avatar=""
            ),
        ),
        (
            Cmd.GROUP_CREATE_REQ,
            group_pb2.IMGroupCreateReq(
                user_id=0,
                group_type=base_pb2.GROUP_TYPE_TMP,
                group_name="g",
                group_avatar="",
                member_id_list=[0],
            ),
        ),
        (
            Cmd.GROUP_CHANGE_MEMBER_REQ,
            group_pb2.IMGroupChangeMemberReq(
                user_id=0, change_type=base_pb2.GROUP_MODIFY_TYPE_ADD, group_id=0, member_id_list=[8]
            ),
        ),
        (
            Cmd.GROUP_CHANGE_MEMBER_REQ,
            group_pb2.IMGroupChangeMemberReq(
                user_id=0, change_type=base_pb2.GROUP_MODIFY_TYPE_DEL, group_id=3, member_id_list=[0]
            ),
        ),
        (Cmd.GROUP_SHIELD_REQ, group_pb2.IMGroupShieldReq(user_id=0, group_id=0, shield_status=1)),
        (Cmd.REMOVE_SESSION_REQ, buddy_pb2.IMRemoveSessionReq(user_id=0, session_type=SINGLE, session_id=0)),
    ],
)
async def test_over_long_text_and_ids_of_zero_get_a_failed_result_code(
    command: int, message: Message, caplog: pytest.LogCaptureFixture
) -> None:
    _, conn, transport, fake = await logged_in()
    feed(conn, command, message, seq=9)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num, res.result_code) == (command + 1, 9, base.FAILED)
    assert fake.requests == []
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("command", "message", "kind"),
    [
        (
            Cmd.MSG_DATA,
            message_pb2.IMMsgData(
                from_user_id=7,
                to_session_id=0,
                msg_id=1,
                create_time=0,
                msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
                msg_data=b"x",
            ),
            "msg_data",
        ),
        (
            Cmd.MSG_READ_ACK,
            message_pb2.IMMsgDataReadAck(user_id=0, session_id=0, msg_id=3, session_type=SINGLE),
            "msg_read_ack",
        ),
        (Cmd.P2P_CMD, other_pb2.IMP2PCmdMsg(from_user_id=0, to_user_id=0, cmd_msg_data="typing"), "p2p_cmd"),
    ],
)
async def test_refusals_the_protocol_cannot_answer_are_counted(
    command: int, message: Message, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, conn, transport, fake = await logged_in()
    before = refused(kind, "invalid_argument")
    feed(conn, command, message, seq=10)
    await settle()
    assert transport.frames() == [] and fake.requests == [] and not transport.closed
    assert refused(kind, "invalid_argument") == before + 1
    no_tracebacks(caplog)


async def test_a_flood_of_bad_requests_writes_a_line_not_a_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # request_burst: this is about refusals by db_proxy's answer, not by the rate limit.
    _, conn, transport, _ = await logged_in(max_pending_requests=10_000, request_burst=10_000)
    req = message_pb2.IMGetLatestMsgIdReq(user_id=0, session_type=SINGLE, session_id=0)
    for seq in range(1, 2001):
        feed(conn, Cmd.LATEST_MSG_ID_REQ, req, seq=seq)
    await settle()
    assert len(transport.frames()) == 2000
    lines = [r for r in caplog.records if "refused" in r.getMessage() and r.levelno >= logging.INFO]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    no_tracebacks(caplog)


@pytest.mark.parametrize("error", [InvalidArgument("no"), NotFound("gone"), Conflict("c"), Forbidden("f")])
async def test_callers_faults_from_db_proxy_are_info_without_traceback(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, conn, transport, fake = await logged_in()
    fake.answers[Cmd.DB_CHANGE_AVATAR_REQ] = error  # the gateway sends it with its origin
    feed(conn, Cmd.CHANGE_AVATAR_REQ, buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url="x"), seq=2)
    await settle()
    [(_, res)] = transport.frames()
    assert res.result_code == base.FAILED
    [line] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert line.levelno == logging.INFO and line.exc_info is None


@pytest.mark.parametrize("error", [Unavailable("db down"), Overloaded("queue full")])
async def test_server_side_failures_are_one_warning_a_second(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    _, conn, transport, fake = await logged_in(max_pending_requests=1000)
    fake.answers[Cmd.UNREAD_CNT_REQ] = error
    for seq in range(1, 101):
        feed(conn, Cmd.UNREAD_CNT_REQ, message_pb2.IMUnreadMsgCntReq(user_id=0, attach_data=b"q"), seq=seq)
    await settle()
    replies = transport.frames()
    assert [f.seq_num for f, _ in replies] == list(range(1, 101))
    assert all((r.user_id, r.total_cnt, r.attach_data) == (7, 0, b"q") for _, r in replies)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    no_tracebacks(caplog)


async def test_a_login_that_db_proxy_cannot_serve_is_refused_and_closed() -> None:
    _, conn, transport, fake = make()
    fake.answers[Cmd.DB_LOGIN_REQ] = Overloaded("too many logins waiting for a hash")
    feed(conn, Cmd.LOGIN_REQ, login_req())
    await settle()
    [(_, res)] = transport.frames()
    assert res.result_code == base_pb2.REFUSE_REASON_NO_DB_SERVER
    assert transport.closed


async def test_a_bug_gets_the_error_reply_and_one_traceback(caplog: pytest.LogCaptureFixture) -> None:
    _, conn, transport, fake = await logged_in()
    fake.answers[Cmd.MSG_LIST_REQ] = RuntimeError("a genuine bug")
    req = message_pb2.IMGetMsgListReq(
        user_id=0, session_type=SINGLE, session_id=8, msg_id_begin=0, msg_cnt=20
    )
    feed(conn, Cmd.MSG_LIST_REQ, req, seq=1)
    feed(conn, Cmd.MSG_LIST_REQ, req, seq=2)
    await settle()
    assert [(f.command_id, f.seq_num) for f, _ in transport.frames()] == [
        (Cmd.MSG_LIST_RES, 1),
        (Cmd.MSG_LIST_RES, 2),
    ]
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is not None and "a genuine bug" in str(error.exc_info[1])


async def test_login_on_a_logged_in_connection_is_refused_and_closed() -> None:
    gateway, conn, transport, fake = await logged_in()
    feed(conn, Cmd.LOGIN_REQ, login_req(), seq=2)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, res.result_code) == (Cmd.LOGIN_RES, base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED)
    assert fake.requests == [] and transport.closed
    await settle()
    assert gateway.sessions == {}
