"""The web admin console at ``/console`` (README, "Web console").

Server-rendered pages (Jinja2, autoescaped; no script) over the admin API's
own operations (login_server/admin/ops.py) and audit trail, behind a login
form that exchanges the admin token for a session cookie. On exactly when
the admin API is (``login_server.admin_token`` set).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from login_server.admin.api import AdminApi
from login_server.console.app import ROOT, Console
from login_server.console.directory import DirectoryPages
from login_server.console.live import LivePages

__all__ = ["ROOT", "Console", "setup_console"]


def setup_console(
    app: web.Application, token: str, api: AdminApi, clock: Callable[[], float] = time.monotonic
) -> Console:
    """Add the console to ``app`` (call before the app is frozen)."""
    console = Console(token, api.ops, api.audit, clock)
    app.middlewares.append(console.middleware())
    app.router.add_routes(
        [
            web.get(ROOT, _to_dashboard),
            web.get(f"{ROOT}/login", console.login_page),
            web.post(f"{ROOT}/login", console.login),
            web.post(f"{ROOT}/logout", console.logout),
            web.get(f"{ROOT}/static/console.css", console.stylesheet_file),
            *LivePages(console).routes(),
            *DirectoryPages(console).routes(),
            # Last: any other path under /console is the console's 404 (behind the login like the rest).
            web.route("*", f"{ROOT}/{{tail:.*}}", console.not_found),
        ]
    )
    return console


async def _to_dashboard(request: web.Request) -> web.Response:
    return web.Response(status=303, headers={"Location": f"{ROOT}/"})
