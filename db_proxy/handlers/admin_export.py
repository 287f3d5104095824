"""Admin method ``messages.export``: a user's conversations, or one
conversation, over a time range, a bounded page at a time (docs/admin-api.md).

A page is at most ``limit`` (1000) messages and about 1 MiB of JSON; it
ends at a cursor, the position (session_type, conv_id, msg_id) of its last
message, and the next page starts after it (see
:mod:`db_proxy.storage.sql_export`). A user's conversations are those it has
a session row for: every 1:1 conversation it sent or received in, and every
group it got a message in (each group's whole history in the range: an
export is for an auditor, not what the user could see). Text messages are
decoded as TeamTalk clients encode them (common/teamtalk_text.py), or read
as UTF-8 (``admin_text_encoding = "plain"``); other bodies are base64.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidArgument, NotFound
from common.pb import base_pb2
from common.teamtalk_text import decode_text
from db_proxy.handlers import admin_args as a
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, ExportedMessage, Store, User
from db_proxy.storage.sql_base import I64_MAX

MAX_ROWS = 1000
PAGE_BYTES = 1024 * 1024  # of JSON, estimated (base64 is 4/3 of the body, plus the fields)
ROW_OVERHEAD = 320  # bytes of JSON around a body
QUERY_ROWS = 200  # messages read per query: bounds a page's memory to ~200 bodies at once
CONVERSATIONS_PER_QUERY = 200
MAX_CONVERSATIONS_PER_PAGE = 1000  # visited, even if empty in the range: a page's work is bounded
TEXT_TYPES = frozenset({base_pb2.MSG_TYPE_SINGLE_TEXT, base_pb2.MSG_TYPE_GROUP_TEXT})
SESSION_NAMES = {SESSION_SINGLE: "single", SESSION_GROUP: "group"}
_CURSOR = re.compile(r"^([12])\.(-?\d{1,20})\.(\d{1,20})$")
_MS_MAX = 2**62

Position = tuple[int, int, int]  # session_type, conv_id as stored, msg_id


def cursor_text(position: Position) -> str:
    session_type, conv_id, msg_id = position
    return f"{session_type}.{conv_id}.{msg_id}"


def parse_cursor(value: object) -> Position | None:
    if value is None:
        return None
    match = _CURSOR.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidArgument("cursor is not one this server gave")
    return int(match[1]), int(match[2]), min(int(match[3]), I64_MAX)


def body_json(msg_type: int, data: bytes) -> dict[str, str]:
    """``{"text": ...}`` for a text message that decodes, else ``{"data": base64}``."""
    if msg_type in TEXT_TYPES:
        try:
            return {"text": decode_text(data)}
        except (ValueError, UnicodeDecodeError):
            pass
        try:
            return {"text": data.decode()}
        except UnicodeDecodeError:
            pass
    return {"data": base64.b64encode(data).decode()}


def iso_time(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds_at_or_after(ms: int) -> int:
    """The first whole second at or after ``ms``: create_time is in seconds."""
    return -(-ms // 1000)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a call exports: one user's conversations, or one conversation."""

    user_id: int = 0  # a user's conversations
    conversation: tuple[int, int] | None = None  # (session_type, conv_id as stored)
    since: int = 0  # unix s, inclusive; 0: open
    until: int = 0  # unix s, exclusive; 0: open


