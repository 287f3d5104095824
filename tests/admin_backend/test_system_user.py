"""The sender of admin notices is a system user (users.kind = USER_KIND_SYSTEM):
out of admin lists and searches and out of the clients' directory, still
found by id (clients show who a notice is from), unable to log in. An
account of that name from before is made one when db_proxy starts. And
users.names, the batched lookup behind ``imctl online``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.commands import Rpcs
from common.pb import base_pb2, buddy_pb2, internal_pb2
from db_proxy.passwords import hash_password, md5_hex
from db_proxy.storage import open_store
from db_proxy.storage.schema import USER_KIND_PERSON, USER_KIND_SYSTEM
from tests.admin_backend.conftest import ENGINES, REDIS_URL, TIMEOUT, Harness, _cluster
from tests.support.databases import fresh_mysql_url, sqlite_url

BAD = internal_pb2.ERR_BAD_REQUEST


async def directory_names(h: Harness) -> set[str]:
    """The login names a client's full directory sync (IMAllUserReq from 0) lists."""
    res = await h.client.call(Rpcs.ALL_USER, buddy_pb2.IMAllUserReq(user_id=1, latest_update_time=0), TIMEOUT)
    return {u.user_real_name for u in res.user_list}


async def info_names(h: Harness, user_id: int) -> list[str]:
    """What a client asking for one user by id (IMUsersInfoReq) is told its name is."""
    req = buddy_pb2.IMUsersInfoReq(user_id=1, user_id_list=[user_id])
    res = await h.client.call(Rpcs.USERS_INFO, req, TIMEOUT)
    return [u.user_real_name for u in res.user_info_list]


async def test_the_system_sender_is_hidden_but_resolvable(harness: Harness) -> None:
    h = harness
    ann = (await h.user("ann"))["id"]
    await h.call("send", **{"from": "system", "to_user": ann, "text": "maintenance at 22:00"})
    system = await h.store.user_by_name(h.config.system_user)
    assert system is not None and system.kind == USER_KIND_SYSTEM
    assert (await h.store.user_by_name("ann")).kind == USER_KIND_PERSON  # type: ignore[union-attr]

    listed = await h.call("users.list")
    assert [u["name"] for u in listed["users"]] == ["ann"] and listed["total"] == 1
    assert (await h.call("users.list", search="sys"))["users"] == []
    assert await directory_names(h) == {"ann"}
    assert await info_names(h, system.id) == [h.config.system_user]  # a notice's sender is shown
    assert await h.login(h.config.system_user, "!") != base_pb2.REFUSE_REASON_NONE
    # Sent again: the same account, still hidden.
    await h.call("send", **{"from": "system", "to_user": ann, "text": "done"})
    assert (await h.store.user_by_name(h.config.system_user)) == system
    assert await directory_names(h) == {"ann"}


async def test_user_names_answers_many_ids_in_one_call(harness: Harness) -> None:
    h = harness
    ids = [(await h.user(name, nick=name.title()))["id"] for name in ("ann", "bob")]
    answer = await h.call("users.names", ids=[*ids, 999_999])
    assert answer["users"] == [
        {"id": ids[0], "name": "ann", "nick": "Ann"},
        {"id": ids[1], "name": "bob", "nick": "Bob"},
    ]
    assert await h.error("users.names", ids=list(range(1, 5002))) == BAD
    assert await h.error("users.names", ids=["ann"]) == BAD


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        async with fresh_mysql_url() as url:
            yield url


async def test_an_existing_account_of_that_name_becomes_the_system_user(database_url: str) -> None:
    # Made as a person before users had kinds, with a password that worked.
    async with open_store(database_url) as store:
        await store.migrate()
        old_id = await store.create_user("system", hash_password(md5_hex("pw"), 4), nick="System")
        await store.create_user("ann", hash_password(md5_hex("pw"), 4))
    engine = "sqlite" if database_url.startswith("sqlite") else "mysql"
    redis = "" if engine == "sqlite" else REDIS_URL
    async with _cluster(engine, database_url, redis, 4) as h:
        marked = await h.store.user_by_name("system")
        assert marked is not None and (marked.id, marked.kind) == (old_id, USER_KIND_SYSTEM)
        assert await h.login("system", "pw") != base_pb2.REFUSE_REASON_NONE
        assert await h.login("ann", "pw") == base_pb2.REFUSE_REASON_NONE
        assert [u["name"] for u in (await h.call("users.list"))["users"]] == ["ann"]
        assert await directory_names(h) == {"ann"}
        sent = await h.call("send", **{"from": "system", "to_user": "ann", "text": "hello"})
        assert sent["msg_id"] == 1
        assert (await h.store.user_by_name("system")).id == old_id  # type: ignore[union-attr]
