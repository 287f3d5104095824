"""users.import at the production scrypt cost on a real db_proxy: the imported users log
in with their passwords, and a login made while the import is hashing is answered
before the import ends (it waits for no queued import hash)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from common.commands import Rpcs
from common.pb import base_pb2, internal_pb2
from db_proxy import hash_pool
from db_proxy.passwords import LOG2_N, hash_password, md5_hex
from tests.admin_backend.conftest import Harness

IMPORT_TIMEOUT = 120.0  # the login_server's own bound on one chunk


@pytest.fixture
def password_log2_n() -> int:
    return LOG2_N  # what a real import pays per row


async def import_rows(h: Harness, rows: list[dict[str, Any]]) -> dict[str, Any]:
    call = internal_pb2.AdminCall(method="users.import", args_json=json.dumps({"rows": rows}))
    result = await h.db.call(Rpcs.ADMIN_CALL, call, IMPORT_TIMEOUT)
    decoded: dict[str, Any] = json.loads(result.result_json)
    return decoded


async def test_imported_users_log_in_and_a_login_during_the_import_is_prompt(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    # A user whose login is cheap to verify: what it waits for is the hashing threads.
    await h.store.create_user("early", hash_password(md5_hex("early-pw"), log2_n=4), nick="early")
    hashing = threading.Event()

    def noticed(*args: Any) -> str:
        hashing.set()
        return hash_password(*args)

    monkeypatch.setattr(hash_pool, "hash_password", noticed)
    rows = [{"name": f"imp{i:03d}", "password": f"pw-{i}"} for i in range(120)]
    importing = asyncio.create_task(import_rows(h, rows))
    assert await asyncio.to_thread(hashing.wait, 30)
    started = time.monotonic()
    assert await h.login("early", "early-pw") == base_pb2.REFUSE_REASON_NONE
    took = time.monotonic() - started
    # 120 production hashes take seconds on any machine; the login waited for at most
    # the hashes already running, not for the ones queued behind them.
    assert not importing.done(), f"the import ended first (login took {took:.2f} s)"
    result = await importing
    assert result == {"created": 120, "skipped": []}
    for i in (0, 119):
        assert await h.login(f"imp{i:03d}", f"pw-{i}") == base_pb2.REFUSE_REASON_NONE
    assert await h.login("imp005", "wrong") != base_pb2.REFUSE_REASON_NONE
