"""``imctl user ...``: users through the admin API (``import`` is in importing.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from imctl.client import BadUsage, CliError, Unreachable
from imctl.commands.directory import resolve_department
from imctl.commands.importing import user_import
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
    "--database-url",
    default=None,
    help="Write straight into this database instead of going through the cluster "
    "(for setting up before the cluster runs).",
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
    database_url: str | None,
) -> None:
    """Create a user who can log in with NAME and PASSWORD.

    TeamTalk clients show NAME as the real name and the nick as the display
    name, and search by the user's domain: NAME, or the pinyin of a Chinese
    nick or name (computed, unless `imctl user update --domain` sets one).

    Goes through the cluster's admin API. When no cluster answers at the
    default address (it is not up yet) and no --url was asked for, the user
    is written straight into the configured database instead, as before
    `imctl up`; --database-url does that on purpose.
    """
    adm = admin()
    if database_url is not None:
        _add_directly(adm, name, password, nick, department, database_url)
        return
    body: dict[str, Any] = {"name": name, "password": password, "nick": nick or name}
    for key, value in (("email", email), ("tel", tel), ("real_name", real_name)):
        if value is not None:
            body[key] = value
    try:
        if department is not None:
            body["department_id"] = resolve_department(adm, department)
        result = adm.call("POST", "/users", body)
    except Unreachable as exc:
        # Only when nothing answers at all: a login_server answering 503 means
        # the cluster is up, and writing behind its back is not wanted then.
        if exc.status or not adm.target.url_is_default:
            raise
        _add_directly(adm, name, password, nick, department, None)
        return
    _done(adm, result, "created")


def _add_directly(
    adm: Admin, name: str, password: str, nick: str, department: str | None, database_url: str | None
) -> None:
    """The offline path: a store of our own, as the cluster's db_proxy would."""
    from common.config import ConfigError, load_config
    from db_proxy.config import DbProxyConfig
    from db_proxy.passwords import hash_password, md5_hex
    from db_proxy.storage import open_store
    from db_proxy.storage.model import DuplicateName

    if department is not None and not department.isdecimal():
        raise BadUsage("without a running cluster, --department must be an id")
    overrides = {"database_url": database_url} if database_url else {}
    try:
        url = load_config(DbProxyConfig, "db_proxy", adm.config_path, overrides).database_url
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None
    if database_url is None:
        click.echo(f"no cluster at {adm.target.url}; writing to {url} directly", err=True)

    async def create() -> int:
        store = open_store(url)
        await store.open()
        try:
            await store.migrate()
            return await store.create_user(
                name,
                hash_password(md5_hex(password)),
                nick=nick or name,
                department_id=int(department or 0),
            )
        finally:
            await store.close()

    try:
        user_id = asyncio.run(create())
    except DuplicateName:
        raise CliError(f"user {name!r} already exists") from None
    except Exception as exc:
        raise CliError(f"cannot create {name!r} in {url}: {exc}") from None
    adm.show(
        {"user": {"id": user_id, "name": name}},
        lambda: click.echo(f"created user {name!r} with id {user_id}"),
    )


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
