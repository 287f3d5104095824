"""Every request field that reaches storage, at the values that used to make
db_proxy log a traceback and leave the client waiting (issue 7): ids of 0,
strings longer than their column, strings that are not UTF-8 (protobuf hands
those over as bytes). Each gets the command's own refusal: an ImError the
gateway turns into the command's reply, or the reply's result_code."""

from __future__ import annotations

import logging

import pytest

from common.commands import Rpcs
from common.delivery.memory import MemoryDeliveryLog
from common.errors import Bug, Forbidden, ImError, InvalidArgument, NotFound, Overloaded
from common.pb import base_pb2, buddy_pb2, group_pb2, internal_pb2, login_pb2, message_pb2
from db_proxy.handlers.replies import FAILED
from db_proxy.passwords import md5_hex
from db_proxy.push import LogAppender
from db_proxy.storage.model import NewMessage, SavedMessage
from db_proxy.workers import MessageWorkers
from tests.db_proxy.conftest import PASSWORD, DbProxy, from_gateway, with_raw

NOT_UTF8 = b"\xff\xfe caf\xe9"  # latin-1, as some clients send
SINGLE, GROUP = base_pb2.SESSION_TYPE_SINGLE, base_pb2.SESSION_TYPE_GROUP
U32_MAX = 2**32 - 1
ORIGIN = internal_pb2.Origin(gateway_id="test", conn_id=1)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_message_reads_of_session_0_are_invalid_arguments(
    db: DbProxy, caplog: pytest.LogCaptureFixture
) -> None:
    for session_type in (SINGLE, GROUP):
        for user_id, session_id in ((db.alice, 0), (0, db.bob)):
            with pytest.raises(InvalidArgument):
                await db.call(
                    Rpcs.MSG_LIST,
                    message_pb2.IMGetMsgListReq(
                        user_id=user_id,
                        session_type=session_type,
                        session_id=session_id,
                        msg_id_begin=0,
                        msg_cnt=20,
                    ),
                )
            with pytest.raises(InvalidArgument):
                await db.call(
                    Rpcs.LATEST_MSG_ID,
                    message_pb2.IMGetLatestMsgIdReq(
                        user_id=user_id, session_type=session_type, session_id=session_id
                    ),
                )
            with pytest.raises(InvalidArgument):
                await db.call(
                    Rpcs.MSG_BY_ID,
                    message_pb2.IMGetMsgByIdReq(
                        user_id=user_id, session_type=session_type, session_id=session_id, msg_id_list=[1]
                    ),
                )
    # The largest ids are fine: nothing there.
    res = await db.call(
        Rpcs.LATEST_MSG_ID,
        message_pb2.IMGetLatestMsgIdReq(user_id=U32_MAX, session_type=SINGLE, session_id=U32_MAX),
    )
    assert res.latest_msg_id == 0
    assert tracebacks(caplog) == []


async def test_device_tokens_that_do_not_fit_are_invalid_arguments(db: DbProxy) -> None:
    ios = base_pb2.CLIENT_TYPE_IOS
    await db.call(Rpcs.DEVICE_TOKEN, login_pb2.IMDeviceTokenReq(user_id=db.alice, device_token="t" * 255))
    for req in (
        login_pb2.IMDeviceTokenReq(user_id=db.alice, device_token="t" * 300, client_type=ios),
        login_pb2.IMDeviceTokenReq(user_id=db.alice, device_token="t" * 256, client_type=ios),
        with_raw(
            login_pb2.IMDeviceTokenReq(user_id=db.alice, device_token="", client_type=ios),
            device_token=NOT_UTF8,
        ),
    ):
        with pytest.raises(InvalidArgument):
            await db.call(Rpcs.DEVICE_TOKEN, req)


