"""``imctl sync ldap``: users and departments from LDAP / Active Directory.

Reads the directory (imctl/ldap_sync/source.py), the cluster's users and
departments (admin API), plans (imctl/ldap_sync/plan.py) and prints the
plan; only ``--apply`` changes anything (imctl/ldap_sync/apply.py).
"""

from __future__ import annotations

from typing import Any

import click

from common.config import ConfigError
from common.errors import Forbidden, ImError, InvalidArgument, Unavailable
from imctl.client import EXIT_ERROR, BadUsage, CliError, Unauthorized, Unreachable
from imctl.context import Admin, admin, admin_options
from imctl.ldap_sync.apply import Outcome, Refused, apply
from imctl.ldap_sync.config import load_ldap_config
from imctl.ldap_sync.plan import ClusterDepartment, ClusterUser, Plan, SyncOptions, plan

LIST_PAGE = 1000  # the most users.list gives at once
MAX_USER_PAGES = 10_000  # 10 million users: a bound, not a limit anyone meets


@click.group()
def sync() -> None:
    """Sync users from a company directory."""


class ApiWriter:
    """The plan's steps as admin API calls; a refusal of one step is :class:`Refused`."""

    def __init__(self, adm: Admin) -> None:
        self.adm = adm

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return self.adm.call(method, path, body)
        except (Unreachable, Unauthorized):
            raise  # the whole run stops
        except CliError as exc:
            raise Refused(str(exc)) from None

    def create_department(self, name: str, parent_id: int) -> int:
        return int(
            self._call("POST", "/departments", {"name": name, "parent_id": parent_id})["department"]["id"]
        )

    def create_user(self, fields: dict[str, Any]) -> int:
        return int(self._call("POST", "/users", fields)["user"]["id"])

    def update_user(self, user_id: int, fields: dict[str, Any]) -> None:
        self._call("PATCH", f"/users/{user_id}", fields)

    def set_disabled(self, user_id: int, disabled: bool) -> None:
        self._call("POST", f"/users/{user_id}/{'disable' if disabled else 'enable'}")


def cluster_users(adm: Admin) -> list[ClusterUser]:
    users: list[ClusterUser] = []
    for page in range(MAX_USER_PAGES):
        result = adm.call("GET", "/users", query={"offset": page * LIST_PAGE, "limit": LIST_PAGE})
        users += [ClusterUser.from_json(u) for u in result["users"]]
        if not result["users"] or len(users) >= int(result.get("total", 0)):
            break
    return users


def plan_json(p: Plan) -> dict[str, Any]:
    return {
        "departments": ["/".join(path) for path in p.departments],
        "create": [
            {
                "name": n.login,
                "external_id": n.external_id,
                **n.fields,
                "department": None if n.department is None else "/".join(n.department),
            }
            for n in p.creates
        ],
        "update": [
            {
                "id": u.user_id,
                "name": u.name,
                "fields": u.fields,
                "before": u.before,
                "department": None if u.department is None else "/".join(u.department),
            }
            for u in p.updates
        ],
        "disable": [{"id": c.user_id, "name": c.name, "reason": c.reason} for c in p.disables],
        "enable": [{"id": c.user_id, "name": c.name, "reason": c.reason} for c in p.enables],
        "skipped": [{"dn": s.dn, "login": s.login, "reason": s.reason} for s in p.skipped],
        "disabled_not_created": p.disabled_not_created,
        "changes": p.changes,
    }


