"""Every client command, with hostile but well-formed field values, against a
db_proxy that answers or refuses: each request gets its reply (or, where
TeamTalk's protocol has none, nothing), and nothing is logged at ERROR or
with a traceback.

Field values lean on what broke servers before: ids of 0 and 2**32-1,
strings of hundreds of characters, strings that are not UTF-8.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.commands import MESSAGE_OF, Cmd
from common.errors import Conflict, Forbidden, InvalidArgument, NotFound, Overloaded, Unavailable
from common.pb import login_pb2
from msg_server.handlers import CLIENT_COMMANDS
from tests.protocol.fakes import FakeRoute, feed, logged_in, make, settle
from tests.support.ttclient import length_delimited

UINT32_MAX = 2**32 - 1
COMMANDS = sorted(entry.command for entry in CLIENT_COMMANDS)
# A stored message is acked; a refused one is not (IMMsgDataAck cannot say "refused").
MAYBE_ANSWERED = {Cmd.MSG_DATA}

REFUSALS = st.sampled_from(
    [
        InvalidArgument("bad"),
        NotFound("gone"),
        Conflict("clash"),
        Forbidden("no"),
        Unavailable("down"),
        Overloaded("full"),
    ]
)

_INTS = {
    FieldDescriptor.TYPE_UINT32: UINT32_MAX,
    FieldDescriptor.TYPE_UINT64: 2**64 - 1,
}


def ints(top: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([0, 1, top]), st.integers(0, top))


def not_utf8() -> st.SearchStrategy[bytes]:
    def invalid(b: bytes) -> bool:
        try:
            b.decode()
        except UnicodeDecodeError:
            return True
        return False

    return st.one_of(st.just(b"\xff"), st.binary(min_size=1, max_size=12).filter(invalid))


def strings() -> st.SearchStrategy[str | bytes]:
    return st.one_of(st.text(max_size=8), st.sampled_from(["", "x" * 65, "y" * 256, "z" * 300]), not_utf8())


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _INTS:
        return ints(_INTS[field.type])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if field.type == FieldDescriptor.TYPE_STRING:
        return strings()
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([v.number for v in field.enum_type.values])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    raise AssertionError(f"no strategy for field {field.full_name}")


@st.composite
def bodies(draw: st.DrawFn, descriptor: Any) -> bytes:  # a Descriptor (stubs name two kinds)
    """A well-formed body of ``descriptor``'s message (required fields all there)."""
    msg = message_factory.GetMessageClass(descriptor)()
    raw: dict[str, bytes] = {}
    for field in descriptor.fields:
        if not field.is_required and not field.is_repeated and draw(st.booleans()):
            continue  # an optional field left out
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            count = draw(st.integers(0, 3)) if field.is_repeated else 1
            for _ in range(count):
                child = field.message_type
                body = draw(bodies(child))
                target = getattr(msg, field.name).add() if field.is_repeated else getattr(msg, field.name)
                target.ParseFromString(body)
                if not field.is_repeated:
                    target.SetInParent()
        elif field.is_repeated:
            getattr(msg, field.name).extend(draw(st.lists(scalar(field), max_size=4)))
        else:
            value = draw(scalar(field))
            if isinstance(value, bytes) and field.type == FieldDescriptor.TYPE_STRING:
                raw[field.name] = value  # protobuf will not set it: appended to the body below
                setattr(msg, field.name, "")  # still there, for a required field
            else:
                setattr(msg, field.name, value)
    body = msg.SerializeToString()
    for name, value in raw.items():
        # The last value of a field on the wire wins: this one.
        body += length_delimited(descriptor.fields_by_name[name].number, value)
    return body


@st.composite
def requests(draw: st.DrawFn) -> tuple[int, bytes, Exception | None, bool]:
    command = draw(st.sampled_from(COMMANDS))
    body = draw(bodies(MESSAGE_OF[command].DESCRIPTOR))
    db_refuses = draw(st.one_of(st.none(), REFUSALS))
    route_up = draw(st.booleans())
    return command, body, db_refuses, route_up


def unfit_for_storage(req: Message) -> list[str]:
    """What db_proxy should never be asked with: text that is not UTF-8, an id of 0."""
    wrong = []
    for field, value in req.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING and not isinstance(value, str):
            wrong.append(f"{field.name} is not UTF-8")
        if field.name in ("session_id", "group_id") and value == 0:
            wrong.append(f"{field.name} is 0")
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            wrong += unfit_for_storage(value)
    return wrong


def hostile_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=requests())
def test_every_command_gets_its_reply_or_its_documented_silence(
    case: tuple[int, bytes, Exception | None, bool], caplog: pytest.LogCaptureFixture
) -> None:
    command, body, db_refuses, route_up = case
    caplog.clear()

    async def run() -> list[int]:
        gateway, conn, transport, fake = await logged_in(max_pending_requests=8)
        if db_refuses is not None:
            for entry in CLIENT_COMMANDS:
                fake.answers[entry.command] = db_refuses
            fake.answers[Cmd.DB_SAVE_MSG_REQ] = db_refuses
        if route_up:
            route = FakeRoute()
            route.error = None
            gateway.route_call = route  # type: ignore[method-assign,assignment]
        feed(conn, command, body, seq=77)
        await settle()
        for _, req in fake.requests:
            assert unfit_for_storage(req) == [], req
        # Each reply decodes as its message, required fields and all.
        return [f.command_id for f, _ in transport.frames() if f.seq_num == 77]

    answered = asyncio.run(run())
    entry = CLIENT_COMMANDS.get(command)
    assert entry is not None
    if not entry.reply_command:
        assert answered == []
    elif command in MAYBE_ANSWERED:
        assert answered in ([], [entry.reply_command])
    else:
        assert answered == [entry.reply_command]
    assert hostile_logs(caplog) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(login_pb2.IMLoginReq.DESCRIPTOR), db_refuses=st.one_of(st.none(), REFUSALS))
def test_every_login_gets_an_answer_and_a_refusal_closes(
    body: bytes, db_refuses: Exception | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()

    async def run() -> tuple[list[Any], bool]:
        _, conn, transport, fake = make()
        fake.password = "right"
        if db_refuses is not None:
            fake.answers[Cmd.DB_LOGIN_REQ] = db_refuses
        feed(conn, Cmd.LOGIN_REQ, body, seq=5)
        await settle()
        return [(f.command_id, f.seq_num, m.result_code) for f, m in transport.frames()], transport.closed

    frames, closed = asyncio.run(run())
    [(command, seq, code)] = frames
    assert (command, seq) == (Cmd.LOGIN_RES, 5)
    assert closed == (code != 0)
    assert hostile_logs(caplog) == []