async def test_login_names_and_passwords_that_are_not_text_are_refused(db: DbProxy) -> None:
    refused = base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED
    good = internal_pb2.DbLoginReq(user_name="alice", password_md5=md5_hex(PASSWORD), peer="1.2.3.4")
    for req in (
        with_raw(good, user_name=NOT_UTF8),
        with_raw(good, user_name=b"alice\xff"),
        with_raw(good, password_md5=NOT_UTF8),
        with_raw(good, peer=NOT_UTF8, user_name=b"\xc3"),
        internal_pb2.DbLoginReq(user_name="a" * 65, password_md5=md5_hex(PASSWORD), peer="p"),
        internal_pb2.DbLoginReq(user_name="a" * 100_000, password_md5=md5_hex(PASSWORD), peer="p"),
        internal_pb2.DbLoginReq(user_name="alice", password_md5="f" * 100_000, peer="p"),
        internal_pb2.DbLoginReq(user_name="   ", password_md5=md5_hex(PASSWORD), peer="p"),
    ):
        res = await db.call(Rpcs.DB_LOGIN, req)
        assert res.result_code == refused, req
        assert not res.HasField("user_info")
    # A peer that is not UTF-8 is only logged: the login itself is fine.
    res = await db.call(Rpcs.DB_LOGIN, with_raw(good, peer=NOT_UTF8))
    assert (res.result_code, res.user_info.user_id) == (base_pb2.REFUSE_REASON_NONE, db.alice)


async def test_profile_changes_that_do_not_fit_fail_in_their_reply(db: DbProxy) -> None:
    sign = buddy_pb2.IMChangeSignInfoReq(user_id=db.alice, sign_info="", attach_data=b"a")
    for req in (
        with_raw(sign, sign_info=NOT_UTF8),
        buddy_pb2.IMChangeSignInfoReq(user_id=db.alice, sign_info="s" * 300),
    ):
        res = await db.call(Rpcs.DB_CHANGE_SIGN_INFO, from_gateway(internal_pb2.DbChangeSignInfoReq, req))
        assert (res.result_code, res.attach_data) == (FAILED, req.attach_data)
    avatar = buddy_pb2.IMChangeAvatarReq(user_id=db.alice, avatar_url="")
    for req2 in (
        with_raw(avatar, avatar_url=NOT_UTF8),
        buddy_pb2.IMChangeAvatarReq(user_id=db.alice, avatar_url="a" * 256),
    ):
        assert (
            await db.call(Rpcs.DB_CHANGE_AVATAR, from_gateway(internal_pb2.DbChangeAvatarReq, req2))
        ).result_code == FAILED
    # Nobody's profile changed; a user that is no more fails too.
    (alice,) = await db.store.users_by_id([db.alice])
    assert (alice.sign_info, alice.avatar) == ("", "")
    res = await db.call(
        Rpcs.DB_CHANGE_SIGN_INFO,
        from_gateway(
            internal_pb2.DbChangeSignInfoReq, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info="hi")
        ),
    )
    assert (res.result_code, res.sign_info) == (FAILED, "hi")
    res = await db.call(
        Rpcs.DB_CHANGE_SIGN_INFO,
        from_gateway(
            internal_pb2.DbChangeSignInfoReq,
            buddy_pb2.IMChangeSignInfoReq(user_id=db.alice, sign_info="s" * 255),
        ),
    )
    assert (res.result_code, res.sign_info) == (0, "s" * 255)


async def test_groups_that_do_not_fit_fail_in_their_reply(db: DbProxy) -> None:
    create = group_pb2.IMGroupCreateReq(
        user_id=db.alice,
        group_type=base_pb2.GROUP_TYPE_TMP,
        group_name="g",
        group_avatar="",
        member_id_list=[db.bob],
    )
    for req in (
        with_raw(create, group_name=NOT_UTF8),
        with_raw(create, group_avatar=NOT_UTF8),
        group_pb2.IMGroupCreateReq(
            user_id=db.alice, group_type=base_pb2.GROUP_TYPE_NORMAL, group_name="n" * 65, group_avatar=""
        ),
        group_pb2.IMGroupCreateReq(
            user_id=db.alice, group_type=base_pb2.GROUP_TYPE_NORMAL, group_name="n", group_avatar="a" * 256
        ),
        group_pb2.IMGroupCreateReq(
            user_id=0, group_type=base_pb2.GROUP_TYPE_NORMAL, group_name="nobody's", group_avatar=""
        ),
        group_pb2.IMGroupCreateReq(
            user_id=db.alice, group_type=base_pb2.GROUP_TYPE_NORMAL, group_name="  ", group_avatar=""
        ),
    ):
        res = await db.call(Rpcs.DB_GROUP_CREATE, from_gateway(internal_pb2.DbGroupCreateReq, req))
        assert (res.result_code, res.group_id) == (FAILED, 0), req
    assert [g for g, _ in await db.store.normal_groups_of(db.alice)] == [db.group]
    for group_id in (0, U32_MAX, db.group + 1):
        change = group_pb2.IMGroupChangeMemberReq(
            user_id=db.alice,
            change_type=base_pb2.GROUP_MODIFY_TYPE_ADD,
            group_id=group_id,
            member_id_list=[0],
        )
        assert (
            await db.call(
                Rpcs.DB_GROUP_CHANGE_MEMBER, from_gateway(internal_pb2.DbGroupChangeMemberReq, change)
            )
        ).result_code == FAILED
        shield = group_pb2.IMGroupShieldReq(user_id=db.alice, group_id=group_id, shield_status=1)
        assert (await db.call(Rpcs.GROUP_SHIELD, shield)).result_code == FAILED
    shield = group_pb2.IMGroupShieldReq(user_id=db.alice, group_id=db.group, shield_status=U32_MAX)
    assert (await db.call(Rpcs.GROUP_SHIELD, shield)).result_code == 0
    remove = buddy_pb2.IMRemoveSessionReq(user_id=db.alice, session_type=GROUP, session_id=0)
    assert (await db.call(Rpcs.REMOVE_SESSION, remove)).result_code == FAILED


