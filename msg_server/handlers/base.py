"""What every client-command handler shares, and the client-reply boundary.

Handlers and db_proxy raise the taxonomy of :mod:`common.errors`;
:func:`client_error` is the one place that decides what a refused request
costs: the result code its reply carries (each command's table entry builds
that reply), the log line, the metric. Bad client input is the client's
fault: logged at INFO at most once a second per connection, never with a
traceback. A dependency that is down or full is logged at WARNING at most
once a second per kind for the whole gateway. Only a bug logs at ERROR, and
only an exception outside the taxonomy (raised here) carries a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from google.protobuf.message import Message

from common.commands import Cmd
from common.conversation import ShardKey
from common.errors import (
    Conflict,
    Forbidden,
    ImError,
    InvalidArgument,
    NotFound,
    Overloaded,
    Unavailable,
    describe,
)
from common.pb import base_pb2, buddy_pb2, group_pb2, internal_pb2, login_pb2, message_pb2
from common.rpc import ResT, Rpc
from common.throttle import Throttle
from msg_server.handlers.table import Handler
from msg_server.metrics import REFUSED

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

log = logging.getLogger("client")

LOG_INTERVAL = 1.0  # seconds between two lines about refused requests (per connection, or per kind)
FAILED = 1  # TeamTalk's result_code for "did not work"; clients test only for non-zero

# -- the client-reply boundary ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientError:
    """What a refused request's reply and log line say."""

    kind: str  # the metric label: invalid_argument, not_found, ..., unavailable, bug
    caller_fault: bool
    level: int  # of the log line
    traceback: bool
    result_code: int  # for replies with a 0 (ok) / non-zero result_code
    login_code: base_pb2.ResultType.ValueType  # for IMLoginRes
    text: str  # what the client may read (result_string); never a bug's internals


_CALLER_FAULTS: tuple[tuple[type[ImError], str], ...] = (
    (InvalidArgument, "invalid_argument"),
    (NotFound, "not_found"),
    (Conflict, "conflict"),
    (Forbidden, "forbidden"),
)


def client_error(exc: BaseException) -> ClientError:
    """The client boundary's mapping of the error taxonomy (the only one)."""
    for cls, kind in _CALLER_FAULTS:
        if isinstance(exc, cls):
            return ClientError(
                kind,
                caller_fault=True,
                level=logging.INFO,
                traceback=False,
                result_code=FAILED,
                login_code=base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED,
                text=describe(exc),
            )
    for cls, kind in ((Unavailable, "unavailable"), (Overloaded, "overloaded")):
        if isinstance(exc, cls):
            return ClientError(
                kind,
                caller_fault=False,
                level=logging.WARNING,
                traceback=False,
                result_code=FAILED,
                login_code=base_pb2.REFUSE_REASON_NO_DB_SERVER,
                text="service unavailable; try again",
            )
    # A Bug from a peer was logged with its traceback where it happened; an
    # exception outside the taxonomy happened here, and its traceback is ours.
    return ClientError(
        "bug",
        caller_fault=False,
        level=logging.ERROR,
        traceback=not isinstance(exc, ImError),
        result_code=FAILED,
        login_code=base_pb2.REFUSE_REASON_NO_DB_SERVER,
        text="internal error; try again",
    )


_THROTTLES: dict[str, Throttle] = {}  # gateway-wide, per kind of server-side failure


def refuse(conn: ClientConnection, command: int, exc: BaseException) -> ClientError:
    """Count and log a refused request; what its reply should say."""
    err = client_error(exc)
    name = command_name(command)
    REFUSED.labels(name, err.kind).inc()
    throttle = _throttle(conn, err, name)
    if throttle.ready():
        conn.log.log(
            err.level,
            "%s refused (%s): %s%s",
            name,
            err.kind,
            describe(exc) if isinstance(exc, ImError) else repr(exc),
            throttle.more(),
            exc_info=exc if err.traceback else None,
        )
    else:
        conn.log.debug("%s refused (%s): %s", name, err.kind, exc)
    return err


def _throttle(conn: ClientConnection, err: ClientError, name: str) -> Throttle:
    if err.caller_fault:
        if conn.refusal_log is None:
            conn.refusal_log = Throttle(LOG_INTERVAL)
        return conn.refusal_log
    # Bugs per command, so that one flooding the log does not hide another.
    key = f"bug {name}" if err.kind == "bug" else err.kind
    return _THROTTLES.setdefault(key, Throttle(LOG_INTERVAL))


def command_name(command: int) -> str:
    try:
        return Cmd(command).name.lower()
    except ValueError:
        return f"0x{command:04x}"


# -- helpers ---------------------------------------------------------------------


def now() -> int:
    return int(time.time())


def deliver(
    gw: Gateway,
    conn: ClientConnection,
    user_ids: list[int],
    command_id: int,
    message: Message,
    *,
    skip_self: bool = True,
) -> None:
    """Push a frame to users' connections on any gateway (via route_server)."""
    push = internal_pb2.RouteDeliver(
        user_ids=user_ids, command_id=command_id, body=message.SerializeToString()
    )
    if skip_self:
        push.origin.CopyFrom(conn.origin())
    gw.route(push)