class MessageExport:
    def __init__(self, directory: Store, store: Store) -> None:
        self.directory = directory  # users (for names)
        self.store = store  # messages, sessions, groups

    async def export(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(
            args, {"user", "conversation", "since_ms", "until_ms", "cursor", "limit"}, "messages.export"
        )
        if ("user" in args) == ("conversation" in args):
            raise InvalidArgument("messages.export needs exactly one of user and conversation")
        since_ms = a.optional_int(args, "since_ms", 0, 0, _MS_MAX)
        until_ms = a.optional_int(args, "until_ms", 0, 0, _MS_MAX)
        limit = a.optional_int(args, "limit", MAX_ROWS, 1, 2**62)
        cursor = parse_cursor(args.get("cursor"))
        since = _seconds_at_or_after(since_ms) if since_ms else 0
        until = _seconds_at_or_after(until_ms) if until_ms else 0
        if "user" in args:
            user = await self._user(a.user_ref(args["user"], "user"))
            scope = Scope(user_id=user.id, since=since, until=until)
        else:
            scope = Scope(
                conversation=await self._conversation(args["conversation"]), since=since, until=until
            )
        if until and since >= until:
            return {"messages": [], "cursor": None}
        rows, position = await self._page(scope, cursor, min(limit, MAX_ROWS))
        return {
            "messages": await self._shaped(rows),
            "cursor": cursor_text(position) if position is not None else None,
        }

    async def _user(self, ref: int | str) -> User:
        """By id (deleted users too: their messages stay) or by login name."""
        users = await self.directory.users_by_id([ref]) if isinstance(ref, int) else []
        if not users and isinstance(ref, str):
            found = await self.directory.user_by_name(ref)
            users = [found] if found is not None else []
            if not users and a.is_decimal(ref):
                users = await self.directory.users_by_id([int(ref)])
        if not users:
            raise NotFound(f"no user {ref!r}")
        return users[0]

    async def _conversation(self, value: object) -> tuple[int, int]:
        if not isinstance(value, Mapping):
            raise InvalidArgument(
                'conversation must be {"type": "single", "a", "b"} or {"type": "group", "id"}'
            )
        kind = value.get("type")
        if kind == "single":
            a.check_keys(value, {"type", "a", "b"}, "conversation")
            first = await self._user(a.user_ref(value.get("a"), "a"))
            second = await self._user(a.user_ref(value.get("b"), "b"))
            return SESSION_SINGLE, self.store.conversation_id(SESSION_SINGLE, first.id, second.id)
        if kind == "group":
            a.check_keys(value, {"type", "id"}, "conversation")
            group_id = a.object_id(value)
            if await self.store.group_by_id(group_id) is None:  # a dismissed group's history is kept
                raise NotFound(f"no group {group_id}")
            return SESSION_GROUP, self.store.conversation_id(SESSION_GROUP, 0, group_id)
        raise InvalidArgument('conversation type must be "single" or "group"')

    async def _page(
        self, scope: Scope, cursor: Position | None, limit: int
    ) -> tuple[list[ExportedMessage], Position | None]:
        """Up to ``limit`` messages (and PAGE_BYTES) after ``cursor``, and where the
        next page starts (None: there is nothing after these)."""
        rows: list[ExportedMessage] = []
        budget = PAGE_BYTES
        visited = 0
        if scope.conversation is not None:
            convs = [scope.conversation]
            if cursor is not None and cursor[:2] != scope.conversation:
                raise InvalidArgument("cursor is of another conversation")
        else:
            convs = []
        after = cursor[:2] if cursor is not None else (0, 0)
        resume = cursor
        if scope.conversation is None and resume is not None:
            convs = [resume[:2]]  # first the rest of the conversation the last page ended in
        while True:
            if not convs:
                if scope.conversation is not None:
                    return rows, None
                convs = await self.store.user_conversations(scope.user_id, after, CONVERSATIONS_PER_QUERY)
                if not convs:
                    return rows, None
            session_type, conv_id = convs.pop(0)
            after = max(after, (session_type, conv_id))
            visited += 1
            last = resume[2] if resume is not None and resume[:2] == (session_type, conv_id) else 0
            resume = None
            while True:
                want = min(limit - len(rows), QUERY_ROWS)
                found = await self.store.export_messages(
                    session_type, conv_id, last, scope.since, scope.until, want
                )
                for row in found:
                    rows.append(row)
                    last = row.msg_id
                    budget -= ROW_OVERHEAD + len(row.msg_data) * 4 // 3
                    if len(rows) >= limit or budget <= 0:
                        return rows, (session_type, conv_id, last)
                if len(found) < want:
                    break  # this conversation is done
            if visited >= MAX_CONVERSATIONS_PER_PAGE:
                # Past this conversation's last message: the next page goes on after it.
                return rows, (session_type, conv_id, I64_MAX)

    async def _shaped(self, rows: list[ExportedMessage]) -> list[dict[str, Any]]:
        user_ids = {r.from_user_id for r in rows} | {
            r.to_id for r in rows if r.session_type == SESSION_SINGLE
        }
        names = {u.id: u.name for u in await self.directory.users_by_id(sorted(user_ids))}
        groups: dict[int, str] = {}
        for group_id in sorted({r.to_id for r in rows if r.session_type == SESSION_GROUP}):
            group = await self.store.group_by_id(group_id)
            groups[group_id] = group.name if group is not None else ""

        def user(user_id: int) -> dict[str, Any]:
            return {"id": user_id, "name": names.get(user_id, "")}

        shaped = []
        for r in rows:
            if r.session_type == SESSION_GROUP:
                peer = {"id": r.to_id, "name": groups.get(r.to_id, "")}
                conversation: dict[str, Any] = {"group": peer}
            else:
                peer = user(r.to_id)
                conversation = {"users": [user(i) for i in sorted({r.from_user_id, r.to_id})]}
            shaped.append(
                {
                    "session_type": SESSION_NAMES.get(r.session_type, str(r.session_type)),
                    "conversation": conversation,
                    "msg_id": r.msg_id,
                    "from": user(r.from_user_id),
                    "to": peer,
                    "create_time": r.create_time,
                    "time": iso_time(r.create_time),
                    "msg_type": r.msg_type,
                    **body_json(r.msg_type, r.msg_data),
                }
            )
        return shaped
