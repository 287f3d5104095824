"""The admin HTTP API, ``/admin/v1`` (docs/admin-api.md).

Each endpoint is a thin translation of HTTP into one AdminCall (or two:
disabling or deleting a user also kicks its sessions through a
route_server), so the servers that own the data validate it, and a change
reaches connected clients by the same code paths as a client's change.
Bodies answered are the internal methods' results, unchanged.

The API exists only when ``login_server.admin_token`` is set; then every
``/admin/...`` request needs ``Authorization: Bearer <token>``, checked
before anything else so that nothing (not even which paths exist) is
visible without it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

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
from common.throttle import Throttle
from login_server.admin.backends import DB_PROXY, ROUTE_SERVER, Answer, Backends
from login_server.admin.export import export_routes
from login_server.balancer import Balancer

log = logging.getLogger("login_server.admin")

PREFIX = "/admin/v1"
IMPORT_MAX_ROWS = 1000
# Importing hashes every password (scrypt, ~50 ms each at the default cost,
# on db_proxy's few hashing threads): a full chunk takes tens of seconds.
IMPORT_TIMEOUT = 120.0
STATUS_TIMEOUT = 3.0  # /status is for humans watching: a slow server shows as unreachable
AUTH_LOG_INTERVAL = 10.0  # seconds; someone guessing tokens

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_status(exc: BaseException) -> int:
    """The admin HTTP boundary's mapping of the error taxonomy (the only one)."""
    if isinstance(exc, InvalidArgument):
        return 400
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, Unavailable | Overloaded):
        return 503
    return 500  # Bug, or anything outside the taxonomy


def error_response(status: int, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response({"error": message}, status=status, headers=headers)


def map_error(exc: Exception) -> web.Response:
    """The HTTP answer for an exception out of an endpoint."""
    status = http_status(exc)
    if status != 500:
        return error_response(status, describe(exc))
    # An unexpected failure: its text (SQL, a traceback's last line) is for
    # the log, not for API clients. A Bug from a server was logged with its
    # traceback there; anything else happened here.
    if isinstance(exc, ImError):
        log.warning("admin call failed inside a server: %s", exc)
    else:
        log.error("admin request failed", exc_info=exc)
    return error_response(500, "internal server error (see the server logs)")


def authorized(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode(), token.encode())


def admin_middleware(token: str) -> Middleware:
    failures = Throttle(AUTH_LOG_INTERVAL)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path == "/admin" or request.path.startswith("/admin/")):
            return await handler(request)
        if not authorized(request.headers.get("Authorization", ""), token):
            if failures.ready():
                log.warning(
                    "admin API: refused %s %s from %s%s",
                    request.method,
                    request.path,
                    request.remote,
                    failures.more(),
                )
            return error_response(401, "unauthorized")
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own: no such route, method not allowed
            response = error_response(exc.status, exc.reason.lower())
        except Exception as exc:
            response = map_error(exc)
        if request.method != "GET":
            # The audit trail of administrative changes.
            log.info("admin %s %s from %s: %d", request.method, request.path, request.remote, response.status)
        return response

    return guard


def user_ref(value: str) -> int | str:
    """A user in a path: an id if it is all digits, else a login name."""
    return int(value) if value.isdecimal() else value


def _path_id(request: web.Request, key: str = "id") -> int:
    value = request.match_info[key]
    if not value.isdecimal():
        raise InvalidArgument(f"{key} must be a number, got {value!r}")
    return int(value)


def _query_int(request: web.Request, key: str, default: int) -> int:
    value = request.query.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f"{key} must be an integer, got {value!r}") from None


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        value = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("the body must be a JSON object")
    return value


