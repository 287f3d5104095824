"""``imctl user ...``: users through the admin API (``import`` is in importing.py)."""

from __future__ import annotations

from typing import Any

import click

from imctl.client import BadUsage, Unreachable
from imctl.commands.directory import resolve_department
from imctl.commands.importing import user_import
from imctl.commands.offline import add_user_offline
from imctl.context import Admin, admin, admin_options, quote, user_ref
from imctl.output import key_values, table, timestamp

USER_COLUMNS = [
    ("id", "id"),
    ("name", "name"),
    ("nick", "nick"),
    ("department_id", "dept"),
    ("email", "email"),
    ("disabled", "disabled"),
]
USER_KEYS = [
    "id",
    "name",
    "nick",
    "real_name",
    "gender",
    "department_id",
    "email",
    "tel",
    "domain",
    "status",
    "sign_info",
    "avatar",
    "disabled",
    "updated",
    "external_id",
]
LIST_PAGE = 1000  # the most users.list gives at once


@click.group()
def user() -> None:
    """Users."""


user.add_command(user_import)


def _path(name: str) -> str:
    return f"/users/{quote(user_ref(name))}"


def _done(adm: Admin, result: dict[str, Any], verb: str) -> None:
    u = result["user"]

    def human() -> None:
        click.echo(f"{verb} user {u['name']!r} (id {u['id']})")
        if result.get("kicked"):
            click.echo(f"closed {result['kicked']} session(s)")
        if result.get("warning"):
            click.echo(f"warning: {result['warning']}", err=True)

    adm.show(result, human)


@user.command("add")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Plain password.")
@click.option("--nick", default="", help="Display name (default: the user name).")
@click.option(
    "--department",
    default=None,
    metavar="DEPT",
    help='Department id or name (default: the top-level department "default").',
)
@click.option("--email", default=None)
@click.option("--tel", default=None)
@click.option("--real-name", default=None)
@click.option(
    "--offline",
    is_flag=True,
    help="Write the configured database directly, not through the cluster: only before it runs "
    "(refused if one is found).",
)
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="With --offline: write into this database (default: db_proxy's directory database).",
)
@admin_options
def user_add(
    name: str,
    password: str,
    nick: str,
    department: str | None,
    email: str | None,
    tel: str | None,
    real_name: str | None,
    offline: bool,
    database_url: str | None,
) -> None:
    """Create a user who can log in with NAME and PASSWORD.

    TeamTalk clients show NAME as the real name and the nick as the display
    name, and search by the user's domain: NAME, or the pinyin of a Chinese
    nick or name (computed, unless `imctl user update --domain` sets one).

    Goes through the cluster's admin API. Before the cluster runs (setting
    up), --offline writes the database directly instead; it is refused while
    a cluster runs (its ready files in [imctl] run_dir name live processes,
    or something answers at the admin URL).
    """
    adm = admin()
    if database_url is not None and not offline:
        raise BadUsage("--database-url writes the database directly: it needs --offline")
    profile: dict[str, Any] = {"nick": nick or name}
    for key, value in (("email", email), ("tel", tel), ("real_name", real_name)):
        if value is not None:
            profile[key] = value
    if offline:
        add_user_offline(adm, name, password, profile, department, database_url)
        return
    body: dict[str, Any] = {"name": name, "password": password, **profile}
    try:
        if department is not None:
            body["department_id"] = resolve_department(adm, department)
        result = adm.call("POST", "/users", body)
    except Unreachable as exc:
        if exc.status:  # a login_server answered (a server behind it is down): the cluster is up
            raise
        raise Unreachable(
            f"{exc.message}; start the cluster (imctl up), or before it ever runs add users with --offline"
        ) from None
    _done(adm, result, "created")


@user.command("list")
@click.option("--search", default="", help="Only names or nicks containing this.")
@click.option("--offset", default=0, show_default=True)
@click.option("--limit", default=50, show_default=True, help="At most this many (up to 1000).")
@click.option("--all", "everything", is_flag=True, help="Every matching user, page by page.")
@admin_options
def user_list(search: str, offset: int, limit: int, everything: bool) -> None:
    """List users."""
    adm = admin()
    query: dict[str, Any] = {"search": search, "offset": offset, "limit": LIST_PAGE if everything else limit}
    result = adm.call("GET", "/users", query=query)
    users: list[dict[str, Any]] = list(result["users"])
    while everything and result["users"] and len(users) + offset < result["total"]:
        result = adm.call("GET", "/users", query={**query, "offset": offset + len(users)})
        users += result["users"]
    total = result.get("total", len(users))

    def human() -> None:
        click.echo(table(users, USER_COLUMNS))
        click.echo(f"{len(users)} of {total} users")

    adm.show({"users": users, "total": total}, human)


@user.command("show")
@click.argument("name")
@admin_options
def user_show(name: str) -> None:
    """Show a user (by id or name)."""
    adm = admin()
    result = adm.call("GET", _path(name))
    shown = {**result["user"], "updated": timestamp(result["user"].get("updated"))}
    adm.show(result, lambda: click.echo(key_values(shown, USER_KEYS)))


@user.command("update")
@click.argument("name")
@click.option("--nick")
@click.option("--real-name")
@click.option("--gender", type=int, help="TeamTalk's: 1 male, 2 female.")
@click.option("--department", metavar="DEPT", help="Department id or name.")
@click.option("--email")
@click.option("--tel")
@click.option("--domain")
@click.option("--status", type=int, help="TeamTalk's user status field.")
@click.option("--sign-info", help="Signature line.")
@click.option("--avatar", help="Avatar URL.")
@admin_options
def user_update(name: str, department: str | None, **fields: Any) -> None:
    """Change a user's profile; connected clients see it in their next sync."""
    adm = admin()
    changes = {key: value for key, value in fields.items() if value is not None}
    if department is not None:
        changes["department_id"] = resolve_department(adm, department)
    if not changes:
        raise BadUsage("nothing to change: give at least one option (see --help)")
    _done(adm, adm.call("PATCH", _path(name), changes), "updated")


@user.command("passwd")
@click.argument("name")
@click.option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True, help="New plain password."
)
@admin_options
def user_passwd(name: str, password: str) -> None:
    """Set a user's password."""
    adm = admin()
    _done(adm, adm.call("POST", f"{_path(name)}/password", {"password": password}), "changed the password of")


@user.command("disable")
@click.argument("name")
@admin_options
def user_disable(name: str) -> None:
    """Stop a user from logging in, and close its sessions."""
    adm = admin()
    _done(adm, adm.call("POST", f"{_path(name)}/disable"), "disabled")


@user.command("enable")
@click.argument("name")
@admin_options
def user_enable(name: str) -> None:
    """Let a disabled user log in again."""
    adm = admin()
    _done(adm, adm.call("POST", f"{_path(name)}/enable"), "enabled")


@user.command("unlock")
@click.argument("name")
@admin_options
def user_unlock(name: str) -> None:
    """Clear a user's failed-login counters (from every address), ending any wait they impose.

    A password change (`imctl user passwd`) clears them too.
    """
    adm = admin()
    _done(adm, adm.call("POST", f"{_path(name)}/unlock"), "unlocked")


@user.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@admin_options
def user_delete(name: str, yes: bool) -> None:
    """Delete a user, and close its sessions."""
    if not yes:
        click.confirm(f"delete user {name}?", abort=True, err=True)
    adm = admin()
    _done(adm, adm.call("DELETE", _path(name)), "deleted")
