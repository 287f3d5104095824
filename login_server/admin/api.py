"""The admin HTTP API, ``/admin/v1`` (docs/admin-api.md).

Each endpoint translates HTTP into one call of AdminOps (login_server/admin/ops.py),
the operations the web console calls too, and its result back into JSON.

The API exists only when ``login_server.admin_token`` is set; then every
``/admin/...`` request needs ``Authorization: Bearer <token>``, checked
before anything else so that nothing (not even which paths exist) is
visible without it. Every authorized request that may change something
(any method but GET and HEAD) is recorded in the audit trail, once, by the
middleware, after it is answered.
"""

from __future__ import annotations

import hmac
import json
import logging
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
from login_server.admin.audit import OPERATOR_HEADER, Actor, AuditEntry, AuditTrail, operator_name
from login_server.admin.backends import Backends
from login_server.admin.export import export_routes
from login_server.admin.ops import AdminOps
from login_server.balancer import Balancer

log = logging.getLogger("login_server.admin")

PREFIX = "/admin/v1"
AUTH_LOG_INTERVAL = 10.0  # seconds; someone guessing tokens
READ_ONLY = frozenset({"GET", "HEAD"})
# What of a request body an audit entry keeps: an import's 1,000 rows are a count.
DETAIL_LIST_ITEMS = 20
DETAIL_TEXT_CHARS = 200
TARGET_KEYS = ("user", "name", "to_user", "to_group")  # a body's words for what is acted on

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_status(exc: BaseException) -> int:
    """The admin HTTP boundary's mapping of the error taxonomy (the only one;
    the console shows the same status next to the message)."""
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


def error_text(exc: Exception) -> str:
    """What a caller is told of ``exc``: an ImError's message, or for anything
    unexpected only that it happened (logged here, with the traceback if it
    happened in this process; a Bug from a server was logged there)."""
    if http_status(exc) != 500:
        return describe(exc)
    # Its text (SQL, a traceback's last line) is for the log, not for callers.
    if isinstance(exc, ImError):
        log.warning("admin call failed inside a server: %s", exc)
    else:
        log.error("admin request failed", exc_info=exc)
    return "internal server error (see the server logs)"


