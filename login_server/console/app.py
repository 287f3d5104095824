"""The web console's frame: login, sessions, CSRF, security headers, rendering,
and :meth:`Console.act`, the one way a page changes something.

Everything under ``/console`` goes through :meth:`Console.guard`: without a
live session only the login page and the stylesheet are served (any other
path redirects to the login page, so not even which pages exist shows);
every POST must carry the session's CSRF token (403 otherwise), and one
from another origin is refused whatever it carries. Every answer gets the
security headers: a Content-Security-Policy that allows no script at all
(the console has none) and no framing, and no caching.

An action (:meth:`Console.act`) calls one AdminOps operation, the API's
own, records the audit entry (who typed at login, ``via`` console), and
redirects (POST, redirect, GET) to a page that shows the outcome: what was
done, or the error as the API would have said it, with its HTTP status.
"""

from __future__ import annotations

import hmac
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any, cast

import jinja2
from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import MultiDictProxy

from common.errors import ImError, InvalidArgument
from common.pb import base_pb2
from common.throttle import Throttle
from login_server.admin.api import bounded, error_text, http_status
from login_server.admin.audit import Actor, AuditEntry, AuditTrail, operator_name
from login_server.admin.ops import AdminOps
from login_server.console.sessions import LoginThrottle, Session, Sessions

log = logging.getLogger("login_server.console")

