"""send: a message from a user or the system account, stored and pushed like
a client's; and db_proxy's status."""

from __future__ import annotations

from pathlib import Path

from common.commands import Cmd
from common.delivery.memory import MemoryDeliveryLog
from common.pb import base_pb2, internal_pb2
from common.teamtalk_text import decode_text
from db_proxy.config import DbProxyConfig
from db_proxy.handlers.admin import DbAdmin
from db_proxy.notices import Notices
from db_proxy.push import LogAppender
from db_proxy.server import connect_redis
from db_proxy.services.registry import Services
from db_proxy.storage import open_store
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE
from db_proxy.workers import MessageWorkers
from tests.admin_backend.conftest import Harness
from tests.support.databases import sqlite_url

BAD, NOT_FOUND, FORBIDDEN = (
    internal_pb2.ERR_BAD_REQUEST,
    internal_pb2.ERR_NOT_FOUND,
    internal_pb2.ERR_FORBIDDEN,
)


async def send(h: Harness, sender: object, text: str, **to: object) -> dict[str, object]:
    return await h.call("send", **{"from": sender, "text": text, **to})


async def test_user_to_user(harness: Harness) -> None:
    h = harness
    ann = (await h.user("ann"))["id"]
    bob = (await h.user("bob"))["id"]
    await h.online(bob, 11)
    await h.online(ann, 12, base_pb2.CLIENT_TYPE_ANDROID)
    sent = await send(h, "ann", "héllo 😀", to_user="bob")
    assert sent == {"msg_id": 1, "session_type": SESSION_SINGLE, "to": bob}
    # Stored: in the conversation on both sides and unread for the recipient.
    (stored,) = await h.store.message_list(bob, SESSION_SINGLE, ann, 0, 10)
    assert (stored.msg_id, stored.from_user_id, stored.msg_type) == (1, ann, base_pb2.MSG_TYPE_SINGLE_TEXT)
    assert decode_text(stored.msg_data) == "héllo 😀"
    assert [(s.peer_id, s.unread_cnt) for s in await h.store.unread_sessions(bob)] == [(ann, 1)]
    assert await h.store.unread_sessions(ann) == []
    # Pushed to the recipient and to the sender's devices (no connection sent it).
    to, push = await h.gateway.delivered(Cmd.MSG_DATA)
    assert to == sorted([ann, bob])
    assert (push.from_user_id, push.to_session_id, push.msg_id) == (ann, bob, 1)
    assert (push.msg_type, decode_text(push.msg_data)) == (base_pb2.MSG_TYPE_SINGLE_TEXT, "héllo 😀")
    again = await send(h, ann, "second", to_user=bob)
    assert again["msg_id"] == 2


async def test_system_to_user_and_group(harness: Harness) -> None:
    h = harness
    ann = (await h.user("ann"))["id"]
    bob = (await h.user("bob"))["id"]
    group = (await h.call("groups.create", name="All", creator=ann, members=[bob]))["group"]
    await h.online(bob, 21)
    await h.online(ann, 22)
    sent = await send(h, "system", "maintenance at 22:00", to_group=group["id"])
    assert sent == {"msg_id": 1, "session_type": SESSION_GROUP, "to": group["id"]}
    system = await h.store.user_by_name(h.config.system_user)
    assert system is not None and system.password_hash == "!"
    assert system.id not in (await h.call("groups.show", id=group["id"]))["group"]["members"]
    for member in (ann, bob):
        (stored,) = await h.store.message_list(member, SESSION_GROUP, group["id"], 0, 10)
        assert (stored.from_user_id, decode_text(stored.msg_data)) == (system.id, "maintenance at 22:00")
        assert [(s.peer_id, s.unread_cnt) for s in await h.store.unread_sessions(member)] == [
            (group["id"], 1)
        ]
    to, push = await h.gateway.delivered(Cmd.MSG_DATA)
    assert to == [ann, bob]
    assert (push.from_user_id, push.to_session_id, push.msg_type) == (
        system.id,
        group["id"],
        base_pb2.MSG_TYPE_GROUP_TEXT,
    )
    # The same account every time; it cannot log in.
    direct = await send(h, "system", "hello bob", to_user="bob")
    assert direct["to"] == bob
    (stored,) = await h.store.message_list(bob, SESSION_SINGLE, system.id, 0, 10)
    assert stored.from_user_id == system.id
    assert (await h.store.user_by_name(h.config.system_user)) == system
    assert await h.login(h.config.system_user, "!") != base_pb2.REFUSE_REASON_NONE
    assert await h.login(h.config.system_user, "") != base_pb2.REFUSE_REASON_NONE


async def test_refusals(harness: Harness) -> None:
    h = harness
    ann = (await h.user("ann"))["id"]
    await h.user("eve")
    group = (await h.call("groups.create", name="G", creator=ann))["group"]
    # A user must be a member of the group it writes to.
    assert await h.error("send", **{"from": "eve", "to_group": group["id"], "text": "let me in"}) == FORBIDDEN
    assert (await send(h, "ann", "mine", to_group=group["id"]))["msg_id"] == 1
    assert await h.error("send", **{"from": "nobody", "to_user": "ann", "text": "x"}) == NOT_FOUND
    assert await h.error("send", **{"from": "ann", "to_user": "nobody", "text": "x"}) == NOT_FOUND
    assert await h.error("send", **{"from": "ann", "to_group": 4242, "text": "x"}) == NOT_FOUND
    for bad in (
        {"from": "ann", "text": "to nobody"},
        {"from": "ann", "to_user": "eve", "to_group": group["id"], "text": "both"},
        {"from": "ann", "to_user": "eve", "text": ""},
        {"from": "ann", "to_user": "eve", "text": 5},
        {"from": "ann", "to_user": "eve", "text": "é" * 30_001},  # over 60000 bytes of UTF-8
        {"to_user": "eve", "text": "no sender"},
        {"from": "ann", "to_group": "G", "text": "a group is named by id"},
        {"from": "ann", "to_user": "eve", "text": "x", "priority": "high"},
    ):
        assert await h.error("send", **bad) == BAD, bad
    assert await h.store.message_list(ann, SESSION_GROUP, group["id"], 0, 10) != []


async def test_status(harness: Harness) -> None:
    h = harness
    await h.user("ann")
    before = await h.call("status")
    assert before == {
        "node_id": "db-t",
        "roles": ["login", "directory", "messages", "admin"],
        "workers": 2,
        "queue_depths": [0, 0],
        "committed": 0,
        "database": "ok",
        "redis": "off" if h.engine == "sqlite" else "ok",
    }
    await send(h, "system", "ping", to_user="ann")
    assert (await h.call("status"))["committed"] == 1


async def test_status_reports_what_is_down(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))  # never opened: every query fails
    redis = await connect_redis("redis://127.0.0.1:1/0")  # nothing listens there
    assert redis is not None
    try:
        appender = LogAppender(MemoryDeliveryLog(1))
        workers = MessageWorkers(store, appender, workers=3, queue_size=8, batch_size=8)
        config = DbProxyConfig(node_id="db-down")
        services = Services.over(store, store, workers, config.password_log2_n)
        admin = DbAdmin(config, services, Notices(lambda *frame: False, config.node_id), redis)
        status = await admin.methods()["status"]({})
    finally:
        await redis.aclose()
    assert status["node_id"] == "db-down" and status["queue_depths"] == [0, 0, 0]
    assert status["database"] == "unreachable"
    assert status["redis"] not in ("ok", "off") and "ConnectionError" in status["redis"]
