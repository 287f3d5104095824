"""The admin operations, apart from any transport.

Each method is one thing an administrator can do, taking plain arguments and
returning the result dict. The HTTP API (login_server/admin/api.py) and the
web console (login_server/console/) both call these and nothing else, so a
rule (disabling a user kicks its sessions, a kick resolves the user first,
a send names exactly one target) lives in one place.

Each is a thin translation into one AdminCall (or two), so the servers that
own the data validate it, and a change reaches connected clients by the same
code paths as a client's change. Results are the internal methods' results,
unchanged. Errors are those of common/errors.py, raised as the servers
raised them; each caller maps them once (an HTTP status, a message on a page).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from common.errors import ImError, InvalidArgument
from login_server.admin.backends import DB_PROXY, ROUTE_SERVER, Answer, Backends
from login_server.admin.online import online_sessions, user_names
from login_server.balancer import Balancer

log = logging.getLogger("login_server.admin")

IMPORT_MAX_ROWS = 1000
# Importing hashes every password (scrypt, ~50 ms each at the default cost,
# on db_proxy's few hashing threads): a full chunk takes tens of seconds.
IMPORT_TIMEOUT = 120.0
STATUS_TIMEOUT = 3.0  # status is for humans watching: a slow server shows as unreachable
LOOKUP_LIMIT = 200  # users looked up by id for one page (online, group members)

UserRef = int | str


class AdminOps:
    """Every admin operation, over the backends and this login_server's balancer."""

    def __init__(self, backends: Backends, balancer: Balancer) -> None:
        self.backends = backends
        self.balancer = balancer
        self.started_at = time.time()

    async def _db(self, method: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if timeout is None:
            return await self.backends.call(DB_PROXY, method, args)
        return await self.backends.call(DB_PROXY, method, args, timeout)

    # -- users -------------------------------------------------------------------

    async def create_user(self, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._db("users.create", fields)

    async def list_users(self, offset: int = 0, limit: int = 50, search: str = "") -> dict[str, Any]:
        return await self._db("users.list", {"offset": offset, "limit": limit, "search": search})

    async def show_user(self, user: UserRef) -> dict[str, Any]:
        return await self._db("users.show", {"user": user})

    async def update_user(self, user: UserRef, fields: dict[str, Any]) -> dict[str, Any]:
        if not fields:
            raise InvalidArgument("nothing to change: send the fields to set")
        return await self._db("users.update", {"user": user, "fields": fields})

    async def set_password(self, user: UserRef, password: Any) -> dict[str, Any]:
        return await self._db("users.passwd", {"user": user, "password": password})

    async def disable_user(self, user: UserRef) -> dict[str, Any]:
        return await self._kick_sessions(await self._db("users.disable", {"user": user}))

    async def enable_user(self, user: UserRef) -> dict[str, Any]:
        return await self._db("users.enable", {"user": user})

    async def unlock_user(self, user: UserRef) -> dict[str, Any]:
        return await self._db("users.unlock", {"user": user})

    async def delete_user(self, user: UserRef) -> dict[str, Any]:
        return await self._kick_sessions(await self._db("users.delete", {"user": user}))

    async def _kick_sessions(self, result: dict[str, Any]) -> dict[str, Any]:
        """Close the sessions of the user in ``result`` (just disabled or deleted).

        The change itself is done and stays done, so a failing kick is not
        an error (a retried delete would only answer 404): the answer says
        ``kicked: null`` and why.
        """
        user_id = (result.get("user") or {}).get("id")
        try:
            kicked = await self.backends.call(ROUTE_SERVER, "kick", {"user_id": user_id})
        except ImError as exc:
            log.warning("user %s changed but its sessions were not kicked: %s", user_id, exc)
            return {**result, "kicked": None, "warning": f"its sessions were not closed: {exc}"}
        return {**result, "kicked": kicked.get("kicked", 0)}

    async def import_users(self, rows: Any) -> dict[str, Any]:
        if not isinstance(rows, list):
            raise InvalidArgument("rows must be a list")
        if len(rows) > IMPORT_MAX_ROWS:
            raise InvalidArgument(f"at most {IMPORT_MAX_ROWS} rows a request, got {len(rows)}")
        return await self._db("users.import", {"rows": rows}, IMPORT_TIMEOUT)

    async def users_by_id(self, ids: list[int]) -> dict[int, dict[str, Any] | None]:
        """Name and nick of the users of a page (at most LOOKUP_LIMIT ids), by
        id, in one db_proxy call; None for one that is gone (deleted since)."""
        wanted = list(dict.fromkeys(ids))
        if len(wanted) > LOOKUP_LIMIT:
            raise InvalidArgument(f"at most {LOOKUP_LIMIT} users at once, got {len(wanted)}")
        found = await user_names(self.backends, wanted)
        return {user_id: found.get(user_id) for user_id in wanted}

    # -- departments -----------------------------------------------------------------

    async def list_departments(self) -> dict[str, Any]:
        return await self._db("depts.list", {})

    async def create_department(self, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._db("depts.create", fields)

    async def update_department(self, dept_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._db("depts.update", {**fields, "id": dept_id})

    async def delete_department(self, dept_id: int) -> dict[str, Any]:
        return await self._db("depts.delete", {"id": dept_id})

    # -- groups ---------------------------------------------------------------------

    async def list_groups(self, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        return await self._db("groups.list", {"offset": offset, "limit": limit})

    async def create_group(self, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._db("groups.create", fields)

    async def show_group(self, group_id: int) -> dict[str, Any]:
        return await self._db("groups.show", {"id": group_id})

    async def dismiss_group(self, group_id: int) -> dict[str, Any]:
        return await self._db("groups.dismiss", {"id": group_id})

    async def change_members(self, group_id: int, add: Any = None, remove: Any = None) -> dict[str, Any]:
        # Passed on as given: db_proxy checks that each is a list of users.
        args = {"id": group_id, "add": [] if add is None else add, "remove": [] if remove is None else remove}
        return await self._db("groups.members", args)

    # -- the live cluster -------------------------------------------------------------

    async def online(self) -> dict[str, Any]:
        return await online_sessions(self.backends)

    async def kick(self, user: Any) -> dict[str, Any]:
        if user in (None, ""):
            raise InvalidArgument("user is required")
        # Resolved first so that an unknown user is a 404, not "0 kicked".
        found = (await self.show_user(user))["user"]
        kicked = await self.backends.call(ROUTE_SERVER, "kick", {"user_id": found["id"]})
        return {"user": found, "kicked": kicked.get("kicked", 0)}

    async def send(self, sender: Any, text: Any, to_user: Any = None, to_group: Any = None) -> dict[str, Any]:
        targets = {k: v for k, v in (("to_user", to_user), ("to_group", to_group)) if v not in (None, "")}
        if len(targets) != 1:
            raise InvalidArgument("give exactly one of to_user and to_group")
        if not isinstance(text, str) or not text:
            raise InvalidArgument("text must be a non-empty string")
        if sender in (None, ""):
            raise InvalidArgument('from is required (a user, or "system")')
        # Only the target given: db_proxy refuses a call naming both, even if one is null.
        return await self._db("send", {"from": sender, "text": text, **targets})

    async def status(self) -> dict[str, Any]:
        now, wall = time.monotonic(), time.time()
        gateways = [
            {
                "node_id": g.node_id,
                "address": g.prior_ip,
                "port": g.port,
                "connections": g.connections,
                "max_connections": g.max_connections,
                "uptime": g.uptime(now, wall),
            }
            for g in self.balancer.gateways()
        ]
        routes, dbs = await asyncio.gather(
            self.backends.call_each(ROUTE_SERVER, "status", {}, STATUS_TIMEOUT),
            self.backends.call_each(DB_PROXY, "status", {}, STATUS_TIMEOUT),
        )
        return {
            "login_server": {"uptime": max(0, round(wall - self.started_at))},
            "gateways": gateways,
            "connections": sum(g["connections"] for g in gateways),
            "route_servers": [_server_status(a) for a in routes],
            "db_proxies": [_server_status(a) for a in dbs],
        }


def _server_status(answer: Answer) -> dict[str, Any]:
    roles = {"roles": list(answer.roles)} if answer.roles else {}
    if answer.result is not None:
        return {**answer.result, **roles, "address": answer.address, "status": "ok"}
    state = "unreachable" if not answer.reachable else "error"
    return {"address": answer.address, "status": state, "error": answer.error, **roles}