ROOT = "/console"
COOKIE = "imcluster_console"
SESSION_KEY = web.RequestKey("console_session", Session)
LOGIN_LOG_INTERVAL = 10.0  # seconds; someone guessing tokens at the form
PUBLIC = frozenset({f"{ROOT}/login", f"{ROOT}/static/console.css"})
SECURITY_HEADERS = {
    # No script, no plugin, no frame, no other origin: only our stylesheet and forms to ourselves.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FORM_FIELD_CHARS = 10_000  # any one form value: a notice's text is the longest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Operation = Callable[[], Awaitable[dict[str, Any]]]


def path_part(value: object) -> str:
    """``value`` as one path segment of a console URL."""
    return urllib.parse.quote(str(value), safe="")


def page_number(request: web.Request) -> int:
    """``?page=N`` (from 1; anything else is page 1)."""
    value = request.query.get("page", "1")
    ok = value.isascii() and value.isdigit() and 0 < len(value) <= 6
    return max(1, int(value)) if ok else 1


async def page_read(call: Awaitable[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """A read for a page: its result, or an empty one and the error to show in its place."""
    try:
        return await call, ""
    except Exception as exc:
        return {}, error_text(exc)


def redirect(location: str) -> web.Response:
    """303 to a console path (always one built here: never a URL from a request)."""
    assert location.startswith(ROOT), location
    return web.Response(status=303, headers={"Location": location})


def _when(ms: Any) -> str:
    if not isinstance(ms, int | float) or ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"


def _client_type(value: Any) -> str:
    """TeamTalk's client types as words (CLIENT_TYPE_WINDOWS -> windows)."""
    if isinstance(value, int) and value in base_pb2.ClientType.values():
        name = base_pb2.ClientType.Name(cast(base_pb2.ClientType.ValueType, value))
        return name.removeprefix("CLIENT_TYPE_").lower()
    return str(value)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("login_server.console", "templates"),
        autoescape=True,  # every value is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        path=path_part, when=_when, when_s=lambda s: _when(s * 1000), duration=_duration, client=_client_type
    )
    return env


class Form:
    """A posted form's fields as stripped, bounded text."""

    def __init__(self, data: MultiDictProxy[Any]) -> None:
        self.data = data

    def text(self, name: str, *, strip: bool = True) -> str:
        value = self.data.get(name, "")
        if not isinstance(value, str):
            raise InvalidArgument(f"{name} must be text")
        if len(value) > FORM_FIELD_CHARS:
            raise InvalidArgument(f"{name} is longer than {FORM_FIELD_CHARS} characters")
        return value.strip() if strip else value

    def number(self, name: str, default: int | None = None) -> int:
        value = self.text(name)
        if value == "" and default is not None:
            return default
        if not value.isascii() or not value.isdigit() or len(value) > 10:
            raise InvalidArgument(f"{name} must be a number, got {value!r}")
        return int(value)

    def detail(self) -> dict[str, Any]:
        """The fields for an audit entry (the CSRF token left out; secrets are redacted by the trail)."""
        return bounded({k: v for k, v in self.data.items() if k != "csrf" and isinstance(v, str)})


class Console:
    """The console's state (sessions, login throttle, templates) and its frame."""

    def __init__(
        self,
        token: str,
        ops: AdminOps,
        audit: AuditTrail,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.ops = ops
        self.audit = audit
        self.sessions = Sessions(clock)
        self.throttle = LoginThrottle(clock)
        self.failures_log = Throttle(LOGIN_LOG_INTERVAL, clock)
        self.env = environment()
        self.stylesheet = resources.files("login_server.console").joinpath("static/console.css").read_bytes()

    # -- the frame -------------------------------------------------------------------

    def middleware(self) -> Middleware:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not (request.path == ROOT or request.path.startswith(ROOT + "/")):
                return await handler(request)
            response = await self._guarded(request, handler)
            response.headers.update(SECURITY_HEADERS)
            return response

        return guard

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if request.method == "POST" and not _same_origin(request):
            return self.refuse(request, 403, "this form was sent from another site")
        if session is None:
            if request.path in PUBLIC:
                return await self._handle(request, handler)
            return redirect(f"{ROOT}/login")
        request[SESSION_KEY] = session
        if request.method == "POST" and request.path not in PUBLIC:
            try:
                posted = (await request.post()).get("csrf", "")
            except (ValueError, web.HTTPException):  # not a form, or larger than the app takes
                posted = ""
            if not isinstance(posted, str) or not hmac.compare_digest(posted.encode(), session.csrf.encode()):
                return self.refuse(request, 403, "the form's security token is missing or stale: reload")
        return await self._handle(request, handler)

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:  # aiohttp's own: method not allowed, body too large
            return self.refuse(request, exc.status, exc.reason)
        except ImError as exc:  # a form field refused before any action (too long, not a number)
            return self.refuse(request, http_status(exc), error_text(exc))

    def refuse(self, request: web.Request, status: int, message: str) -> web.Response:
        title = {403: "Refused", 404: "Not found", 503: "Unavailable"}.get(status, "Error")
        return self.render(request, "error.html", status=status, title=title, message=message)

    def render(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        session = request.get(SESSION_KEY)
        page = self.env.get_template(template).render(
            root=ROOT,
            session=session,
            flashes=session.take_flashes() if session is not None else [],
            **context,
        )
        return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")

    async def stylesheet_file(self, request: web.Request) -> web.Response:
        return web.Response(body=self.stylesheet, content_type="text/css")

    async def not_found(self, request: web.Request) -> web.Response:
        return self.refuse(request, 404, "no such page")

    # -- actions -----------------------------------------------------------------------

    def actor(self, request: web.Request) -> Actor:
        return Actor(request[SESSION_KEY].operator, "console", request.remote or "")

    async def act(
        self,
        request: web.Request,
        action: str,
        target: str,
        operation: Operation,
        *,
        done: str | Callable[[dict[str, Any]], str],
        said: str | Callable[[dict[str, Any]], str],
        failed: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> web.Response:
        """Run ``operation``, record it, tell the operator (``said``) on the page
        it redirects to (``done``; on failure ``failed``, else ``done``)."""
        session = request[SESSION_KEY]
        detail = dict(detail or {})
        try:
            result = await operation()
        except Exception as exc:
            status, message = http_status(exc), error_text(exc)
            entry = AuditEntry(self.actor(request), f"console: {action}", target, status, detail)
            await self.audit.record(replace(entry, detail={**detail, "error": message}))
            session.flash("error", f"Could not {action}: {message} (HTTP {status})")
            return redirect(failed or (done if isinstance(done, str) else ROOT + "/"))
        await self.audit.record(AuditEntry(self.actor(request), f"console: {action}", target, 200, detail))
        session.flash("ok", said if isinstance(said, str) else said(result))
        if result.get("warning"):
            session.flash("warning", str(result["warning"]))
        return redirect(done if isinstance(done, str) else done(result))

    # -- login and logout --------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        if request.get(SESSION_KEY) is not None:
            return redirect(f"{ROOT}/")
        return self.render(request, "login.html", title="Log in", message="", operator="")

    async def login(self, request: web.Request) -> web.Response:
        source = request.remote or ""
        form = await request.post()
        claimed = form.get("operator", "")
        operator = operator_name(claimed if isinstance(claimed, str) else "", default="")
        wait = self.throttle.wait(source)
        if wait > 0:
            self._log_failure("throttled login", operator, source)
            message = f"Too many failed logins from your address: try again in {wait:.0f} s."
            return self.render(
                request, "login.html", status=429, title="Log in", message=message, operator=operator
            )
        supplied = form.get("token", "")
        good = isinstance(supplied, str) and hmac.compare_digest(supplied.encode(), self.token.encode())
        if not good or not operator:
            if not good:
                self.throttle.failed(source)
            self._log_failure("failed login", operator, source)
            actor = Actor(operator or "-", "console", source)
            await self.audit.record(AuditEntry(actor, "console: log in", operator, 401))
            message = "Wrong admin token." if not good else "Give your name: it goes into the audit log."
            return self.render(
                request, "login.html", status=401, title="Log in", message=message, operator=operator
            )
        self.throttle.succeeded(source)
        session = self.sessions.open(operator)
        await self.audit.record(AuditEntry(Actor(operator, "console", source), "console: log in", operator))
        response = redirect(f"{ROOT}/")
        response.set_cookie(
            COOKIE,
            session.id,
            path=ROOT,
            httponly=True,
            samesite="Strict",
            secure=request.secure or request.headers.get("X-Forwarded-Proto", "") == "https",
        )
        return response

    def _log_failure(self, what: str, operator: str, source: str) -> None:
        if self.failures_log.ready():
            log.warning("console: %s as %r from %s%s", what, operator, source, self.failures_log.more())

    async def logout(self, request: web.Request) -> web.Response:
        session = request[SESSION_KEY]
        self.sessions.close(session.id)
        await self.audit.record(AuditEntry(self.actor(request), "console: log out", session.operator))
        response = redirect(f"{ROOT}/login")
        response.del_cookie(COOKIE, path=ROOT)
        return response


def _same_origin(request: web.Request) -> bool:
    """False for a POST whose Origin names another host (a browser always sends
    it on a form post; tools that send none are let through to the token check)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urllib.parse.urlsplit(origin).netloc == request.host
