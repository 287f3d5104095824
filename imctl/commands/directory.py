"""``imctl dept ...`` and ``imctl group ...``."""

from __future__ import annotations

from typing import Any

import click

from imctl.client import BadUsage, CliError
from imctl.context import Admin, admin, admin_options, user_ref
from imctl.output import key_values, table

DEPT_COLUMNS = [("id", "id"), ("tree", "name"), ("parent_id", "parent"), ("priority", "priority")]
GROUP_COLUMNS = [
    ("id", "id"),
    ("name", "name"),
    ("type", "type"),
    ("creator_id", "creator"),
    ("size", "members"),
]


def resolve_department(adm: Admin, value: str) -> int:
    """A department on the command line: an id, or a name that is unique."""
    if value.isdecimal():
        return int(value)
    found = [d for d in adm.call("GET", "/departments")["departments"] if d.get("name") == value]
    if not found:
        raise CliError(f"no department named {value!r}")
    if len(found) > 1:
        ids = ", ".join(str(d["id"]) for d in found)
        raise CliError(f"several departments are named {value!r} (ids {ids}); give the id")
    return int(found[0]["id"])


GROUP_PAGE = 1000  # the most groups.list answers at once
GROUP_PAGES = 100  # a name is looked for among at most 100,000 groups


def resolve_group(adm: Admin, value: str) -> int:
    """A group on the command line: an id, or a name that is unique among the groups."""
    if value.isdecimal():
        return int(value)
    found: list[dict[str, Any]] = []
    for page in range(GROUP_PAGES):
        result = adm.call("GET", "/groups", query={"offset": page * GROUP_PAGE, "limit": GROUP_PAGE})
        groups = result.get("groups") or []
        found += [g for g in groups if g.get("name") == value]
        if len(groups) < GROUP_PAGE:
            break
    else:
        raise CliError(f"too many groups to look {value!r} up by name; give the id")
    if not found:
        raise CliError(f"no group named {value!r}")
    if len(found) > 1:
        ids = ", ".join(str(g["id"]) for g in found)
        raise CliError(f"several groups are named {value!r} (ids {ids}); give the id")
    return int(found[0]["id"])