def _echo_plan(p: Plan, entries: int) -> None:
    click.echo(f"directory: {entries} user entries")
    for path in p.departments:
        click.echo(f"create department  {'/'.join(path)}")
    for n in p.creates:
        where = "" if n.department is None else f" in {'/'.join(n.department)}"
        click.echo(f"create user        {n.login} ({n.fields.get('nick', n.login)}){where}")
    for u in p.updates:
        changes = [f"{k} {u.before.get(k, '')!r} -> {v!r}" for k, v in u.fields.items()]
        if u.department is not None:
            changes.append(f"department -> {'/'.join(u.department)}")
        click.echo(f"update user        {u.name} (id {u.user_id}): {', '.join(changes)}")
    for c in p.enables:
        click.echo(f"enable user        {c.name} (id {c.user_id}): {c.reason}")
    for c in p.disables:
        click.echo(f"disable user       {c.name} (id {c.user_id}): {c.reason}")
    for s in p.skipped:
        click.echo(f"skip entry         {s.dn or s.login}: {s.reason}")
    if p.disabled_not_created:
        click.echo(f"{p.disabled_not_created} disabled entries have no user here: none is made for them")
    click.echo(f"{p.changes} change(s) planned" if p.changes else "nothing to change")


def _directory_error(exc: ImError) -> CliError:
    if isinstance(exc, Unavailable):
        return Unreachable(str(exc))
    if isinstance(exc, Forbidden):
        return Unauthorized(str(exc))
    if isinstance(exc, InvalidArgument):
        return BadUsage(str(exc))
    return CliError(str(exc))


@sync.command("ldap")
@click.option("--apply", "do_apply", is_flag=True, help="Carry the plan out (default: only print it).")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Go on when the search finds no entries (every synced user would be disabled).",
)
@admin_options
def sync_ldap(do_apply: bool, allow_empty: bool) -> None:
    """Sync users and departments from LDAP or Active Directory ([ldap] table).

    Prints what would change: users to create, update (a new login name in
    the directory renames the same user), enable or disable, departments to
    create. Users gone from the directory are disabled, never deleted; users
    made here are left alone. --apply carries it out; a second run plans
    nothing. The bind password comes from ldap.bind_password_file or
    $IMCLUSTER_LDAP_PASSWORD.

    \b
    Exit codes: as imctl's, and for the directory
      2  bad [ldap] settings, base DN or filter
      3  the LDAP server (or the cluster) unreachable
      4  the LDAP bind (or the admin token) refused
      1  some step of --apply refused (the others are done)
    """
    # ldap3 only when a sync runs: every other imctl command starts without it.
    from imctl.ldap_sync.mapping import synced_fields
    from imctl.ldap_sync.source import LdapSource

    adm = admin()
    try:
        config = load_ldap_config(adm.config_path)
        config.ready()
        password = config.password()
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None
    try:
        with LdapSource(config, password) as source:
            read = source.read()
    except ImError as exc:
        raise _directory_error(exc) from None
    if not read.entries and not allow_empty:
        raise BadUsage(
            f"the search under {config.base_dn!r} with {config.user_filter} found no entries: "
            "check ldap.base_dn and ldap.user_filter (--allow-empty to disable every synced user)"
        )
    options = SyncOptions(fields=synced_fields(config), departments=bool(config.department_from))
    departments = [ClusterDepartment.from_json(d) for d in adm.call("GET", "/departments")["departments"]]
    the_plan = plan(read.entries, cluster_users(adm), departments, options)
    outcome: Outcome | None = None
    if do_apply and the_plan.changes:
        outcome = apply(the_plan, departments, ApiWriter(adm))
    result: dict[str, Any] = {
        "applied": do_apply,
        "entries": len(read.entries),
        "plan": plan_json(the_plan),
    }
    if outcome is not None:
        result["done"] = outcome.done
        result["failed"] = outcome.failed

    def human() -> None:
        _echo_plan(the_plan, len(read.entries))
        if not do_apply:
            if the_plan.changes:
                click.echo("dry run: nothing changed (--apply to carry it out)")
        elif outcome is not None:
            click.echo(f"applied: {outcome.done} done, {len(outcome.failed)} failed")
            for f in outcome.failed:
                click.echo(f"failed: {f['step']} {f['target']}: {f['error']}", err=True)

    adm.show(result, human)
    if outcome is not None and outcome.failed:
        raise click.exceptions.Exit(EXIT_ERROR)
