"""The live cluster: ``imctl online``, ``kick``, ``send``, ``status``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from common.pb import base_pb2
from imctl.client import BadUsage, CliError, Unreachable
from imctl.context import Admin, admin, admin_options, user_ref
from imctl.output import duration, table, timestamp

ONLINE_COLUMNS = [
    ("user_id", "user"),
    ("name", "name"),
    ("nick", "nick"),
    ("gateway", "gateway"),
    ("conn_id", "conn"),
    ("client", "client"),
    ("state", "status"),
    ("since_text", "since"),
]
GATEWAY_COLUMNS = [
    ("node_id", "gateway"),
    ("endpoint", "address"),
    ("connections", "connections"),
    ("max_connections", "max"),
    ("uptime_text", "uptime"),
]
ROUTE_COLUMNS = [
    ("address", "route server"),
    ("status", "status"),
    ("node_id", "node"),
    ("online_users", "online users"),
    ("gateway_count", "gateways"),
    ("error", "error"),
]
DB_COLUMNS = [
    ("address", "db proxy"),
    ("status", "status"),
    ("node_id", "node"),
    ("roles", "roles"),  # "-" from a server older than roles (it serves them all)
    ("workers", "workers"),
    ("queued", "queued"),
    ("committed", "committed"),
    ("database", "database"),
    ("redis", "redis"),
    ("error", "error"),
]


def _enum_name(enum: Any, value: Any, prefix: str) -> str:
    """TeamTalk's enum numbers as words (CLIENT_TYPE_WINDOWS -> windows)."""
    if isinstance(value, int) and value in enum.values():
        return str(enum.Name(value)).removeprefix(prefix).lower()
    return str(value)


@click.command()
@click.option("--names", is_flag=True, hidden=True, help="Names are always shown now (kept for scripts).")
@admin_options
def online(names: bool) -> None:
    """Who is online: user id, name and nick, gateway, client type, status, since when."""
    adm = admin()
    result = adm.call("GET", "/online")
    sessions: list[dict[str, Any]] = result.get("sessions", [])

    def human() -> None:
        rows = [
            {
                **s,
                "client": _enum_name(base_pb2.ClientType, s.get("client_type"), "CLIENT_TYPE_"),
                "state": _enum_name(base_pb2.UserStatType, s.get("status"), "USER_STATUS_"),
                "since_text": timestamp(s.get("since")),
            }
            for s in sorted(sessions, key=lambda s: (s.get("user_id", 0), s.get("gateway", "")))
        ]
        click.echo(table(rows, ONLINE_COLUMNS))
        click.echo(f"{len({s.get('user_id') for s in sessions})} users, {len(sessions)} sessions")
        if result.get("warning"):
            click.echo(f"warning: {result['warning']}", err=True)

    adm.show(result, human)


@click.command()
@click.argument("name", metavar="USER")
@admin_options
def kick(name: str) -> None:
    """Close every session of USER (id or name); its clients get IMKickUser."""
    adm = admin()
    result = adm.call("POST", "/kick", {"user": user_ref(name)})
    u = result["user"]
    adm.show(result, lambda: click.echo(f"kicked {u['name']!r} (id {u['id']}): {result['kicked']} sessions"))


@click.command()
@click.option("--from", "sender", required=True, metavar="USER|system", help="Sender: a user, or system.")
@click.option("--to", "recipient", required=True, metavar="USER|group:ID", help="A user, or group:ID.")
@click.argument("text")
@admin_options
def send(sender: str, recipient: str, text: str) -> None:
    """Send TEXT as a message; it is stored and pushed like any other."""
    body: dict[str, Any] = {"from": "system" if sender == "system" else user_ref(sender), "text": text}
    if recipient.startswith("group:"):
        group_id = recipient.removeprefix("group:")
        if not group_id.isdecimal():
            raise BadUsage(f"--to group:ID needs a number, got {recipient!r}")
        body["to_group"] = int(group_id)
    else:
        body["to_user"] = user_ref(recipient)
    adm = admin()
    result = adm.call("POST", "/messages", body)
    adm.show(result, lambda: click.echo(f"sent message {result.get('msg_id')} to {recipient}"))


