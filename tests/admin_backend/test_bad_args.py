"""Admin calls with arguments that used to escape as a bug (a traceback and
ERR_INTERNAL): arguments that are not UTF-8, JSON nested too deep or with
integers of thousands of digits, text with a lone surrogate (valid JSON,
but no database takes it), ids as strings of thousands of digits or of
digits that are not ASCII. Each is ERR_BAD_REQUEST (or ERR_NOT_FOUND), and
the servers log no traceback."""

from __future__ import annotations

import logging

import pytest

from common.commands import Rpcs
from common.errors import ImError
from common.pb import internal_pb2
from tests.admin_backend.conftest import TIMEOUT, Harness, admin_error
from tests.db_proxy.conftest import with_raw

BAD, NOT_FOUND = internal_pb2.ERR_BAD_REQUEST, internal_pb2.ERR_NOT_FOUND
SURROGATE = "\ud800"
MANY_DIGITS = "9" * 5000


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def raw_call_error(h: Harness, call: internal_pb2.AdminCall) -> int:
    try:
        await h.db.call(Rpcs.ADMIN_CALL, call, TIMEOUT)
    except ImError as exc:
        return exc.code
    raise AssertionError(f"{call} was accepted")


async def test_calls_that_are_not_json_objects(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h = harness
    call = internal_pb2.AdminCall(method="users.list", args_json="{}")
    for bad in (
        with_raw(call, args_json=b"\xff{}"),
        with_raw(call, method=b"users.list\xff"),
        internal_pb2.AdminCall(method="users.list", args_json="[" * 100_000),
        internal_pb2.AdminCall(method="users.list", args_json='{"offset": ' + MANY_DIGITS + "}"),
    ):
        assert await raw_call_error(h, bad) == BAD
    assert tracebacks(caplog) == []


async def test_text_no_database_takes(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h = harness
    await h.user("alice")
    calls: list[tuple[str, dict[str, object]]] = [
        ("users.create", {"name": "a" + SURROGATE, "password": "x"}),
        ("users.create", {"name": "ok", "password": "x", "nick": SURROGATE}),
        ("users.create", {"name": "ok", "password": SURROGATE}),
        ("users.show", {"user": SURROGATE}),
        ("users.show", {"user": "n" * 65}),
        ("users.update", {"user": "alice", "fields": {"sign_info": SURROGATE}}),
        ("users.list", {"search": SURROGATE}),
        ("depts.create", {"name": SURROGATE}),
        ("groups.create", {"name": SURROGATE, "creator": "alice"}),
        ("send", {"from": "alice", "to_user": "alice", "text": "hi " + SURROGATE}),
    ]
    for method, args in calls:
        assert await h.error(method, **args) == BAD, (method, args)
    assert await h.store.user_by_name("ok") is None
    assert tracebacks(caplog) == []


async def test_ids_as_strings_of_many_or_strange_digits(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    for ref in (MANY_DIGITS, "²", "1" * 21):
        assert await h.error("groups.show", id=ref) == BAD
        assert await h.error("depts.delete", id=ref) == BAD
    assert await h.error("users.show", user="²") == NOT_FOUND  # a name nobody has
    assert await h.error("users.show", user=MANY_DIGITS) == BAD  # longer than any name
    assert await h.error("users.show", user=2**64) == NOT_FOUND
    imported = await h.call(
        "users.import", rows=[{"name": "imp", "password": "x", "department": MANY_DIGITS}]
    )
    assert (imported["created"], [s["name"] for s in imported["skipped"]]) == (0, ["imp"])
    for user_id in (MANY_DIGITS, "²", "12345678901"):
        code, _ = await admin_error(h.route, "kick", {"user_id": user_id})
        assert code == BAD
    assert tracebacks(caplog) == []
