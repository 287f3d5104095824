"""The admin API's audit, export and retention endpoints (docs/admin-api.md):

* ``GET /admin/v1/audit``: the audit trail, newest first, a page at a time;
* ``GET /admin/v1/messages/export``: messages as JSON lines, streamed;
* ``GET /admin/v1/retention`` and ``POST /admin/v1/retention/run``.

The export reads private messages, so it is recorded in the audit trail
itself (the API's middleware records changes, which a GET is not). It is
streamed one db_proxy page at a time (at most 1000 messages, ~1 MiB): the
next page is asked for only once the last one is written out, so memory
stays bounded and a slow reader slows only its own export. The first page
is fetched before the answer starts, so a bad request (no such user) is an
ordinary error status; an error after that is the stream's last line,
``{"error": "..."}``, and a complete stream ends with every page written
(chunked encoding: a cut connection is not a clean end).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from common.errors import ImError, InvalidArgument, describe
from common.times import parse_time, to_ms
from login_server.admin.audit import OPERATOR_HEADER, Actor, AuditEntry, AuditTrail, operator_name
from login_server.admin.backends import DB_PROXY, Backends

log = logging.getLogger("login_server.admin")

PREFIX = "/admin/v1"
EXPORT_ACTION = f"GET {PREFIX}/messages/export"
PAGE_TIMEOUT = 30.0  # one page: at most 1000 rows read along a key
RETENTION_TIMEOUT = 60.0  # db_proxy stops a run after 50 s and says there is more
JSON_LINES = "application/x-ndjson"


def _query_int(request: web.Request, key: str) -> int | None:
    value = request.query.get(key, "")
    if value == "":
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise InvalidArgument(f"{key} must be a non-negative integer, got {value!r}")
    return int(value)


def _query_ms(request: web.Request, key: str) -> int | None:
    """An ISO 8601 date or time, or Unix seconds, as Unix milliseconds."""
    value = request.query.get(key, "")
    if value == "":
        return None
    try:
        return to_ms(parse_time(value))
    except ValueError as exc:
        raise InvalidArgument(f"{key}: {exc}") from None


def _user_ref(value: str) -> int | str:
    return int(value) if value.isascii() and value.isdecimal() and len(value) <= 10 else value


def _time_range(request: web.Request) -> dict[str, int]:
    times = {"since_ms": _query_ms(request, "since"), "until_ms": _query_ms(request, "until")}
    return {key: value for key, value in times.items() if value is not None}


def export_scope(request: web.Request) -> tuple[dict[str, Any], str]:
    """``messages.export``'s scope argument from ``?user=`` | ``?a=&b=`` | ``?group=``,
    and the audit target naming it."""
    q = request.query
    given = [key for key in ("user", "a", "b", "group") if q.get(key)]
    if given == ["user"]:
        return {"user": _user_ref(q["user"])}, f"user:{q['user']}"
    if given == ["a", "b"]:
        conversation = {"type": "single", "a": _user_ref(q["a"]), "b": _user_ref(q["b"])}
        return {"conversation": conversation}, f"single:{q['a']},{q['b']}"
    if given == ["group"]:
        group_id = _query_int(request, "group")
        return {"conversation": {"type": "group", "id": group_id}}, f"group:{group_id}"
    raise InvalidArgument("give user=, or a= and b= (a 1:1 conversation), or group=")


def actor_of(request: web.Request) -> Actor:
    return Actor(operator_name(request.headers.get(OPERATOR_HEADER)), "api", request.remote or "")


class ExportApi:
    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self.trail = AuditTrail(backends)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}/audit", self.audit),
            # No HEAD: it would run (and audit) a whole export for nothing.
            web.get(f"{PREFIX}/messages/export", self.export, allow_head=False),
            web.get(f"{PREFIX}/retention", self.retention_policy),
            web.post(f"{PREFIX}/retention/run", self.retention_run),
        ]

    async def audit(self, request: web.Request) -> web.Response:
        args: dict[str, Any] = {
            key: value
            for key, value in {
                "limit": _query_int(request, "limit"),
                "before_id": _query_int(request, "before_id"),
                "who": request.query.get("who") or None,
                "action": request.query.get("action") or None,
                **_time_range(request),
            }.items()
            if value is not None
        }
        return web.json_response(await self.trail.entries(args))

    async def retention_policy(self, request: web.Request) -> web.Response:
        return web.json_response(await self.backends.call(DB_PROXY, "retention.policy", {}))

    async def retention_run(self, request: web.Request) -> web.Response:
        result = await self.backends.call(DB_PROXY, "retention.run", {}, RETENTION_TIMEOUT)
        return web.json_response(result)

    async def export(self, request: web.Request) -> web.StreamResponse:
        scope, target = export_scope(request)
        times = _time_range(request)
        args: dict[str, Any] = {**scope, **times}
        detail: dict[str, Any] = {k: v for k, v in request.query.items() if k in ("since", "until")}
        try:
            page = await self.backends.call(DB_PROXY, "messages.export", args, PAGE_TIMEOUT)
        except ImError as exc:
            from login_server.admin.api import (
                http_status,
            )  # the API's one mapping (imported late: api imports us)

            await self._record(request, target, http_status(exc), {**detail, "error": describe(exc)})
            raise
        response = web.StreamResponse(headers={"Content-Type": f"{JSON_LINES}; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        count, complete = 0, False
        outcome: dict[str, Any] = {}
        try:
            while True:
                messages = page.get("messages") or []
                if messages:
                    lines = "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in messages)
                    await response.write(lines.encode())  # waits while the reader is behind
                    count += len(messages)
                cursor = page.get("cursor")
                if not cursor:
                    complete = True
                    break
                page = await self.backends.call(
                    DB_PROXY, "messages.export", {**args, "cursor": cursor}, PAGE_TIMEOUT
                )
        except ImError as exc:
            outcome["error"] = describe(exc)
            log.warning("message export of %s stopped after %d messages: %s", target, count, outcome["error"])
        except ConnectionError:
            outcome["error"] = "the reader went away"
        # Recorded before the stream ends: whoever reads it to the end finds the entry.
        await self._record(
            request, target, 200, {**detail, "messages": count, "complete": complete, **outcome}
        )
        with contextlib.suppress(ConnectionError):
            if "error" in outcome:
                await response.write((json.dumps(outcome) + "\n").encode())
            await response.write_eof()
        return response

    async def _record(self, request: web.Request, target: str, status: int, detail: dict[str, Any]) -> None:
        await self.trail.record(AuditEntry(actor_of(request), EXPORT_ACTION, target, status, detail))


def export_routes(backends: Backends) -> list[web.RouteDef]:
    """The routes of this module, for setup_admin (login_server/admin/api.py)."""
    return ExportApi(backends).routes()
