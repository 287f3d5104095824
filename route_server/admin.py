"""Admin methods served by route_server (see docs/admin-api.md): who is
online, kicking a user, and this process's status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.admin import AdminMethod

if TYPE_CHECKING:
    from route_server.server import RouteServer


class RouteAdmin:
    def __init__(self, server: RouteServer) -> None:
        self.server = server

    def methods(self) -> dict[str, AdminMethod]:
        return {}