def text(value: object, field: str, limit: int) -> str:
    """A string field as a str, or InvalidArgument.

    protobuf hands a proto2 string field that holds invalid UTF-8 back as
    ``bytes`` (whatever the stubs say); storage limits are in characters.
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} is not valid UTF-8")
    if len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters")
    return value


def echo(value: object) -> str:
    """A string field of a request, fit to be echoed in a reply ("" if it is not UTF-8)."""
    return value if isinstance(value, str) else ""


SESSION_TYPES = frozenset({base_pb2.SESSION_TYPE_SINGLE, base_pb2.SESSION_TYPE_GROUP})


def session(session_type: int, session_id: int) -> None:
    """A session a client names: a known type and a peer or group id."""
    if session_type not in SESSION_TYPES:
        raise InvalidArgument(f"unknown session type {session_type}")
    if session_id == 0:
        raise InvalidArgument("session id 0")


def nonzero(value: int, field: str) -> None:
    if value == 0:
        raise InvalidArgument(f"{field} is 0")


def no_zero_ids(values: Iterable[int], field: str) -> None:
    """User or group ids a client names: none may be 0."""
    if 0 in values:
        raise InvalidArgument(f"{field} has id 0")


# -- commands db_proxy answers -------------------------------------------------------

#: The client requests db_proxy answers with the client's own reply; each
#: names its sender in ``user_id``, which the gateway overwrites.
OwnRequest = (
    login_pb2.IMDeviceTokenReq
    | login_pb2.IMPushShieldReq
    | login_pb2.IMQueryPushShieldReq
    | buddy_pb2.IMRecentContactSessionReq
    | buddy_pb2.IMUsersInfoReq
    | buddy_pb2.IMRemoveSessionReq
    | buddy_pb2.IMAllUserReq
    | buddy_pb2.IMChangeAvatarReq
    | buddy_pb2.IMDepartmentReq
    | buddy_pb2.IMChangeSignInfoReq
    | message_pb2.IMUnreadMsgCntReq
    | message_pb2.IMGetMsgListReq
    | message_pb2.IMGetLatestMsgIdReq
    | message_pb2.IMGetMsgByIdReq
    | group_pb2.IMNormalGroupListReq
    | group_pb2.IMGroupInfoListReq
    | group_pb2.IMGroupCreateReq
    | group_pb2.IMGroupChangeMemberReq
    | group_pb2.IMGroupShieldReq
)
OwnReqT = TypeVar("OwnReqT", bound=OwnRequest)
After = Callable[["Gateway", "ClientConnection", OwnReqT, ResT], None]


def by_user(conn: ClientConnection, req: Message) -> ShardKey:
    """Which db_proxy serves a request about the user itself."""
    return conn.user_id


def forward_to_db(
    rpc: Rpc[OwnReqT, ResT],
    *,
    check: Callable[[OwnReqT], None] | None = None,
    key: Callable[[ClientConnection, OwnReqT], ShardKey] = by_user,
    after: After[OwnReqT, ResT] | None = None,
) -> Handler[OwnReqT, ResT]:
    """A command db_proxy answers with the client's own reply message.

    The request's ``user_id`` becomes the logged-in user: a client can ask
    only about itself. ``check`` refuses what the gateway can tell is bad
    without asking (raises InvalidArgument); ``key`` picks the db_proxy
    (reads of a conversation go where its writes go); ``after`` runs with
    the answer (notifications).
    """

    async def handler(gw: Gateway, conn: ClientConnection, req: OwnReqT) -> ResT:
        req.user_id = conn.user_id
        if check is not None:
            check(req)
        res = await gw.db_call(key(conn, req), rpc, req)
        if after is not None:
            after(gw, conn, req, res)
        return res

    return handler


WrappedT = TypeVar("WrappedT", bound=Message)
_InnerT = TypeVar("_InnerT", bound=OwnRequest, contravariant=True)
_OuterT = TypeVar("_OuterT", bound=Message, covariant=True)


class Wrap(Protocol[_InnerT, _OuterT]):
    """A request with the connection it came from (DbGroupCreateReq and the like)."""

    def __call__(self, *, origin: internal_pb2.Origin, req: _InnerT) -> _OuterT: ...


def forward_with_origin(
    rpc: Rpc[WrappedT, ResT],
    wrap: Wrap[OwnReqT, WrappedT],
    *,
    check: Callable[[OwnReqT], None] | None = None,
) -> Handler[OwnReqT, ResT]:
    """A change db_proxy announces itself (group members, avatar, sign info).

    As :func:`forward_to_db`, with the request wrapped with the connection it
    came from: db_proxy builds and pushes the notices (the same code as for an
    admin's change) and skips only this connection, which has its reply.
    """

    async def handler(gw: Gateway, conn: ClientConnection, req: OwnReqT) -> ResT:
        req.user_id = conn.user_id
        if check is not None:
            check(req)
        return await gw.db_call(by_user(conn, req), rpc, wrap(origin=conn.origin(), req=req))

    return handler
