"""What the handlers know of storage: plain records and the Store interface.

Handlers never see SQL or a connection; each Store method is one business
operation and runs in its own transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeGuard

from common.errors import Conflict, Forbidden, InvalidArgument, NotFound, Unavailable

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
    # Deleted by an administrator: kept (old messages name it) but disabled,
    # its login name freed, out of admin lists and groups.
    deleted: bool = False
    # schema.USER_KIND_PERSON, or USER_KIND_SYSTEM: the sender of admin
    # notices, out of every list and search but found by id (clients show it).
    kind: int = 0
    # The user's id in the company directory (LDAP entryUUID, AD objectGUID), set
    # by `imctl sync ldap`; empty for a user made here.
    external_id: str = ""


@dataclass(frozen=True, slots=True)
class OfflineFile:
    """An uploaded offline file, listed for its receiver (its data is on a file server)."""

    from_user_id: int
    to_user_id: int
    task_key: str  # names the file on the file server (common.file_ticket)
    receiver_task_id: str  # the receiver's download ticket
    file_name: str
    file_size: int
    created: int  # unix seconds
    expires_at: int  # unix seconds: not listed from then on


@dataclass(frozen=True, slots=True)
class DeviceToken:
    """A push token a client registered (IMDeviceTokenReq): one per user and client type."""

    user_id: int
    client_type: int
    token: str


# A user to create: login name, password hash and profile fields (as create_user's keywords).
NewUser = tuple[str, str, Mapping[str, object]]


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
    # Sent by the server itself (the admin API's system account): a group
    # message goes to the members without the sender having to be one.
    trusted: bool = False


@dataclass(frozen=True, slots=True)
class SavedMessage:
    msg_id: int
    create_time: int
    duplicate: bool  # True: an earlier identical send was already stored; nothing new was written
    # Who gets it pushed, as of the commit: both users of a 1:1 conversation,
    # or the group's members at that moment (sender included: its other devices).
    # A duplicate is pushed again too: its group's members as they are now.
    recipients: tuple[int, ...] = ()


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
    version: int  # raised by every change of name, avatar or members
    members: tuple[int, ...] = field(default=())  # current members, ascending
    shield: int = 0  # the viewing user's shield status (1: muted), where a viewer is known
    dismissed: bool = False  # dismissed by an administrator: no members, no changes


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One admin action in the audit trail (table ``admin_audit``); ``detail`` is JSON text."""

    id: int  # 0 for one not yet stored
    at_ms: int
    who: str
    via: str
    remote: str
    action: str
    target: str
    status: int
    detail: str = "{}"


@dataclass(frozen=True, slots=True)
class ExportedMessage:
    """A stored message as an export walks it: its conversation's key and the message."""

    session_type: int
    conv_id: int  # as stored (see Dialect.u64)
    msg_id: int
    from_user_id: int
    to_id: int  # the peer (1:1, as sent) or the group
    msg_type: int
    msg_data: bytes
    create_time: int


def is_text(value: object) -> TypeGuard[str]:
    """True for a str both engines can store: one that encodes as UTF-8.

    A proto2 string holding invalid UTF-8 arrives as bytes, and a JSON
    string may hold a lone surrogate ("\\ud800"), which no driver can send.
    """
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


# The store's errors are the cluster's error taxonomy (common.errors), one
# class each, so no caller maps storage errors to wire codes itself. Only
# StoreError means "the database failed": a refusal (a bad value, a name
# taken, no such group...) is never an Unavailable, so nothing retries it.


class StoreError(Unavailable):
    """The database failed (unreachable, a driver error...); nothing was half-done, try again later."""


class InvalidValue(InvalidArgument):
    """A value does not fit its column: too long, out of range, not text (bytes), empty."""


class DuplicateName(Conflict):
    """A user (or department) with that name exists."""


class NotMember(Forbidden):
    """The user is not (or no longer) a member of that group."""


class UnknownGroup(NotFound):
    """There is no such group, or it was dismissed."""


class UnknownUser(NotFound):
    """There is no such user (or it was deleted)."""


class UnknownDepartment(NotFound):
    """There is no such department (or it was deleted)."""


class DepartmentNotEmpty(Conflict):
    """The department still has users or sub-departments."""


class DefaultDepartmentFixed(Conflict):
    """The default department (users without one are in it) cannot be deleted, renamed or moved."""


