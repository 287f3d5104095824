"""Every gateway command of db_proxy, with hostile but well-formed requests,
on a real store: each either answers with its declared reply (one that
serialises: required fields set, text UTF-8) or refuses with an ImError
that is the caller's fault. Never another exception (TypeError, KeyError,
UnicodeDecodeError...), never a server fault, never an ERROR log.

Values lean on what broke db_proxy before: ids of 0, of the users and the
group that exist, and of 2**32-1; strings at and past their column's
length; strings that are not UTF-8 (protobuf hands those over as bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import ImError
from tests.db_proxy.conftest import ENGINES, DbProxy, database_url, db_proxy_on
from tests.support.hostile import bodies


@st.composite
def requests(draw: st.DrawFn, db: DbProxy) -> tuple[int, Message]:
    route = draw(st.sampled_from(sorted(db.commands, key=lambda r: r.command)))
    request = route.request()
    request.ParseFromString(draw(bodies(request.DESCRIPTOR)))
    assert request.IsInitialized(), request.FindInitializationErrors()  # type: ignore[attr-defined]
    return route.command, request


def server_faults_and_bugs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


async def answer(db: DbProxy, command: int, request: Message) -> None:
    try:
        await db.dispatch(command, request)  # checks the reply's type and that it serialises
    except ImError as exc:
        assert not exc.server_fault, f"0x{command:04x} failed on the server's side: {exc!r}"


@pytest.mark.parametrize("engine", ENGINES)
def test_every_command_answers_or_refuses_cleanly(
    engine: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    examples = 600 if engine == "sqlite" else 200
    with asyncio.Runner() as runner:
        opened = contextlib.AsyncExitStack()
        url = runner.run(opened.enter_async_context(database_url(engine, tmp_path)))
        db = runner.run(opened.enter_async_context(db_proxy_on(url)))
        try:

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            )
            @given(case=requests(db))
            def check(case: tuple[int, Message]) -> None:
                caplog.clear()
                command, request = case
                runner.run(answer(db, command, request))
                assert server_faults_and_bugs(caplog) == []

            check()
        finally:
            runner.run(opened.aclose())