async def test_messages_to_nobody_are_refused_with_their_reason(db: DbProxy) -> None:
    origin = internal_pb2.Origin(gateway_id="gw", conn_id=1)

    def save(session_type: base_pb2.SessionType.ValueType, to: int) -> internal_pb2.DbSaveMsgReq:
        msg_type = base_pb2.MSG_TYPE_SINGLE_TEXT if session_type == SINGLE else base_pb2.MSG_TYPE_GROUP_TEXT
        msg = message_pb2.IMMsgData(
            from_user_id=db.bob, to_session_id=to, msg_id=1, create_time=0, msg_type=msg_type, msg_data=b"x"
        )
        return internal_pb2.DbSaveMsgReq(msg=msg, session_type=session_type, origin=origin)

    for req, refusal in (
        (save(SINGLE, 0), InvalidArgument),
        (save(GROUP, 0), InvalidArgument),
        (save(SINGLE, U32_MAX), NotFound),
        (save(GROUP, U32_MAX), Forbidden),
    ):
        with pytest.raises(refusal):
            await db.call(Rpcs.DB_SAVE_MSG, req)
    mismatched = save(SINGLE, db.alice)
    mismatched.session_type = GROUP
    with pytest.raises(InvalidArgument):
        await db.call(Rpcs.DB_SAVE_MSG, mismatched)
    # An origin whose gateway id is not UTF-8 is stored and pushed all the same.
    res = await db.call(Rpcs.DB_SAVE_MSG, with_raw(save(GROUP, db.group), origin=b"\x0a\x01\xff\x10\x01"))
    assert res.msg_id == 1
    assert [p.user_ids for p in await db.pushes()] == [[db.alice, db.bob]]


async def test_a_failure_while_storing_that_is_no_refusal_is_a_bug_logged_once(
    db: DbProxy, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(batch: list[NewMessage]) -> list[SavedMessage]:
        raise KeyError("a bug in the store")

    monkeypatch.setattr(db.store, "save_messages", broken)
    message = NewMessage(db.alice, 1, db.bob, 1, b"x", 1)
    with pytest.raises(Bug):
        await db.workers.save(message, ORIGIN)
    logged = tracebacks(caplog)
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], KeyError)


async def test_a_refusal_while_storing_is_passed_on_as_it_is(
    db: DbProxy, caplog: pytest.LogCaptureFixture
) -> None:
    outsider = await db.store.create_user("outsider", "h")
    message = NewMessage(outsider, 2, db.group, base_pb2.MSG_TYPE_GROUP_TEXT, b"x", 1)
    with pytest.raises(Forbidden):
        await db.workers.save(message, ORIGIN)
    assert tracebacks(caplog) == []


async def test_a_full_queue_is_overloaded(db: DbProxy) -> None:
    idle = MessageWorkers(
        db.store, LogAppender(MemoryDeliveryLog(1)), workers=1, queue_size=1, batch_size=1
    )  # not started
    first = idle.save(NewMessage(db.alice, 1, db.bob, 1, b"x", 1), ORIGIN)
    with pytest.raises(Overloaded):
        idle.save(NewMessage(db.alice, 1, db.bob, 1, b"y", 1), ORIGIN)
    with pytest.raises(Overloaded):
        idle.run_ordered((1, db.alice, db.bob), db.store.ping)
    first.cancel()
    assert issubclass(Overloaded, ImError) and Overloaded.code == internal_pb2.ERR_OVERLOADED
