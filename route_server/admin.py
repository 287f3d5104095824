"""Admin methods served by route_server (see docs/admin-api.md): who is
online, kicking a user, and this process's status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.admin import AdminMethod
from common.errors import InvalidArgument
from common.pb import base_pb2

if TYPE_CHECKING:
    from route_server.server import RouteServer

# TeamTalk has no kick reason for "an administrator did it"; its clients
# know these two, and "duplicate user" makes them stop rather than reconnect
# at once as they would after a dropped connection.
ADMIN_KICK_REASON = base_pb2.KICK_REASON_DUPLICATE_USER


class RouteAdmin:
    def __init__(self, server: RouteServer) -> None:
        self.server = server

    def methods(self) -> dict[str, AdminMethod]:
        return {"online": self.online, "kick": self.kick, "status": self.status}

    async def online(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = sorted(
            self.server.table.all_sessions(),
            key=lambda entry: (entry[0], entry[1].gateway_id, entry[1].conn_id),
        )
        return {
            "sessions": [
                {
                    "user_id": user_id,
                    "gateway": s.gateway_id,
                    "conn_id": s.conn_id,
                    "client_type": s.client_type,
                    "status": s.status,
                    "since": s.since,
                }
                for user_id, s in entries
            ]
        }

    async def kick(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args.get("user_id")
        # ASCII digits only, and few: int() fails on "²" (a digit) and on
        # thousands of digits.
        if isinstance(user_id, str) and 0 < len(user_id) <= 10 and user_id.isascii() and user_id.isdigit():
            user_id = int(user_id)
        if type(user_id) is not int or not 0 < user_id < 2**32:
            raise InvalidArgument("kick needs a user_id (a positive integer)")
        return {"kicked": self.server.kick_user(user_id, ADMIN_KICK_REASON)}

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        table = self.server.table
        gateways = sorted(set(self.server.gateway_links) | set(table.gateways()))
        return {
            "node_id": self.server.config.node_id,
            "gateways": [{"node_id": g, "sessions": table.session_count(g)} for g in gateways],
            "online_users": table.online_users,
        }