class DepartmentCycle(InvalidArgument):
    """The change would make a department its own ancestor."""


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
    async def create_user(self, name: str, password_hash: str, **profile: object) -> int:
        """A new user; without a department_id (or with 0) it is in the default
        department, without a domain its search key is computed (db_proxy.names)."""
        ...

    async def user_by_name(self, name: str) -> User | None: ...
    async def users_by_name(self, names: list[str]) -> list[User]: ...
    async def create_users(self, users: Sequence[NewUser]) -> list[int | None]:
        """Create many users in one transaction: each new user's id, in order, or
        None for a name that is taken (by an existing user or an earlier one in
        ``users``). Invalid profile values fail the whole call, as in create_user."""
        ...

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

    # profile and directory (incremental sync by "updated" time)
    async def users_updated_since(self, since: int) -> list[User]:
        """People (not system users) whose profile changed after ``since`` (unix s), oldest change first."""
        ...

    async def update_user_profile(self, user_id: int, **fields: object) -> User | None:
        """Change profile fields (avatar, sign_info, nick, ...); bumps ``updated``.

        department_id 0 means the default department; domain "" means the
        computed search key, which follows a nick change (one chosen stays).
        """
        ...

    async def create_department(self, name: str, parent_id: int = 0, priority: int = 0) -> int: ...
    async def default_department(self) -> Department:
        """The top-level department users are in when created without one (and
        when their department is set to 0); migrate creates it."""
        ...

    async def departments_updated_since(self, since: int) -> list[Department]: ...

    # recent sessions
    async def recent_sessions(self, user_id: int, since: int) -> list[RecentSession]:
        """The user's sessions changed after ``since``, newest first, removed ones flagged."""
        ...

    async def remove_session(self, user_id: int, session_type: int, peer_id: int) -> bool:
        """Hide a session until its next message; False if the user had no such session."""
        ...

    # groups
    async def create_group(
        self, name: str, avatar: str, creator_id: int, group_type: int, member_ids: list[int]
    ) -> Group:
        """Create a group; the creator is always a member. The ids are users that
        exist: the caller checks them against the directory (perhaps another database)."""
        ...

    async def normal_groups_of(self, user_id: int) -> list[tuple[int, int]]:
        """(group_id, version) of the normal (type 1) groups the user belongs to."""
        ...

    async def groups_for_member(self, user_id: int, group_ids: list[int]) -> list[Group]:
        """Those of ``group_ids`` the user belongs to, with members and the user's shield."""
        ...

    async def change_group_members(
        self, group_id: int, add: list[int], remove: list[int]
    ) -> tuple[Group, list[int]]:
        """Add or remove members; returns the group after and the ids actually changed.
        Those added are users that exist (checked by the caller, as for create_group).

        A new member sees history only from after it joined. Raises
        UnknownGroup if there is no such group or it was dismissed.
        """
        ...

    async def set_group_shield(self, group_id: int, user_id: int, shield: int) -> None:
        """Raises NotMember if the user is not in the group."""
        ...

    # administration (db_proxy.handlers.admin, through db_proxy.services)
    async def list_users(self, offset: int, limit: int, search: str = "") -> tuple[list[User], int]:
        """People (not deleted, not system users), ascending by id, a page of them and how many match.

        ``search``: a substring of the name or the nick (ASCII letters in
        any case; on MySQL any letters).
        """
        ...

    async def mark_system_user(self, user_id: int) -> None:
        """Make the user a system user (kind USER_KIND_SYSTEM) that cannot log in; ``updated`` unchanged."""
        ...

    async def delete_user(self, user_id: int) -> User | None:
        """Mark a user deleted (and disabled) and free its login name; bumps ``updated``.

        Returns the user as it was, None if there is no such (undeleted) user.
        Its group memberships are left to the caller (change_group_members).
        """
        ...

    async def group_ids_of(self, user_id: int) -> list[int]:
        """The groups (any type) the user is a member of, ascending."""
        ...

    async def departments(self) -> list[Department]:
        """Every department not deleted, ascending by id."""
        ...

    async def department_by_id(self, dept_id: int) -> Department | None:
        """The department, deleted ones too (flagged); None if there never was one."""
        ...

    async def update_department(
        self,
        dept_id: int,
        *,
        name: str | None = None,
        parent_id: int | None = None,
        priority: int | None = None,
    ) -> Department:
        """Rename, move or reprioritise; bumps ``updated``. Raises UnknownDepartment
        (it or the new parent), DepartmentCycle, DuplicateName, DefaultDepartmentFixed
        (a rename or move of the default department)."""
        ...

    async def delete_department(self, dept_id: int) -> Department:
        """Mark a department deleted (clients' sync sees it so) and free its name.

        Returns it as it was. UnknownDepartment, or DepartmentNotEmpty while
        users (not deleted) or live sub-departments are in it, or
        DefaultDepartmentFixed. Deleted users in it move to the default department.
        """
        ...

    async def group_by_id(self, group_id: int) -> Group | None:
        """The group with its current members (dismissed ones too, flagged), no viewer."""
        ...

    async def list_groups(self, offset: int, limit: int) -> tuple[list[Group], int]:
        """Groups not dismissed, ascending by id, a page and the total."""
        ...

    async def dismiss_group(self, group_id: int) -> tuple[Group, list[int]]:
        """Remove every member and mark the group dismissed (version raised).

        Returns the group after and the members removed; UnknownGroup if
        there is no such group or it is dismissed already.
        """
        ...

    # devices
    async def set_device_token(self, user_id: int, client_type: int, token: str) -> None: ...
    async def set_push_shield(self, user_id: int, shield: int) -> None: ...
    async def push_shield(self, user_id: int) -> int: ...

    # offline push (db_proxy.offline_push): batched reads for a message's offline recipients
    async def device_tokens(self, user_ids: list[int]) -> list[DeviceToken]:
        """The non-empty tokens registered by ``user_ids``, by user then client type."""
        ...

    async def push_shielded(self, user_ids: list[int]) -> set[int]:
        """Those of ``user_ids`` who muted push notifications (set_push_shield 1)."""
        ...

    async def group_shielded(self, group_id: int, user_ids: list[int]) -> set[int]:
        """Those of ``user_ids`` who are members of ``group_id`` and shielded it (set_group_shield 1)."""
        ...

    async def remove_device_tokens(self, devices: Sequence[DeviceToken]) -> int:
        """Forget tokens a push service called invalid; a token replaced meanwhile stays.
        Returns how many rows went."""
        ...

    # offline files (the list; the data is on a file server)
    async def add_offline_file(self, file: OfflineFile) -> bool:
        """List an uploaded file for its receiver; False if its task key is listed already
        (a repeated IMFileAddOfflineReq: the first row stays). Rows expired at ``file.created``
        are removed. InvalidValue if a value does not fit."""
        ...

    async def offline_files(self, user_id: int, now: int, limit: int) -> list[OfflineFile]:
        """The files waiting for ``user_id`` that have not expired at ``now``, newest first."""
        ...

    async def delete_offline_file(self, user_id: int, task_key: str) -> OfflineFile | None:
        """Unlist a file if ``user_id`` is its receiver or its sender; the row removed, or None."""
        ...

    # audit trail (the directory database; db_proxy.handlers.admin_audit)
    async def add_audit(self, record: AuditRecord) -> int:
        """Store an entry whose values fit their columns (the caller bounds them); its id."""
        ...

    async def audit_entries(
        self,
        limit: int,
        before_id: int = 0,
        who: str = "",
        action_prefix: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
    ) -> list[AuditRecord]:
        """Newest first (by id): ids below ``before_id`` (0: any), ``who`` exactly,
        ``action`` starting with ``action_prefix``, ``since_ms <= at_ms < until_ms`` (0: open)."""
        ...

    # export and retention (the messages database; db_proxy.handlers.admin_audit, db_proxy.retention)
    def conversation_id(self, session_type: int, a: int, b: int) -> int:
        """The conversation's id as stored: of users ``a`` and ``b`` (1:1), or of group ``b``."""
        ...

    async def user_conversations(
        self, user_id: int, after: tuple[int, int], limit: int
    ) -> list[tuple[int, int]]:
        """(session_type, conv_id as stored) of the user's sessions (removed ones too)
        after ``after`` in that order, at most ``limit``."""
        ...

    async def export_messages(
        self, session_type: int, conv_id: int, after_msg_id: int, since: int, until: int, limit: int
    ) -> list[ExportedMessage]:
        """The conversation's messages with ids above ``after_msg_id`` and
        ``since <= create_time < until`` (unix s; 0: open), ascending, at most ``limit``."""
        ...

    async def delete_messages_before(self, session_type: int, before: int, limit: int) -> int:
        """Delete at most ``limit`` of the oldest messages of that type created before
        ``before`` (unix s), in one short transaction; how many went."""
        ...

    async def delete_dedup_before(self, session_type: int, before: int, limit: int) -> int:
        """The same for the resend-detection rows (message_dedup) of that type."""
        ...

    async def delete_audit_before(self, before_ms: int, limit: int) -> int:
        """The same for audit entries older than ``before_ms``."""
        ...
