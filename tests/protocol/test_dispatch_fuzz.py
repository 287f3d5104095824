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
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.commands import MESSAGE_OF, Cmd
from common.errors import Conflict, Forbidden, InvalidArgument, NotFound, Overloaded, Unavailable
from common.pb import login_pb2
from msg_server.handlers import CLIENT_COMMANDS
from tests.protocol.fakes import FakeRoute, feed, logged_in, make, settle
from tests.support.hostile import bodies

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
