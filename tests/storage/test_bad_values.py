"""The store's errors are the error taxonomy, and every value a client can
send that does not fit is refused as InvalidArgument, on both engines: ids
of 0 or beyond their column, over-long text, bytes where text belongs (a
proto2 string that was not UTF-8), text no driver can send (a lone
surrogate, as a JSON string may hold). Nothing is written by a refused call,
and the store goes on working."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import (
    Conflict,
    Forbidden,
    ImError,
    InvalidArgument,
    NotFound,
    Unavailable,
    error_code,
)
from common.pb import internal_pb2
from db_proxy.storage.model import (
    SESSION_GROUP,
    SESSION_SINGLE,
    DepartmentCycle,
    DepartmentNotEmpty,
    DuplicateName,
    InvalidValue,
    NewMessage,
    NotMember,
    StoreError,
    UnknownDepartment,
    UnknownGroup,
    UnknownUser,
)
from db_proxy.storage.schema import DEFAULT_DEPARTMENT
from db_proxy.storage.sql import SqlStore, TransientError, UniqueViolation
from tests.storage.conftest import make_users, msg

NOT_UTF8 = b"caf\xe9"
SURROGATE = "\ud800"
U32_MAX = 2**32 - 1


@pytest.mark.parametrize(
    ("cls", "kind", "code"),
    [
        (InvalidValue, InvalidArgument, internal_pb2.ERR_BAD_REQUEST),
        (DepartmentCycle, InvalidArgument, internal_pb2.ERR_BAD_REQUEST),
        (DuplicateName, Conflict, internal_pb2.ERR_CONFLICT),
        (DepartmentNotEmpty, Conflict, internal_pb2.ERR_CONFLICT),
        (UniqueViolation, Conflict, internal_pb2.ERR_CONFLICT),
        (NotMember, Forbidden, internal_pb2.ERR_FORBIDDEN),
        (UnknownGroup, NotFound, internal_pb2.ERR_NOT_FOUND),
        (UnknownUser, NotFound, internal_pb2.ERR_NOT_FOUND),
        (UnknownDepartment, NotFound, internal_pb2.ERR_NOT_FOUND),
        (StoreError, Unavailable, internal_pb2.ERR_UNAVAILABLE),
        (TransientError, Unavailable, internal_pb2.ERR_UNAVAILABLE),
    ],
)
def test_each_storage_error_is_one_kind_of_the_taxonomy(
    cls: type[ImError], kind: type[ImError], code: int
) -> None:
    assert issubclass(cls, kind)
    assert error_code(cls("x")) == code
    others = {InvalidArgument, Conflict, Forbidden, NotFound, Unavailable} - {kind}
    # A refusal is never an Unavailable: nothing retries a name that is taken.
    assert [other.__name__ for other in others if issubclass(cls, other)] == []
    assert cls("x").server_fault == (kind is Unavailable)


async def test_reads_of_sessions_with_id_0_or_beyond_their_column(store: SqlStore) -> None:
    a, b = await make_users(store, 2)
    await store.save_messages([msg(a, b)])
    for user_id, session_type, peer_id in [
        (a, SESSION_SINGLE, 0),
        (0, SESSION_SINGLE, b),
        (a, SESSION_GROUP, 0),
        (a, SESSION_SINGLE, 2**32),
        (2**32, SESSION_SINGLE, b),
        (a, 3, b),  # no such session type
        (a, 0, b),
    ]:
        with pytest.raises(InvalidArgument):
            await store.message_list(user_id, session_type, peer_id, 0, 10)
        with pytest.raises(InvalidArgument):
            await store.latest_msg_id(user_id, session_type, peer_id)
        with pytest.raises(InvalidArgument):
            await store.messages_by_id(user_id, session_type, peer_id, [1])
    assert await store.latest_msg_id(b, SESSION_SINGLE, a) == 1
    assert await store.latest_msg_id(U32_MAX, SESSION_SINGLE, U32_MAX) == 0
    assert [m.msg_id for m in await store.messages_by_id(a, SESSION_SINGLE, b, [0, 1, 2**64, -1])] == [1]


async def test_messages_that_do_not_fit(store: SqlStore) -> None:
    a, b = await make_users(store, 2)
    for bad in [
        NewMessage(a, SESSION_SINGLE, 0, 1, b"to nobody", 1),
        NewMessage(0, SESSION_SINGLE, b, 1, b"from nobody", 1),
        NewMessage(a, SESSION_GROUP, 0, 0x11, b"to group 0", 1),
        NewMessage(a, SESSION_SINGLE, 2**32, 1, b"beyond the column", 1),
        NewMessage(a, SESSION_SINGLE, b, 2**32, b"msg type beyond the column", 1),
        NewMessage(a, SESSION_SINGLE, b, 1, b"client id beyond the column", 1, client_msg_id=2**64),
        NewMessage(a, SESSION_SINGLE, b, 1, "text, not bytes", 1),  # type: ignore[arg-type]
    ]:
        with pytest.raises(InvalidArgument):
            await store.save_messages([msg(a, b), bad])
    assert await store.latest_msg_id(a, SESSION_SINGLE, b) == 0


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("set_device_token", (1, 0x11, "t" * 256)),
        ("set_device_token", (1, 0x11, "t" * 300)),
        ("set_device_token", (1, 0x11, NOT_UTF8)),
        ("set_device_token", (1, 0x11, SURROGATE)),
        ("set_device_token", (1, 2**32, "t")),
        ("set_device_token", (1, -1, "t")),
        ("set_push_shield", (1, 2)),
        ("set_push_shield", (1, -1)),
        ("create_user", ("", "h")),
        ("create_user", (NOT_UTF8, "h")),
        ("create_user", (SURROGATE, "h")),
        ("create_user", ("n" * 65, "h")),
        ("create_department", (NOT_UTF8,)),
        ("create_department", ("d" + SURROGATE,)),
        ("create_department", ("d", 2**32)),
        ("create_department", ("d", 0, 2**31)),
        ("create_group", (NOT_UTF8, "", 1, 1, [])),
        ("create_group", ("g", SURROGATE, 1, 1, [])),
        ("create_group", ("g", "", 1, 0, [])),
        ("list_users", (0, 10, NOT_UTF8)),
        ("list_users", (0, 10, "s" * 256)),
    ],
)
async def test_values_that_do_not_fit_are_invalid_arguments(
    store: SqlStore, call: str, args: tuple[Any, ...]
) -> None:
    await make_users(store, 1)
    with pytest.raises(InvalidArgument):
        await getattr(store, call)(*args)
    assert await store.push_shield(1) == 0
    assert [u.name for u in (await store.list_users(0, 10))[0]] != []
    assert [d.name for d in await store.departments()] == [DEFAULT_DEPARTMENT]  # only the one migrate made
    assert await store.list_groups(0, 10) == ([], 0)


async def test_profile_values_that_do_not_fit(store: SqlStore) -> None:
    (a,) = await make_users(store, 1)
    refused: list[dict[str, object]] = [
        {"sign_info": NOT_UTF8},
        {"avatar": "a" * 256},
        {"nick": SURROGATE},
        {"gender": 2**31},
        {"department_id": -1},
        {"disabled": "yes"},
        {"shoe_size": 44},
    ]
    for fields in refused:
        with pytest.raises(InvalidArgument):
            await store.update_user_profile(a, **fields)
    (user,) = await store.users_by_id([a])
    assert (user.sign_info, user.avatar, user.nick, user.gender) == ("", "", "", 0)
    assert await store.update_user_profile(0, sign_info="nobody") is None


async def test_names_that_are_not_text_name_nobody(store: SqlStore) -> None:
    (a,) = await make_users(store, 1)
    (user,) = await store.users_by_id([a])
    assert await store.user_by_name(NOT_UTF8) is None  # type: ignore[arg-type]
    assert await store.user_by_name(SURROGATE) is None
    assert await store.users_by_name([NOT_UTF8, SURROGATE, user.name]) == [user]  # type: ignore[list-item]


async def test_the_drivers_own_refusals_are_invalid_arguments(store: SqlStore) -> None:
    """Past the store's checks (raw statements), what the engine or its
    driver refuses is still InvalidArgument, and the connection lives on."""
    with pytest.raises(InvalidArgument):
        async with store.db.reading() as tx:
            await tx.fetchall("SELECT ?", (SURROGATE,))
    with pytest.raises(InvalidArgument):
        async with store.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO devices (user_id, client_type, token, updated) VALUES (?, ?, ?, ?)",
                (1, 2**64, "t", 0),
            )
    if store.engine == "mysql":  # SQLite does not hold text to its declared length
        with pytest.raises(InvalidArgument):
            async with store.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO devices (user_id, client_type, token, updated) VALUES (?, ?, ?, ?)",
                    (1, 1, "t" * 256, 0),
                )
    await store.set_device_token(1, 1, "t")
    async with store.db.reading() as tx:
        assert await tx.fetchall("SELECT user_id, client_type, token FROM devices") == [(1, 1, "t")]
