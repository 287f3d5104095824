"""The console's pages of the live cluster: the dashboard (status), who is
online (and kick), sending a notice, and the audit log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from login_server.admin.api import user_ref
from login_server.admin.audit import operator_name
from login_server.console.app import ROOT, Console, Form, page_number, page_read

ONLINE_PAGE = 50
AUDIT_PAGE = 50
SYSTEM_SENDER = "system"  # db_proxy.system_user's default; the API's "from": "system" means it


class LivePages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.ops = console.ops

    def routes(self) -> list[web.RouteDef]:
        r = ROOT
        return [
            web.get(f"{r}/", self.dashboard),
            web.get(f"{r}/online", self.online),
            web.post(f"{r}/kick", self.kick),
            web.get(f"{r}/send", self.send_page),
            web.post(f"{r}/send", self.send),
            web.get(f"{r}/audit", self.audit),
        ]

    async def dashboard(self, request: web.Request) -> web.Response:
        status, error = await page_read(self.ops.status())
        for db in status.get("db_proxies", []):
            # Only a server that answered has a queue: an unreachable one shows "-", never 0.
            db["queued"] = sum(db["queue_depths"]) if isinstance(db.get("queue_depths"), list) else "-"
        return self.console.render(request, "dashboard.html", title="Dashboard", cluster=status, error=error)

    async def online(self, request: web.Request) -> web.Response:
        number = page_number(request)
        result, error = await page_read(self.ops.online())
        sessions: list[dict[str, Any]] = result.get("sessions", [])
        shown = sessions[(number - 1) * ONLINE_PAGE : number * ONLINE_PAGE]
        # Named already: the API's /online adds names and nicks from db_proxy in one call.
        known = {
            s["user_id"]: {"name": s["name"], "nick": s.get("nick") or ""} for s in shown if s.get("name")
        }
        return self.console.render(
            request,
            "online.html",
            title="Online",
            rows=[(s, known.get(s["user_id"])) for s in shown],
            total=len(sessions),
            users=len({s["user_id"] for s in sessions}),
            page=number,
            pages=max(1, -(-len(sessions) // ONLINE_PAGE)),
            error=error,
        )

    async def kick(self, request: web.Request) -> web.Response:
        form = Form(await request.post())
        user = form.text("user")
        return await self.console.act(
            request,
            "kick user",
            user,
            lambda: self.ops.kick(user_ref(user) if user else ""),
            done=f"{ROOT}/online",
            said=lambda r: f"Kicked {r['user']['name']}: {r['kicked']} session(s) closed.",
        )

    async def send_page(self, request: web.Request) -> web.Response:
        kind = "group" if request.query.get("group") else "user"
        target = request.query.get(kind, "")[:100]
        return self.console.render(
            request, "send.html", title="Send a notice", kind=kind, target=target, sender=SYSTEM_SENDER
        )

    async def send(self, request: web.Request) -> web.Response:
        form = Form(await request.post())
        kind, target = form.text("kind"), form.text("target")

        async def send() -> dict[str, Any]:
            text = form.text("text", strip=False)
            if kind == "group":
                return await self.ops.send(SYSTEM_SENDER, text, to_group=form.number("target"))
            return await self.ops.send(SYSTEM_SENDER, text, to_user=user_ref(target) if target else None)

        return await self.console.act(
            request,
            "send notice",
            f"{kind}:{target}",
            send,
            done=f"{ROOT}/send",
            said=lambda r: f"Sent message {r.get('msg_id')} to {kind} {target}.",
            detail=form.detail(),
        )

    async def audit(self, request: web.Request) -> web.Response:
        who = operator_name(request.query.get("who"), default="")
        action = request.query.get("action", "").strip()[:100]
        before = request.query.get("before", "")
        args: dict[str, Any] = {"limit": AUDIT_PAGE}
        if who:
            args["who"] = who
        if action:
            args["action"] = action
        if before.isascii() and before.isdigit() and len(before) <= 20:
            args["before_id"] = int(before)
        result, error = await page_read(self.console.audit.entries(args))
        return self.console.render(
            request,
            "audit.html",
            title="Audit log",
            who=who,
            action=action,
            entries=result.get("entries", []),
            next_before=result.get("next_before_id"),
            error=error,
        )
