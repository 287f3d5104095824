"""messages.export against the store on both engines: scopes, order, paging,
time ranges, bodies, bounds."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from common.errors import InvalidArgument, NotFound
from common.pb import base_pb2
from common.teamtalk_text import encode_text
from db_proxy.handlers.admin_audit import AuditAdmin
from db_proxy.handlers.admin_export import PAGE_BYTES
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import gmsg, make_users, msg

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


async def export_all(admin: AuditAdmin, args: dict[str, Any], limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every page of an export: the messages and how many pages it took."""
    messages: list[dict[str, Any]] = []
    cursor = None
    for pages in range(1, 1000):
        page = await admin.export.export({**args, "limit": limit, **({"cursor": cursor} if cursor else {})})
        messages += page["messages"]
        cursor = page["cursor"]
        if cursor is None:
            return messages, pages
    raise AssertionError("the export never ended")


@pytest.fixture
async def talk(store: SqlStore) -> dict[str, Any]:
    """alice (a) talks with bob (b) and carol (c); bob and carol talk; all three in a group."""
    a, b, c = await make_users(store, 3)
    group = await store.create_group("team", "", a, 1, [a, b, c])
    batch = [
        msg(a, b, encode_text("hi bob"), create_time=T0),
        msg(b, a, encode_text("hi alice"), create_time=T0 + 10),
        msg(a, c, "plain ünïcode".encode(), create_time=T0 + 20),
        msg(b, c, encode_text("not alice's"), create_time=T0 + 30),
        gmsg(c, group.id, encode_text("hello team"), create_time=T0 + 40),
        msg(a, b, b"\x00\xffaudio", create_time=T0 + 50, msg_type=base_pb2.MSG_TYPE_SINGLE_AUDIO),
        msg(a, b, b"\xff\xfe not text", create_time=T0 + 60),
    ]
    await store.save_messages(batch)
    names = {u.id: u.name for u in await store.users_by_id([a, b, c])}
    return {"a": a, "b": b, "c": c, "group": group.id, "names": names}


async def test_a_users_export_has_its_conversations_in_order_with_bodies(
    audit_admin: AuditAdmin, talk: dict[str, Any]
) -> None:
    a, b, c, names = talk["a"], talk["b"], talk["c"], talk["names"]
    messages, _ = await export_all(audit_admin, {"user": names[a]}, 1000)
    bodies = [m.get("text", m.get("data")) for m in messages]
    assert bodies == [
        "hi bob",
        "hi alice",
        base64.b64encode(b"\x00\xffaudio").decode(),
        base64.b64encode(b"\xff\xfe not text").decode(),
        "plain ünïcode",
        "hello team",
    ]
    first = messages[0]
    assert first == {
        "session_type": "single",
        "conversation": {"users": [{"id": a, "name": names[a]}, {"id": b, "name": names[b]}]},
        "msg_id": 1,
        "from": {"id": a, "name": names[a]},
        "to": {"id": b, "name": names[b]},
        "create_time": T0,
        "time": "2026-01-01T00:00:00Z",
        "msg_type": base_pb2.MSG_TYPE_SINGLE_TEXT,
        "text": "hi bob",
    }
    group = messages[-1]
    assert group["session_type"] == "group"
    assert group["conversation"] == {"group": {"id": talk["group"], "name": "team"}} == {"group": group["to"]}
    assert group["from"] == {"id": c, "name": names[c]}


async def test_paging_gives_every_message_once(audit_admin: AuditAdmin, talk: dict[str, Any]) -> None:
    whole, pages = await export_all(audit_admin, {"user": talk["a"]}, 1000)
    assert pages == 1
    for limit in (1, 2, 4):
        paged, pages = await export_all(audit_admin, {"user": talk["a"]}, limit)
        assert paged == whole
        assert pages >= len(whole) // limit


async def test_one_conversation_and_a_group(audit_admin: AuditAdmin, talk: dict[str, Any]) -> None:
    names = talk["names"]
    pair = {"type": "single", "a": names[talk["c"]], "b": talk["b"]}
    messages, _ = await export_all(audit_admin, {"conversation": pair}, 1)
    assert [m["text"] for m in messages] == ["not alice's"]
    group = {"type": "group", "id": talk["group"]}
    messages, _ = await export_all(audit_admin, {"conversation": group}, 1000)
    assert [m["text"] for m in messages] == ["hello team"]


async def test_the_time_range_is_since_inclusive_until_exclusive(
    audit_admin: AuditAdmin, talk: dict[str, Any]
) -> None:
    args = {"user": talk["a"], "since_ms": (T0 + 10) * 1000, "until_ms": (T0 + 50) * 1000}
    messages, _ = await export_all(audit_admin, args, 2)
    assert sorted(m["create_time"] - T0 for m in messages) == [10, 20, 40]
    # Milliseconds round up to the next whole second for since (create_time is in seconds).
    args = {"user": talk["a"], "since_ms": (T0 + 10) * 1000 + 1}
    messages, _ = await export_all(audit_admin, args, 1000)
    assert min(m["create_time"] - T0 for m in messages) == 20
    empty = await audit_admin.export.export({"user": talk["a"], "since_ms": 5000, "until_ms": 5000})
    assert empty == {"messages": [], "cursor": None}


async def test_a_page_is_bounded_in_bytes(audit_admin: AuditAdmin, store: SqlStore) -> None:
    a, b = await make_users(store, 2)
    body = b"x" * 60_000
    for _ in range(3):
        await store.save_messages([msg(a, b, body, create_time=T0)] * 10)
    page = await audit_admin.export.export({"user": a})
    assert 1 < len(page["messages"]) < 30 and page["cursor"] is not None
    assert sum(len(m["text"]) for m in page["messages"]) <= PAGE_BYTES
    messages, _ = await export_all(audit_admin, {"user": a}, 1000)
    assert [m["msg_id"] for m in messages] == list(range(1, 31))


async def test_a_user_without_messages_exports_nothing(audit_admin: AuditAdmin, store: SqlStore) -> None:
    [lonely] = await make_users(store, 1)
    assert await audit_admin.export.export({"user": lonely}) == {"messages": [], "cursor": None}


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"user": 1, "conversation": {"type": "group", "id": 1}},
        {"user": 1, "cursor": "x"},
        {"user": 1, "cursor": "3.1.1"},
        {"user": 1, "limit": 0},
        {"user": 1, "since_ms": -5},
        {"conversation": {"type": "channel"}},
        {"conversation": ["single", 1, 2]},
        {"conversation": {"type": "single", "a": 1, "b": 2, "c": 3}},
        {"user": 1, "extra": True},
    ],
)
async def test_bad_arguments_are_refused(
    audit_admin: AuditAdmin, talk: dict[str, Any], args: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument):
        await audit_admin.export.export(args)


async def test_a_cursor_of_another_conversation_is_refused(
    audit_admin: AuditAdmin, talk: dict[str, Any]
) -> None:
    page = await audit_admin.export.export({"user": talk["a"], "limit": 1})
    with pytest.raises(InvalidArgument):
        group = {"type": "group", "id": talk["group"]}
        await audit_admin.export.export({"conversation": group, "cursor": page["cursor"]})


@pytest.mark.parametrize(
    "args",
    [{"user": "nobody"}, {"user": 999_999}, {"conversation": {"type": "group", "id": 999_999}}],
)
async def test_unknown_users_and_groups_are_not_found(audit_admin: AuditAdmin, args: dict[str, Any]) -> None:
    with pytest.raises(NotFound):
        await audit_admin.export.export(args)
