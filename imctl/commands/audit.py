"""``imctl audit``, ``imctl export`` and ``imctl retention``: the audit trail,
message export (JSON lines, streamed to a file or stdout) and the retention
policy, through the admin API (docs/admin-api.md)."""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import click

from common.times import parse_time
from imctl.client import BadUsage, CliError, Unreachable
from imctl.context import Admin, admin, admin_options
from imctl.output import key_values, table

AUDIT_COLUMNS = [
    ("id", "id"),
    ("time", "time"),
    ("who", "who"),
    ("via", "via"),
    ("remote", "from"),
    ("action", "action"),
    ("target", "target"),
    ("status", "status"),
]
AUDIT_PAGE = 500  # the most audit.list gives at once
READ_SIZE = 64 * 1024
EXPORT_TIMEOUT = 60.0  # per read: one db_proxy page may take a while to come
RETENTION_TIMEOUT = 70.0  # the server stops a run after 50 s


def _time_option(value: str | None, option: str) -> str | None:
    """An ISO 8601 date/time (local time unless it says) or Unix seconds, as Unix seconds."""
    if value is None:
        return None
    try:
        return f"{parse_time(value):.3f}".rstrip("0").rstrip(".")
    except ValueError as exc:
        raise BadUsage(f"{option}: {exc}") from None


def _local_ms(value: Any) -> str:
    if isinstance(value, int) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value / 1000))
    return "-"


# -- imctl audit ---------------------------------------------------------------------