def render_status(result: dict[str, Any]) -> str:
    gateways = [
        {**g, "endpoint": f"{g.get('address')}:{g.get('port')}", "uptime_text": duration(g.get("uptime"))}
        for g in result.get("gateways", [])
    ]
    total = {
        "node_id": "total",
        "endpoint": "",
        "connections": result.get("connections", 0),
        "max_connections": sum(g.get("max_connections") or 0 for g in gateways),
        "uptime_text": "",
    }
    # A server that did not answer has no figures: "-", never a made-up 0.
    routes = [
        {**r, "gateway_count": len(r.get("gateways") or []) if r.get("status") == "ok" else None}
        for r in result.get("route_servers", [])
    ]
    dbs = [
        {**d, "queued": sum(d.get("queue_depths") or []) if d.get("status") == "ok" else None}
        for d in result.get("db_proxies", [])
    ]
    for rows in (routes, dbs):
        for row in rows:
            if row.get("status") == "ok":
                row["error"] = ""
    uptime = duration((result.get("login_server") or {}).get("uptime"))
    return "\n\n".join(
        [
            table([*gateways, total], GATEWAY_COLUMNS),
            table(routes, ROUTE_COLUMNS),
            table(dbs, DB_COLUMNS),
            f"login_server up {uptime}",
        ]
    )


HEALTHY_BACKENDS = ("ok", "off")  # a db_proxy's database and Redis ("off": none configured)


def status_problems(result: dict[str, Any]) -> list[str]:
    """Each server of a /status answer that is down or has something down behind it, in words."""
    problems = []
    for kind, key in (("route server", "route_servers"), ("db proxy", "db_proxies")):
        servers = result.get(key) or []
        if not servers:
            problems.append(f"no {kind} configured")
        for server in servers:
            where = f"{kind} {server.get('address', '?')}"
            if server.get("status") != "ok":
                problems.append(f"{where} {server.get('status', 'unknown')}: {server.get('error') or '-'}")
                continue
            for backend in ("database", "redis"):
                state = server.get(backend)
                if backend in server and state not in HEALTHY_BACKENDS:
                    problems.append(f"{where}: {backend} {state}")
    return problems


@click.command()
@click.option(
    "--watch", type=float, default=None, metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C."
)
@click.option("--count", type=int, default=None, hidden=True, help="Stop after this many refreshes (tests).")
@admin_options
def status(watch: float | None, count: int | None) -> None:
    """The cluster at a glance: gateways, route servers, db proxies.

    Exit 3 (after printing) if a route server or db proxy is down, or the
    database or Redis behind a db proxy is.
    """
    adm = admin()
    if watch is None:
        result = adm.call("GET", "/status")
        adm.show(result, lambda: click.echo(render_status(result)))
        problems = status_problems(result)
        if problems:
            # The table is printed; the exit code tells scripts that something behind it is down.
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise Unreachable(f"{problems[0]}{more}")
        return
    if watch <= 0:
        raise BadUsage("--watch needs a positive number of seconds")
    _watch(adm, watch, count)


def _watch(adm: Admin, interval: float, count: int | None) -> None:
    """Redraw until Ctrl-C; a cluster that stops answering is shown, not fatal."""
    shown = 0
    try:
        while count is None or shown < count:
            if shown:
                time.sleep(interval)
            try:
                result: dict[str, Any] | None = adm.call("GET", "/status")
                error = ""
            except CliError as exc:
                result, error = None, exc.message
            shown += 1
            if adm.as_json:  # one JSON document per line
                click.echo(json.dumps(result if result is not None else {"error": error}, ensure_ascii=False))
                continue
            click.clear()
            click.echo(f"{adm.target.url}  {time.strftime('%H:%M:%S')}  every {interval:g}s, Ctrl-C stops\n")
            click.echo(render_status(result) if result is not None else f"error: {error}")
    except KeyboardInterrupt:
        pass