def tree_order(departments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parents before their children, siblings by priority then id; ``tree`` is the indented name."""
    by_parent: dict[int, list[dict[str, Any]]] = {}
    ids = {d["id"] for d in departments}
    for d in departments:
        # An orphan (its parent deleted behind our back) is shown at the top.
        parent = d.get("parent_id") or 0
        by_parent.setdefault(parent if parent in ids else 0, []).append(d)
    ordered: list[dict[str, Any]] = []

    def walk(parent: int, depth: int) -> None:
        for d in sorted(by_parent.get(parent, []), key=lambda d: (d.get("priority", 0), d["id"])):
            if any(d is seen for seen in ordered):
                continue  # a cycle in bad data: show each once
            ordered.append({**d, "tree": "  " * depth + str(d.get("name", ""))})
            walk(d["id"], depth + 1)

    walk(0, 0)
    return ordered


@click.group()
def dept() -> None:
    """Departments (the organisation tree clients show)."""


@dept.command("list")
@admin_options
def dept_list() -> None:
    """List departments as a tree."""
    adm = admin()
    result = adm.call("GET", "/departments")
    adm.show(result, lambda: click.echo(table(tree_order(result["departments"]), DEPT_COLUMNS)))


def _show_department(adm: Admin, result: dict[str, Any], verb: str) -> None:
    d = result["department"]
    adm.show(result, lambda: click.echo(f"{verb} department {d['name']!r} (id {d['id']})"))


@dept.command("add")
@click.argument("name")
@click.option("--parent", default="0", metavar="DEPT", help="Parent department (id or name); 0: top level.")
@click.option("--priority", default=0, show_default=True, help="Order among its siblings.")
@admin_options
def dept_add(name: str, parent: str, priority: int) -> None:
    """Create a department."""
    adm = admin()
    args = {"name": name, "parent_id": resolve_department(adm, parent), "priority": priority}
    _show_department(adm, adm.call("POST", "/departments", args), "created")


@dept.command("rename")
@click.argument("department")
@click.argument("new_name")
@admin_options
def dept_rename(department: str, new_name: str) -> None:
    """Rename DEPARTMENT (id or name) to NEW_NAME."""
    adm = admin()
    dept_id = resolve_department(adm, department)
    _show_department(adm, adm.call("PATCH", f"/departments/{dept_id}", {"name": new_name}), "renamed")


@dept.command("move")
@click.argument("department")
@click.argument("parent")
@click.option("--priority", type=int, default=None, help="Also set its order among its new siblings.")
@admin_options
def dept_move(department: str, parent: str, priority: int | None) -> None:
    """Make DEPARTMENT a child of PARENT (id or name; 0: top level)."""
    adm = admin()
    dept_id = resolve_department(adm, department)
    body: dict[str, Any] = {"parent_id": resolve_department(adm, parent)}
    if priority is not None:
        body["priority"] = priority
    _show_department(adm, adm.call("PATCH", f"/departments/{dept_id}", body), "moved")


@dept.command("delete")
@click.argument("department")
@admin_options
def dept_delete(department: str) -> None:
    """Delete an empty department (no users, no sub-departments)."""
    adm = admin()
    dept_id = resolve_department(adm, department)
    _show_department(adm, adm.call("DELETE", f"/departments/{dept_id}"), "deleted")


@click.group()
def group() -> None:
    """Groups (chat rooms)."""


@group.command("list")
@click.option("--offset", default=0, show_default=True)
@click.option("--limit", default=50, show_default=True, help="At most this many (up to 1000).")
@admin_options
def group_list(offset: int, limit: int) -> None:
    """List groups."""
    adm = admin()
    result = adm.call("GET", "/groups", query={"offset": offset, "limit": limit})

    def human() -> None:
        rows = [{**g, "size": len(g.get("members") or [])} for g in result["groups"]]
        click.echo(table(rows, GROUP_COLUMNS))
        click.echo(f"{len(rows)} of {result.get('total', len(rows))} groups")

    adm.show(result, human)


def _show_group(adm: Admin, result: dict[str, Any], verb: str = "") -> None:
    g = result["group"]

    def human() -> None:
        if verb:
            click.echo(f"{verb} group {g['name']!r} (id {g['id']})")
            return
        click.echo(key_values(g, ["id", "name", "type", "creator_id", "avatar", "version"]))
        click.echo(f"{'members'.ljust(10)}  {' '.join(str(m) for m in g.get('members') or []) or '-'}")

    adm.show(result, human)


@group.command("show")
@click.argument("group", metavar="GROUP")
@admin_options
def group_show(group: str) -> None:
    """Show GROUP (id or name) and its members' ids."""
    adm = admin()
    _show_group(adm, adm.call("GET", f"/groups/{resolve_group(adm, group)}"))


@group.command("create")
@click.argument("name")
@click.argument("members", nargs=-1)
@click.option("--creator", metavar="USER", help="Who owns it (default: the first member).")
@click.option("--temp", is_flag=True, help="A temporary group rather than a normal one.")
@click.option("--avatar", default=None, help="Avatar URL.")
@admin_options
def group_create(
    name: str, members: tuple[str, ...], creator: str | None, temp: bool, avatar: str | None
) -> None:
    """Create group NAME with MEMBERS (ids or names)."""
    if creator is None and not members:
        raise BadUsage("give --creator or at least one member")
    adm = admin()
    body: dict[str, Any] = {
        "name": name,
        "creator": user_ref(creator if creator is not None else members[0]),
        "members": [user_ref(m) for m in members],
        "type": "temp" if temp else "normal",
    }
    if avatar is not None:
        body["avatar"] = avatar
    _show_group(adm, adm.call("POST", "/groups", body), "created")


def _change_members(group: str, add: list[str], remove: list[str]) -> None:
    adm = admin()
    group_id = resolve_group(adm, group)
    body = {"add": [user_ref(u) for u in add], "remove": [user_ref(u) for u in remove]}
    result = adm.call("POST", f"/groups/{group_id}/members", body)

    def human() -> None:
        changed = [("added", result.get("added") or []), ("removed", result.get("removed") or [])]
        for verb, ids in changed:
            if ids:
                click.echo(f"{verb} {', '.join(str(i) for i in ids)}")
        if not any(ids for _, ids in changed):
            click.echo("nothing changed")
        click.echo(f"group {group_id} has {len(result['group'].get('members') or [])} members")

    adm.show(result, human)


@group.command("add")
@click.argument("group", metavar="GROUP")
@click.argument("users", nargs=-1, required=True)
@admin_options
def group_add(group: str, users: tuple[str, ...]) -> None:
    """Add USERS (ids or names) to GROUP (id or name)."""
    _change_members(group, list(users), [])


@group.command("remove")
@click.argument("group", metavar="GROUP")
@click.argument("users", nargs=-1, required=True)
@admin_options
def group_remove(group: str, users: tuple[str, ...]) -> None:
    """Remove USERS (ids or names) from GROUP (id or name)."""
    _change_members(group, [], list(users))


@group.command("dismiss")
@click.argument("group", metavar="GROUP")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@admin_options
def group_dismiss(group: str, yes: bool) -> None:
    """Remove every member of GROUP (id or name); it disappears from their lists."""
    adm = admin()
    group_id = resolve_group(adm, group)
    if not yes:
        click.confirm(f"dismiss group {group_id}?", abort=True, err=True)
    _show_group(adm, adm.call("DELETE", f"/groups/{group_id}"), "dismissed")