@click.command()
@click.option("--who", metavar="NAME", help="Only this operator's actions.")
@click.option("--action", metavar="PREFIX", help='Only actions starting with this ("POST /admin/v1/users").')
@click.option("--since", metavar="TIME", help="From this time (ISO 8601, local time, or Unix seconds).")
@click.option("--until", metavar="TIME", help="Before this time.")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Entries shown."
)
@admin_options
def audit(who: str | None, action: str | None, since: str | None, until: str | None, limit: int) -> None:
    """The audit trail of admin actions, newest first: who, from where, what, its status."""
    adm = admin()
    query: dict[str, Any] = {
        "who": who,
        "action": action,
        "since": _time_option(since, "--since"),
        "until": _time_option(until, "--until"),
    }
    entries: list[dict[str, Any]] = []
    before: int | None = None
    for _ in range(limit // AUDIT_PAGE + 1):  # bounded: each page brings AUDIT_PAGE or ends
        page = adm.call(
            "GET",
            "/audit",
            query={**query, "limit": min(AUDIT_PAGE, limit - len(entries)), "before_id": before},
        )
        entries += page.get("entries") or []
        before = page.get("next_before_id")
        if before is None or len(entries) >= limit:
            break
    result = {"entries": entries, "next_before_id": before}

    def human() -> None:
        rows = [{**e, "time": _local_ms(e.get("at_ms"))} for e in entries]
        click.echo(table(rows, AUDIT_COLUMNS))
        more = " (more: raise --limit or narrow with --until)" if before is not None else ""
        click.echo(f"{len(entries)} entries{more}")

    adm.show(result, human)


# -- imctl export --------------------------------------------------------------------


def _stream_request(adm: Admin, path: str, query: dict[str, Any]) -> http.client.HTTPResponse:
    return adm.client.stream(path, query, EXPORT_TIMEOUT)


def copy_lines(response: IO[bytes], out: IO[bytes]) -> int:
    """Copy the JSON lines of an export to ``out``; the number of messages.

    The last line is held back until the stream ends: if it is the server's
    ``{"error": ...}``, it is not output but raised (CliError)."""
    pending = b""  # after the last newline seen
    held = b""  # the last complete line, not yet written
    count = 0
    while chunk := response.read(READ_SIZE):
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        if not cut:
            pending = data
            continue
        lines, pending = held + data[:cut], data[cut:]
        last = lines.rfind(b"\n", 0, len(lines) - 1) + 1
        out.write(lines[:last])
        count += lines.count(b"\n", 0, last)
        held = lines[last:]
    if pending:
        raise Unreachable("the export was cut off in the middle of a line")
    if held.startswith(b'{"error"'):
        try:
            message = json.loads(held)["error"]
        except (ValueError, KeyError, TypeError):
            message = held.decode(errors="replace").strip()
        raise CliError(f"the export stopped after {count} messages: {message}")
    out.write(held)
    return count + (1 if held else 0)


@click.command("export")
@click.option("--user", "user_name", metavar="USER", help="Every conversation of this user.")
@click.option("--between", nargs=2, metavar="A B", help="The 1:1 conversation of users A and B.")
@click.option("--group", "group_id", metavar="ID", help="One group's conversation.")
@click.option(
    "--since", metavar="TIME", help="Messages from this time (ISO 8601, local time, or Unix seconds)."
)
@click.option("--until", metavar="TIME", help="Messages before this time.")
@click.option(
    "-o", "--output", metavar="FILE", default="-", show_default=True, help="Where to write (- is stdout)."
)
@admin_options
def export(
    user_name: str | None,
    between: tuple[str, str] | None,
    group_id: str | None,
    since: str | None,
    until: str | None,
    output: str,
) -> None:
    """Export messages as JSON lines (one message an line: conversation, ids, sender,
    time, text or base64 data). The export is recorded in the audit trail."""
    scopes = [s for s in (user_name, between, group_id) if s]
    if len(scopes) != 1:
        raise BadUsage("give exactly one of --user, --between A B and --group")
    query: dict[str, Any] = {"since": _time_option(since, "--since"), "until": _time_option(until, "--until")}
    if user_name:
        query["user"] = user_name
    elif between:
        query["a"], query["b"] = between
    else:
        assert group_id is not None
        if not group_id.isdecimal():
            raise BadUsage(f"--group needs a group id (imctl group list), got {group_id!r}")
        query["group"] = group_id
    adm = admin()
    response = _stream_request(adm, "/messages/export", query)
    try:
        if output == "-":
            count = _copy(response, sys.stdout.buffer)
            click.echo(f"exported {count} messages", err=True)
            return
        target = Path(output)
        partial = target.with_name(target.name + ".part")
        try:
            with partial.open("wb") as out:
                count = _copy(response, out)
        except OSError as exc:
            raise BadUsage(f"cannot write {partial}: {exc.strerror or exc}") from None
        except CliError:
            click.echo(f"the partial export is in {partial}", err=True)
            raise
        os.replace(partial, target)
    finally:
        response.close()
    if adm.as_json:
        click.echo(json.dumps({"exported": count, "file": str(target)}))
    else:
        click.echo(f"exported {count} messages to {target}")


def _copy(response: http.client.HTTPResponse, out: IO[bytes]) -> int:
    try:
        return copy_lines(response, out)
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:  # IncompleteRead, a reset
        raise Unreachable(f"the export was cut off: {exc or type(exc).__name__}") from None


# -- imctl retention -------------------------------------------------------------------


@click.group()
def retention() -> None:
    """The retention policy: messages and audit entries deleted after N days."""


def _days(value: Any) -> str:
    return "forever" if value == 0 else f"{value} days"


@retention.command("show")
@admin_options
def retention_show() -> None:
    """The policy of the db_proxy answering admin calls (every db_proxy should share it)."""
    adm = admin()
    result = adm.call("GET", "/retention")
    policy = result.get("policy") or {}
    shown = {
        "1:1 messages": _days(policy.get("single_days")),
        "group messages": _days(policy.get("group_days")),
        "audit entries": _days(policy.get("audit_days")),
        "batch rows": policy.get("batch_rows"),
        "interval": f"{policy.get('interval')} s",
        "db_proxy": result.get("node_id"),
    }
    adm.show(result, lambda: click.echo(key_values(shown)))


@retention.command("run")
@admin_options
def retention_run() -> None:
    """Run retention now (on the db_proxy answering admin calls); prints what it deleted."""
    adm = admin()
    result = adm.call("POST", "/retention/run", timeout=RETENTION_TIMEOUT)
    deleted = result.get("deleted") or {}

    def human() -> None:
        click.echo(
            "deleted " + ", ".join(f"{deleted.get(k, 0)} {k}" for k in ("single", "group", "audit", "dedup"))
        )
        if result.get("more"):
            click.echo("more is left: run it again (or let the next scheduled run go on)")

    adm.show(result, human)
