"""Service 0x06: peer-to-peer commands (typing notices and the like)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.commands import Cmd
from common.pb import other_pb2
from msg_server.handlers.base import deliver, nonzero, text
from msg_server.handlers.table import Client, ClientCommands

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

P2P_DATA_LIMIT = 16 * 1024  # characters: a typing notice is a few dozen


async def p2p(gw: Gateway, conn: ClientConnection, msg: other_pb2.IMP2PCmdMsg) -> None:
    """Relayed to the peer's connections only, nothing stored: it is ephemeral."""
    nonzero(msg.to_user_id, "to user id")
    text(msg.cmd_msg_data, "p2p data", P2P_DATA_LIMIT)
    msg.from_user_id = conn.user_id
    deliver(gw, conn, [msg.to_user_id], Cmd.P2P_CMD, msg, skip_self=False)


COMMANDS = ClientCommands().notice(Client.P2P_CMD, p2p)