def _json(value: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(value, status=status)


class AdminApi:
    """The endpoints; each method is one aiohttp handler."""

    def __init__(self, backends: Backends, balancer: Balancer) -> None:
        self.backends = backends
        self.balancer = balancer
        self.started_at = time.time()

    def routes(self) -> list[web.RouteDef]:
        p = PREFIX
        return [
            web.post(f"{p}/users", self.create_user),
            web.get(f"{p}/users", self.list_users),
            web.post(f"{p}/users/import", self.import_users),
            web.get(f"{p}/users/{{user}}", self.show_user),
            web.patch(f"{p}/users/{{user}}", self.update_user),
            web.delete(f"{p}/users/{{user}}", self.delete_user),
            web.post(f"{p}/users/{{user}}/password", self.set_password),
            web.post(f"{p}/users/{{user}}/disable", self.disable_user),
            web.post(f"{p}/users/{{user}}/enable", self.enable_user),
            web.post(f"{p}/users/{{user}}/unlock", self.unlock_user),
            web.get(f"{p}/departments", self.list_departments),
            web.post(f"{p}/departments", self.create_department),
            web.patch(f"{p}/departments/{{id}}", self.update_department),
            web.delete(f"{p}/departments/{{id}}", self.delete_department),
            web.get(f"{p}/groups", self.list_groups),
            web.post(f"{p}/groups", self.create_group),
            web.get(f"{p}/groups/{{id}}", self.show_group),
            web.delete(f"{p}/groups/{{id}}", self.dismiss_group),
            web.post(f"{p}/groups/{{id}}/members", self.change_members),
            web.get(f"{p}/online", self.online),
            web.post(f"{p}/kick", self.kick),
            web.post(f"{p}/messages", self.send),
            web.get(f"{p}/status", self.status),
        ]

    async def _db(self, method: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if timeout is None:
            return await self.backends.call(DB_PROXY, method, args)
        return await self.backends.call(DB_PROXY, method, args, timeout)

    # -- users -------------------------------------------------------------------

    async def create_user(self, request: web.Request) -> web.Response:
        return _json(await self._db("users.create", await _body(request)), 201)

    async def list_users(self, request: web.Request) -> web.Response:
        args = {
            "offset": _query_int(request, "offset", 0),
            "limit": _query_int(request, "limit", 50),
            "search": request.query.get("search", ""),
        }
        return _json(await self._db("users.list", args))

    async def show_user(self, request: web.Request) -> web.Response:
        return _json(await self._db("users.show", {"user": user_ref(request.match_info["user"])}))

    async def update_user(self, request: web.Request) -> web.Response:
        fields = await _body(request)
        if not fields:
            raise InvalidArgument("nothing to change: send the fields to set")
        args = {"user": user_ref(request.match_info["user"]), "fields": fields}
        return _json(await self._db("users.update", args))

    async def set_password(self, request: web.Request) -> web.Response:
        body = await _body(request)
        args = {"user": user_ref(request.match_info["user"]), "password": body.get("password")}
        return _json(await self._db("users.passwd", args))

    async def disable_user(self, request: web.Request) -> web.Response:
        result = await self._db("users.disable", {"user": user_ref(request.match_info["user"])})
        return _json(await self._kick_sessions(result))

    async def enable_user(self, request: web.Request) -> web.Response:
        return _json(await self._db("users.enable", {"user": user_ref(request.match_info["user"])}))

    async def unlock_user(self, request: web.Request) -> web.Response:
        return _json(await self._db("users.unlock", {"user": user_ref(request.match_info["user"])}))

    async def delete_user(self, request: web.Request) -> web.Response:
        result = await self._db("users.delete", {"user": user_ref(request.match_info["user"])})
        return _json(await self._kick_sessions(result))

    async def _kick_sessions(self, result: dict[str, Any]) -> dict[str, Any]:
        """Close the sessions of the user in ``result`` (just disabled or deleted).

        The change itself is done and stays done, so a failing kick is not
        an error status (a retried delete would only answer 404): the answer
        says ``kicked: null`` and why.
        """
        user_id = (result.get("user") or {}).get("id")
        try:
            kicked = await self.backends.call(ROUTE_SERVER, "kick", {"user_id": user_id})
        except ImError as exc:
            log.warning("user %s changed but its sessions were not kicked: %s", user_id, exc)
            return {**result, "kicked": None, "warning": f"its sessions were not closed: {exc}"}
        return {**result, "kicked": kicked.get("kicked", 0)}

    async def import_users(self, request: web.Request) -> web.Response:
        rows = (await _body(request)).get("rows")
        if not isinstance(rows, list):
            raise InvalidArgument("rows must be a list")
        if len(rows) > IMPORT_MAX_ROWS:
            raise InvalidArgument(f"at most {IMPORT_MAX_ROWS} rows a request, got {len(rows)}")
        return _json(await self._db("users.import", {"rows": rows}, IMPORT_TIMEOUT))

    # -- departments -----------------------------------------------------------------

    async def list_departments(self, request: web.Request) -> web.Response:
        return _json(await self._db("depts.list", {}))

    async def create_department(self, request: web.Request) -> web.Response:
        return _json(await self._db("depts.create", await _body(request)), 201)

    async def update_department(self, request: web.Request) -> web.Response:
        args = {**(await _body(request)), "id": _path_id(request)}
        return _json(await self._db("depts.update", args))

    async def delete_department(self, request: web.Request) -> web.Response:
        return _json(await self._db("depts.delete", {"id": _path_id(request)}))

    # -- groups ---------------------------------------------------------------------

    async def list_groups(self, request: web.Request) -> web.Response:
        args = {"offset": _query_int(request, "offset", 0), "limit": _query_int(request, "limit", 50)}
        return _json(await self._db("groups.list", args))

    async def create_group(self, request: web.Request) -> web.Response:
        return _json(await self._db("groups.create", await _body(request)), 201)

    async def show_group(self, request: web.Request) -> web.Response:
        return _json(await self._db("groups.show", {"id": _path_id(request)}))

    async def dismiss_group(self, request: web.Request) -> web.Response:
        return _json(await self._db("groups.dismiss", {"id": _path_id(request)}))

    async def change_members(self, request: web.Request) -> web.Response:
        body = await _body(request)
        args = {"id": _path_id(request), "add": body.get("add", []), "remove": body.get("remove", [])}
        return _json(await self._db("groups.members", args))

    # -- the live cluster -------------------------------------------------------------

    async def online(self, request: web.Request) -> web.Response:
        return _json(await self.backends.call(ROUTE_SERVER, "online", {}))

    async def kick(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body.get("user") in (None, ""):
            raise InvalidArgument("user is required")
        # Resolved first so that an unknown user is a 404, not "0 kicked".
        user = (await self._db("users.show", {"user": body["user"]}))["user"]
        kicked = await self.backends.call(ROUTE_SERVER, "kick", {"user_id": user["id"]})
        return _json({"user": user, "kicked": kicked.get("kicked", 0)})

    async def send(self, request: web.Request) -> web.Response:
        body = await _body(request)
        targets = [key for key in ("to_user", "to_group") if body.get(key) not in (None, "")]
        if len(targets) != 1:
            raise InvalidArgument("give exactly one of to_user and to_group")
        if not isinstance(body.get("text"), str) or not body["text"]:
            raise InvalidArgument("text must be a non-empty string")
        if body.get("from") in (None, ""):
            raise InvalidArgument('from is required (a user, or "system")')
        # Only the target given: db_proxy refuses a call naming both, even if one is null.
        args = {"from": body["from"], "text": body["text"], targets[0]: body[targets[0]]}
        return _json(await self._db("send", args))

    async def status(self, request: web.Request) -> web.Response:
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
        return _json(
            {
                "login_server": {"uptime": max(0, round(wall - self.started_at))},
                "gateways": gateways,
                "connections": sum(g["connections"] for g in gateways),
                "route_servers": [_server_status(a) for a in routes],
                "db_proxies": [_server_status(a) for a in dbs],
            }
        )


def _server_status(answer: Answer) -> dict[str, Any]:
    roles = {"roles": list(answer.roles)} if answer.roles else {}
    if answer.result is not None:
        return {**answer.result, **roles, "address": answer.address, "status": "ok"}
    state = "unreachable" if not answer.reachable else "error"
    return {"address": answer.address, "status": state, "error": answer.error, **roles}


def setup_admin(app: web.Application, token: str, backends: Backends, balancer: Balancer) -> AdminApi:
    """Add the admin API to ``app`` (call before the app is frozen)."""
    api = AdminApi(backends, balancer)
    app.middlewares.append(admin_middleware(token))
    app.router.add_routes(api.routes())
    app.router.add_routes(export_routes(backends))  # audit, message export, retention
    return api
