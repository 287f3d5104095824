"""``GET /admin/v1/online``: the route servers' sessions, with who each user is.

The route servers know ids only; the names and nicks come from db_proxy in
one ``users.names`` call per batch of ids (not one call per user). Without
them (a db_proxy down, or one older than the method) the sessions are still
answered, with a ``warning`` saying why the names are missing.
"""

from __future__ import annotations

import logging
from typing import Any

from common.errors import ImError
from login_server.admin.backends import DB_PROXY, ROUTE_SERVER, Backends

log = logging.getLogger("login_server.admin")

NAMES_BATCH = 5000  # db_proxy's users.names answers at most this many ids a call


async def user_names(backends: Backends, ids: list[int]) -> dict[int, dict[str, Any]]:
    """``{"id", "name", "nick"}`` of each of ``ids`` that is a user (not deleted), by id:
    one ``users.names`` call per NAMES_BATCH ids. Raises what the call raised."""
    wanted = sorted(set(ids))
    users: dict[int, dict[str, Any]] = {}
    for start in range(0, len(wanted), NAMES_BATCH):
        answer = await backends.call(DB_PROXY, "users.names", {"ids": wanted[start : start + NAMES_BATCH]})
        users.update({u["id"]: u for u in answer.get("users", [])})
    return users


async def online_sessions(backends: Backends) -> dict[str, Any]:
    result = await backends.call(ROUTE_SERVER, "online", {})
    sessions: list[dict[str, Any]] = result.get("sessions") or []
    users: dict[int, dict[str, Any]] = {}
    try:
        users = await user_names(backends, [s["user_id"] for s in sessions if type(s.get("user_id")) is int])
    except ImError as exc:
        log.warning("online: user names not looked up: %s", exc)
        result = {**result, "warning": f"user names not shown: {exc}"}
    for session in sessions:
        user = users.get(session.get("user_id", 0), {})
        session["name"], session["nick"] = user.get("name"), user.get("nick")
    return result
