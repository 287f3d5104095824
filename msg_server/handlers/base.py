"""What every client-command handler shares."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from common.codec import Frame
from common.link import LinkDown, RemoteError
from common.metrics import ERRORS
from common.pb import internal_pb2

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

Handler = Callable[["Gateway", "ClientConnection", Frame, Any], Awaitable[None]]
After = Callable[["Gateway", "ClientConnection", Any, Any], None]
UPSTREAM_ERRORS = (LinkDown, RemoteError, TimeoutError)


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
    broadcast: bool = False,
) -> None:
    """Push a frame to users' connections on any gateway (via route_server)."""
    push = internal_pb2.RouteDeliver(
        user_ids=user_ids, command_id=command_id, body=message.SerializeToString(), broadcast=broadcast
    )
    if skip_self:
        push.origin.CopyFrom(conn.origin())
    gw.route(push)


def by_user(conn: ClientConnection, req: Any) -> object:
    """Which db_proxy serves a request about the user itself."""
    return conn.user_id


def forward_to_db(
    reply_command: int,
    after: After | None = None,
    prepare: Callable[[ClientConnection, Any], None] | None = None,
    key: Callable[[ClientConnection, Any], object] = by_user,
) -> Handler:
    """A command db_proxy answers with the client's own response message.

    The request's ``user_id`` becomes the logged-in user: a client can ask
    only about itself. ``prepare`` may fill in more from the connection;
    ``key`` picks the db_proxy (reads of a conversation go where its writes
    go); ``after`` runs once the answer is sent (notifications).
    """

    async def handler(gw: Gateway, conn: ClientConnection, frame: Frame, req: Any) -> None:
        req.user_id = conn.user_id
        if prepare is not None:
            prepare(conn, req)
        try:
            command, res = await gw.db_request(key(conn, req), frame.command_id, req)
        except UPSTREAM_ERRORS as exc:
            ERRORS.labels("upstream").inc()
            conn.log.warning("0x%04x failed upstream: %s", frame.command_id, exc)
            return
        if command != reply_command:
            conn.log.error("db_proxy answered 0x%04x with 0x%04x", frame.command_id, command)
            return
        conn.send(command, res, frame.seq_num)
        if after is not None:
            after(gw, conn, req, res)

    return handler
