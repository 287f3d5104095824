"""What every gateway-facing handler of db_proxy shares: refusals and reply parts.

The gateway has already authenticated the user and overwritten every
``user_id`` in a request with it, so handlers trust ``user_id`` and nothing
else the client chose.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from common.errors import ImError
from common.pb import base_pb2
from db_proxy.storage.model import StoredMessage, User, is_text

FAILED = 1  # result_code of a refused change in TeamTalk's replies

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refused:
    """A change refused through the caller's own fault, and why."""

    reason: str


async def unless_refused(operation: Awaitable[T]) -> T | Refused:
    """The result of ``operation``, or :class:`Refused` when the caller is at fault.

    For the commands whose TeamTalk reply has a result_code: a value too
    long or not UTF-8, a group the user is not in, no such group... is the
    caller's fault (an ImError with ``server_fault`` False) and the reply
    says FAILED. A server fault (storage down, a bug) propagates: the
    gateway answers for it as for any failed request.
    """
    try:
        return await operation
    except ImError as exc:
        if exc.server_fault:
            raise
        return Refused(exc.message)


def result_code(outcome: object) -> int:
    """0, or FAILED for an outcome of :func:`unless_refused` that was refused."""
    return FAILED if isinstance(outcome, Refused) else 0


def echo(value: str) -> str:
    """A client's string to repeat in a reply: only if it is text.

    A proto2 string holding invalid UTF-8 arrives as bytes (the stubs say
    str), and protobuf will not put it in a reply.
    """
    return value if is_text(value) else ""


def user_info(user: User) -> base_pb2.UserInfo:
    """A user as TeamTalk's db_proxy describes it: ``user_real_name`` is the
    login name (its ``name`` column), ``user_nick_name`` the display name,
    ``user_domain`` the search key (stored; see db_proxy.names)."""
    return base_pb2.UserInfo(
        user_id=user.id,
        user_gender=user.gender,
        user_nick_name=user.nick or user.name,
        avatar_url=user.avatar,
        department_id=user.department_id,
        email=user.email,
        user_real_name=user.name,
        user_tel=user.tel,
        # Stored for every user since migration 4; the login name is the key
        # of a row that has none yet (set by hand, or read mid-upgrade).
        user_domain=user.domain or user.name,
        status=user.status,
        sign_info=user.sign_info,
    )


def msg_info(message: StoredMessage) -> base_pb2.MsgInfo:
    return base_pb2.MsgInfo(
        msg_id=message.msg_id,
        from_session_id=message.from_user_id,
        create_time=message.create_time,
        msg_type=base_pb2.MsgType.ValueType(message.msg_type),
        msg_data=message.msg_data,
    )