def error_response(status: int, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response({"error": message}, status=status, headers=headers)


def map_error(exc: Exception) -> web.Response:
    """The HTTP answer for an exception out of an endpoint."""
    return error_response(http_status(exc), error_text(exc))


def authorized(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode(), token.encode())


def admin_middleware(token: str, audit: AuditTrail) -> Middleware:
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
        if request.method not in READ_ONLY:
            await audit.record(await audit_entry(request, response))
        return response

    return guard


async def audit_entry(request: web.Request, response: web.StreamResponse) -> AuditEntry:
    """The audit entry of an answered API request: the operator its caller
    names in ``X-Imcluster-Operator`` (imctl sends user@host), the path, the
    user or id it acts on, the status, and the body it sent (bounded; the
    trail redacts secrets) with the error it got."""
    body: Any = {}
    if request.body_exists:
        try:
            body = await request.json()  # read once already by the handler: aiohttp keeps it
        except (ValueError, UnicodeDecodeError, web.HTTPException):
            body = {}
    detail: dict[str, Any] = bounded(body) if isinstance(body, dict) else {}
    if response.status >= 400 and isinstance(response, web.Response) and isinstance(response.body, bytes):
        try:
            detail["error"] = json.loads(response.body).get("error", "")
        except (ValueError, AttributeError):
            pass
    target = request.match_info.get("user") or request.match_info.get("id") or ""
    if not target and isinstance(body, dict):
        target = next((str(body[k]) for k in TARGET_KEYS if body.get(k) not in (None, "")), "")
    actor = Actor(operator_name(request.headers.get(OPERATOR_HEADER)), "api", request.remote or "")
    action = f"{request.method} {request.path}"
    return AuditEntry(actor, action, target[:DETAIL_TEXT_CHARS], response.status, detail)


def bounded(value: Any) -> Any:
    """``value`` small enough for an audit entry: long lists become a count, long texts are cut."""
    if isinstance(value, dict):
        return {str(k)[:DETAIL_TEXT_CHARS]: bounded(v) for k, v in list(value.items())[:DETAIL_LIST_ITEMS]}
    if isinstance(value, list):
        if len(value) > DETAIL_LIST_ITEMS:
            return f"({len(value)} items)"
        return [bounded(v) for v in value]
    if isinstance(value, str) and len(value) > DETAIL_TEXT_CHARS:
        return value[:DETAIL_TEXT_CHARS] + "..."
    return value


def user_ref(value: str) -> int | str:
    """A user in a path: an id if it is all digits, else a login name."""
    return int(value) if value.isdecimal() else value


def _user(request: web.Request) -> int | str:
    return user_ref(request.match_info["user"])


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
    """The endpoints: each method is one aiohttp handler, HTTP in and out of
    one AdminOps operation."""

    def __init__(self, ops: AdminOps, audit: AuditTrail) -> None:
        self.ops = ops
        self.audit = audit

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

    # -- users -------------------------------------------------------------------

    async def create_user(self, request: web.Request) -> web.Response:
        return _json(await self.ops.create_user(await _body(request)), 201)

    async def list_users(self, request: web.Request) -> web.Response:
        return _json(
            await self.ops.list_users(
                _query_int(request, "offset", 0),
                _query_int(request, "limit", 50),
                request.query.get("search", ""),
            )
        )

    async def show_user(self, request: web.Request) -> web.Response:
        return _json(await self.ops.show_user(_user(request)))

    async def update_user(self, request: web.Request) -> web.Response:
        return _json(await self.ops.update_user(_user(request), await _body(request)))

    async def set_password(self, request: web.Request) -> web.Response:
        body = await _body(request)
        return _json(await self.ops.set_password(_user(request), body.get("password")))

    async def disable_user(self, request: web.Request) -> web.Response:
        return _json(await self.ops.disable_user(_user(request)))

    async def enable_user(self, request: web.Request) -> web.Response:
        return _json(await self.ops.enable_user(_user(request)))

    async def unlock_user(self, request: web.Request) -> web.Response:
        return _json(await self.ops.unlock_user(_user(request)))

    async def delete_user(self, request: web.Request) -> web.Response:
        return _json(await self.ops.delete_user(_user(request)))

    async def import_users(self, request: web.Request) -> web.Response:
        return _json(await self.ops.import_users((await _body(request)).get("rows")))

    # -- departments -----------------------------------------------------------------

    async def list_departments(self, request: web.Request) -> web.Response:
        return _json(await self.ops.list_departments())

    async def create_department(self, request: web.Request) -> web.Response:
        return _json(await self.ops.create_department(await _body(request)), 201)

    async def update_department(self, request: web.Request) -> web.Response:
        dept_id = _path_id(request)
        return _json(await self.ops.update_department(dept_id, await _body(request)))

    async def delete_department(self, request: web.Request) -> web.Response:
        return _json(await self.ops.delete_department(_path_id(request)))

    # -- groups ---------------------------------------------------------------------

    async def list_groups(self, request: web.Request) -> web.Response:
        offset, limit = _query_int(request, "offset", 0), _query_int(request, "limit", 50)
        return _json(await self.ops.list_groups(offset, limit))

    async def create_group(self, request: web.Request) -> web.Response:
        return _json(await self.ops.create_group(await _body(request)), 201)

    async def show_group(self, request: web.Request) -> web.Response:
        return _json(await self.ops.show_group(_path_id(request)))

    async def dismiss_group(self, request: web.Request) -> web.Response:
        return _json(await self.ops.dismiss_group(_path_id(request)))

    async def change_members(self, request: web.Request) -> web.Response:
        group_id = _path_id(request)
        body = await _body(request)
        return _json(await self.ops.change_members(group_id, body.get("add"), body.get("remove")))

    # -- the live cluster -------------------------------------------------------------

    async def online(self, request: web.Request) -> web.Response:
        return _json(await self.ops.online())

    async def kick(self, request: web.Request) -> web.Response:
        return _json(await self.ops.kick((await _body(request)).get("user")))

    async def send(self, request: web.Request) -> web.Response:
        body = await _body(request)
        return _json(
            await self.ops.send(body.get("from"), body.get("text"), body.get("to_user"), body.get("to_group"))
        )

    async def status(self, request: web.Request) -> web.Response:
        return _json(await self.ops.status())


def setup_admin(app: web.Application, token: str, backends: Backends, balancer: Balancer) -> AdminApi:
    """Add the admin API to ``app`` (call before the app is frozen); its
    operations and audit trail are the web console's too."""
    api = AdminApi(AdminOps(backends, balancer), AuditTrail(backends))
    app.middlewares.append(admin_middleware(token, api.audit))
    app.router.add_routes(api.routes())
    app.router.add_routes(export_routes(backends))  # audit, message export, retention
    return api
