"""Service 0x06: peer-to-peer commands (typing notices and the like)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.codec import Frame
from common.commands import Cmd
from common.pb import other_pb2
from msg_server.handlers.base import Handler, deliver

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway


async def p2p(gw: Gateway, conn: ClientConnection, frame: Frame, msg: other_pb2.IMP2PCmdMsg) -> None:
    """Relayed to the peer's connections only, nothing stored: it is ephemeral."""
    msg.from_user_id = conn.user_id
    if msg.to_user_id:
        deliver(gw, conn, [msg.to_user_id], Cmd.P2P_CMD, msg, skip_self=False)


COMMANDS: dict[int, Handler] = {Cmd.P2P_CMD: p2p}
