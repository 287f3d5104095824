"""What the handlers know of storage: plain records and the Store interface.

Handlers never see SQL or a connection; each Store method is one business
operation and runs in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

SESSION_SINGLE = 1
SESSION_GROUP = 2


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str  # login name, unique
    password_hash: str  # scrypt of the client's md5 hex; see db_proxy.passwords
    nick: str = ""
    gender: int = 0
    avatar: str = ""
    department_id: int = 0
    email: str = ""
    real_name: str = ""
    tel: str = ""
    domain: str = ""
    status: int = 0  # employment status, TeamTalk's UserInfo.status
    sign_info: str = ""
    disabled: bool = False
    updated: int = 0  # unix seconds of the last profile change


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store. ``to_id`` is the peer user (1:1) or the group."""

    from_user_id: int
    session_type: int
    to_id: int
    msg_type: int
    msg_data: bytes
    create_time: int
    client_msg_id: int = 0  # the client's own id: a resend with the same id and body is a duplicate


@dataclass(frozen=True, slots=True)
class SavedMessage:
    msg_id: int
    create_time: int
    duplicate: bool  # True: an earlier identical send was already stored; nothing new was written


@dataclass(frozen=True, slots=True)
class StoredMessage:
    msg_id: int
    from_user_id: int
    create_time: int
    msg_type: int
    msg_data: bytes


@dataclass(frozen=True, slots=True)
class UnreadSession:
    session_type: int
    peer_id: int  # the other user (1:1) or the group
    unread_cnt: int
    latest_msg_id: int
    latest_msg_type: int
    latest_msg_data: bytes
    latest_from_user_id: int


@dataclass(frozen=True, slots=True)
class RecentSession:
    session_type: int
    peer_id: int
    updated: int
    removed: bool
    latest_msg_id: int
    latest_msg_type: int
    latest_msg_data: bytes
    latest_from_user_id: int


@dataclass(frozen=True, slots=True)
class Department:
    id: int
    name: str
    parent_id: int = 0
    priority: int = 0
    deleted: bool = False
    updated: int = 0


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str
    avatar: str
    creator_id: int
    group_type: int  # 1 normal, 2 temporary
    version: int
    members: tuple[int, ...] = field(default=())


class StoreError(Exception):
    """Storage failed (unreachable, constraint, ...); the request fails, nothing half-done."""


class DuplicateName(StoreError):
    """A user (or department) with that name exists."""


class Store(Protocol):
    """The async storage interface db_proxy's handlers use."""

    engine: str  # "sqlite" or "mysql"

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version now in place."""
        ...

    async def ping(self) -> bool: ...

    # users
    async def create_user(self, name: str, password_hash: str, **profile: object) -> int: ...
    async def user_by_name(self, name: str) -> User | None: ...
    async def users_by_id(self, user_ids: list[int]) -> list[User]: ...

    # messages
    async def save_messages(self, batch: list[NewMessage]) -> list[SavedMessage]:
        """Store a batch in one transaction; one result per input, in order.

        For each message: allocate the next msg id of its conversation
        (1:1 conversations are the unordered user pair; groups are the group),
        insert it, update both sides' recent sessions and the recipient's
        unread count. A message whose (from_user_id, session, client_msg_id,
        body) matches an earlier one with client_msg_id != 0 is not stored
        again: its result repeats the first msg_id with duplicate=True.
        """
        ...

    async def message_list(
        self, user_id: int, session_type: int, peer_id: int, msg_id_begin: int, count: int
    ) -> list[StoredMessage]:
        """Newest first, ids <= msg_id_begin (0: from the newest), at most count."""
        ...

    async def messages_by_id(
        self, user_id: int, session_type: int, peer_id: int, msg_ids: list[int]
    ) -> list[StoredMessage]: ...

    async def latest_msg_id(self, user_id: int, session_type: int, peer_id: int) -> int: ...

    async def unread_sessions(self, user_id: int) -> list[UnreadSession]:
        """Sessions with unread_cnt > 0, each with its latest message."""
        ...

    async def mark_read(self, user_id: int, session_type: int, peer_id: int, msg_id: int) -> None:
        """The user has read the session up to msg_id: its unread count becomes 0."""
        ...
