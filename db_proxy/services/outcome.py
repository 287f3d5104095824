"""What a service operation returns: its result and the notices it causes.

A service never sends anything itself: the caller (a gateway's request or an
admin call) hands the notices to :class:`db_proxy.notices.Notices` with its
own origin, so both paths push exactly what the one operation produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from common.pb import base_pb2

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GroupNotice:
    """IMGroupChangeMemberNotify to ``recipients``: who changed what in a group."""

    user_id: int  # who made the change (the group's creator for an admin's)
    change_type: base_pb2.GroupModifyType.ValueType  # ADD or DEL
    group_id: int
    current: tuple[int, ...]  # the members after the change
    changed: tuple[int, ...]
    recipients: tuple[int, ...]  # ascending, each once


@dataclass(frozen=True, slots=True)
class ProfileNotice:
    """An avatar or sign-info change, for the route servers to batch to the user's watchers."""

    user_id: int
    command_id: int  # AVATAR_CHANGED_NOTIFY / SIGN_INFO_CHANGED_NOTIFY
    body: bytes  # the serialised notify


@dataclass(frozen=True, slots=True)
class UsersGone:
    """Users deleted, or changed in what a login checks (password, disabled): every other
    db_proxy drops them from its caches (known users, the login's kept rows)."""

    user_ids: tuple[int, ...]


Notice = GroupNotice | ProfileNotice | UsersGone


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    result: T
    notices: tuple[Notice, ...] = ()
