"""The console's directory pages: users, departments, groups.

Each GET renders what an AdminOps read returns (a read that fails shows its
error on the page instead of the data); each POST is one
:meth:`Console.act`. Users are named in URLs by login name, as in the API.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from common.errors import ImError, InvalidArgument
from login_server.admin.api import error_text, http_status, user_ref
from login_server.console.app import ROOT, Console, Form, page_number, page_read, path_part

PAGE = 50  # rows per page of users and groups
MEMBERS_PAGE = 100  # members of a group shown (and looked up by id) per page
PROFILE = ("nick", "gender", "department_id", "email", "real_name", "tel", "sign_info")
GENDERS = {0: "not set", 1: "male", 2: "female"}
NUMBERS = ("gender", "department_id")
_NAMES = re.compile(r"[\s,]+")


def names(text: str) -> list[int | str]:
    """Users typed into one field, separated by commas or spaces (ids or names)."""
    return [user_ref(part) for part in _NAMES.split(text) if part]


def department_tree(departments: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Departments in tree order, each with its depth (orphans at the top level)."""
    by_parent: dict[int, list[dict[str, Any]]] = {}
    ids = {d["id"] for d in departments}
    for dept in departments:
        parent = dept.get("parent_id") or 0
        by_parent.setdefault(parent if parent in ids else 0, []).append(dept)
    ordered: list[tuple[int, dict[str, Any]]] = []
    seen: set[int] = set()

    def walk(parent: int, depth: int) -> None:
        for dept in sorted(by_parent.get(parent, []), key=lambda d: (d.get("priority", 0), d["name"])):
            if dept["id"] in seen:  # a cycle the server would have refused: never loop on one
                continue
            seen.add(dept["id"])
            ordered.append((depth, dept))
            walk(dept["id"], depth + 1)

    walk(0, 0)
    ordered += [(0, d) for d in departments if d["id"] not in seen]
    return ordered


class DirectoryPages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.ops = console.ops

    def routes(self) -> list[web.RouteDef]:
        r, u, g = ROOT, f"{ROOT}/users/{{user}}", f"{ROOT}/groups/{{id:\\d{{1,10}}}}"
        d = f"{ROOT}/departments/{{id:\\d{{1,10}}}}"
        return [
            web.get(f"{r}/users", self.users),
            web.post(f"{r}/users", self.create_user),
            web.get(u, self.user),
            web.post(u, self.update_user),
            web.post(f"{u}/password", self.set_password),
            web.post(f"{u}/disable", self.disable_user),
            web.post(f"{u}/enable", self.enable_user),
            web.post(f"{u}/unlock", self.unlock_user),
            web.get(f"{u}/delete", self.confirm_delete_user),
            web.post(f"{u}/delete", self.delete_user),
            web.get(f"{r}/departments", self.departments),
            web.post(f"{r}/departments", self.create_department),
            web.post(f"{d}/rename", self.rename_department),
            web.get(f"{d}/delete", self.confirm_delete_department),
            web.post(f"{d}/delete", self.delete_department),
            web.get(f"{r}/groups", self.groups),
            web.post(f"{r}/groups", self.create_group),
            web.get(g, self.group),
            web.post(f"{g}/members", self.change_members),
            web.get(f"{g}/dismiss", self.confirm_dismiss_group),
            web.post(f"{g}/dismiss", self.dismiss_group),
        ]

    async def _departments(self) -> list[dict[str, Any]]:
        """For the department pickers: the list, or none if it cannot be read now."""
        result, _ = await page_read(self.ops.list_departments())
        departments: list[dict[str, Any]] = result.get("departments", [])
        return departments

    # -- users -------------------------------------------------------------------------

    async def users(self, request: web.Request) -> web.Response:
        search, number = request.query.get("search", "").strip()[:100], page_number(request)
        result, error = await page_read(self.ops.list_users((number - 1) * PAGE, PAGE, search))
        departments = await self._departments()
        return self.console.render(
            request,
            "users.html",
            title="Users",
            search=search,
            page=number,
            pages=max(1, -(-result.get("total", 0) // PAGE)),
            result=result,
            error=error,
            departments=department_tree(departments),
            department_names={d["id"]: d["name"] for d in departments},
        )

    async def create_user(self, request: web.Request) -> web.Response:
        form = Form(await request.post())

        async def create() -> dict[str, Any]:
            fields: dict[str, Any] = {"name": form.text("name")}
            fields["password"] = form.text("password", strip=False)
            for key in ("nick", "email"):
                if form.text(key):
                    fields[key] = form.text(key)
            if form.text("department_id"):
                fields["department_id"] = form.number("department_id")
            return await self.ops.create_user(fields)

        name = form.text("name")
        return await self.console.act(
            request,
            "create user",
            name,
            create,
            done=lambda r: f"{ROOT}/users/{path_part(r['user']['name'])}",
            failed=f"{ROOT}/users",
            said=lambda r: f"Created user {r['user']['name']} (id {r['user']['id']}).",
            detail=form.detail(),
        )

    async def user(self, request: web.Request) -> web.Response:
        try:
            user = (await self.ops.show_user(user_ref(request.match_info["user"])))["user"]
        except Exception as exc:
            return self.console.refuse(request, http_status(exc), error_text(exc))
        genders = dict(GENDERS)
        genders.setdefault(user["gender"], str(user["gender"]))  # one set through the API stays as it is
        return self.console.render(
            request,
            "user.html",
            title=f"User {user['name']}",
            user=user,
            genders=genders,
            departments=department_tree(await self._departments()),
        )

    async def update_user(self, request: web.Request) -> web.Response:
        name = request.match_info["user"]
        form = Form(await request.post())

        async def update() -> dict[str, Any]:
            # Only what the form changes: a field sent as it was would still
            # count as set by hand (a computed search domain would stop following the nick).
            current = (await self.ops.show_user(user_ref(name)))["user"]
            fields: dict[str, Any] = {}
            for key in PROFILE:
                if key not in form.data:
                    continue  # not on the form (a picker whose list could not be loaded): unchanged
                value: Any = form.text(key)
                if key in NUMBERS:
                    if value == "":
                        continue
                    value = form.number(key)
                if value != current.get(key):
                    fields[key] = value
            return await self.ops.update_user(user_ref(name), fields)

        back = f"{ROOT}/users/{path_part(name)}"
        return await self.console.act(
            request,
            "edit user",
            name,
            update,
            done=back,
            said=f"Saved the profile of {name}.",
            detail=form.detail(),
        )

    async def set_password(self, request: web.Request) -> web.Response:
        name = request.match_info["user"]
        form = Form(await request.post())

        async def passwd() -> dict[str, Any]:
            password = form.text("password", strip=False)
            if not password:
                raise InvalidArgument("type the new password")
            return await self.ops.set_password(user_ref(name), password)

        return await self.console.act(
            request,
            "reset password",
            name,
            passwd,
            done=f"{ROOT}/users/{path_part(name)}",
            said=f"Set a new password for {name} (its failed logins are cleared too).",
        )

    async def _simple(self, request: web.Request, action: str, said: str, op: Any) -> web.Response:
        name = request.match_info["user"]
        return await self.console.act(
            request,
            action,
            name,
            lambda: op(user_ref(name)),
            done=f"{ROOT}/users/{path_part(name)}",
            said=said.format(name=name),
        )

    async def disable_user(self, request: web.Request) -> web.Response:
        return await self._simple(
            request,
            "disable user",
            "Disabled {name}: it cannot log in, and its sessions were closed.",
            self.ops.disable_user,
        )

    async def enable_user(self, request: web.Request) -> web.Response:
        return await self._simple(request, "enable user", "Enabled {name}.", self.ops.enable_user)

    async def unlock_user(self, request: web.Request) -> web.Response:
        return await self._simple(
            request, "unlock user", "Cleared the failed logins of {name}.", self.ops.unlock_user
        )

    async def confirm_delete_user(self, request: web.Request) -> web.Response:
        name = request.match_info["user"]
        return self.console.render(
            request,
            "confirm.html",
            title=f"Delete user {name}",
            question=f"Delete the user {name}? Its sessions are closed and it cannot be undone.",
            action=f"{ROOT}/users/{path_part(name)}/delete",
            button="Delete",
            back=f"{ROOT}/users/{path_part(name)}",
        )

    async def delete_user(self, request: web.Request) -> web.Response:
        name = request.match_info["user"]
        return await self.console.act(
            request,
            "delete user",
            name,
            lambda: self.ops.delete_user(user_ref(name)),
            done=f"{ROOT}/users",
            failed=f"{ROOT}/users/{path_part(name)}",
            said=f"Deleted the user {name}.",
        )

    # -- departments ----------------------------------------------------------------------

    async def departments(self, request: web.Request) -> web.Response:
        result, error = await page_read(self.ops.list_departments())
        return self.console.render(
            request,
            "departments.html",
            title="Departments",
            tree=department_tree(result.get("departments", [])),
            error=error,
        )

    async def create_department(self, request: web.Request) -> web.Response:
        form = Form(await request.post())

        async def create() -> dict[str, Any]:
            return await self.ops.create_department(
                {"name": form.text("name"), "parent_id": form.number("parent_id", 0)}
            )

        return await self.console.act(
            request,
            "create department",
            form.text("name"),
            create,
            done=f"{ROOT}/departments",
            said=lambda r: f"Created the department {r['department']['name']}.",
            detail=form.detail(),
        )

    async def rename_department(self, request: web.Request) -> web.Response:
        dept_id = int(request.match_info["id"])
        form = Form(await request.post())

        async def rename() -> dict[str, Any]:
            return await self.ops.update_department(dept_id, {"name": form.text("name")})

        return await self.console.act(
            request,
            "rename department",
            str(dept_id),
            rename,
            done=f"{ROOT}/departments",
            said=lambda r: f"Renamed department {dept_id} to {r['department']['name']}.",
            detail=form.detail(),
        )

    async def confirm_delete_department(self, request: web.Request) -> web.Response:
        dept_id = int(request.match_info["id"])
        return self.console.render(
            request,
            "confirm.html",
            title=f"Delete department {dept_id}",
            question=f"Delete department {dept_id}? Only an empty department can be deleted.",
            action=f"{ROOT}/departments/{dept_id}/delete",
            button="Delete",
            back=f"{ROOT}/departments",
        )

    async def delete_department(self, request: web.Request) -> web.Response:
        dept_id = int(request.match_info["id"])
        return await self.console.act(
            request,
            "delete department",
            str(dept_id),
            lambda: self.ops.delete_department(dept_id),
            done=f"{ROOT}/departments",
            said=lambda r: f"Deleted the department {r['department']['name']}.",
        )

    # -- groups ---------------------------------------------------------------------------

    async def groups(self, request: web.Request) -> web.Response:
        number = page_number(request)
        result, error = await page_read(self.ops.list_groups((number - 1) * PAGE, PAGE))
        return self.console.render(
            request,
            "groups.html",
            title="Groups",
            page=number,
            pages=max(1, -(-result.get("total", 0) // PAGE)),
            result=result,
            error=error,
        )

    async def create_group(self, request: web.Request) -> web.Response:
        form = Form(await request.post())

        async def create() -> dict[str, Any]:
            kind = form.text("type") or "normal"
            fields = {
                "name": form.text("name"),
                "creator": user_ref(form.text("creator")),
                "members": names(form.text("members")),
                "type": kind,
            }
            return await self.ops.create_group(fields)

        return await self.console.act(
            request,
            "create group",
            form.text("name"),
            create,
            done=lambda r: f"{ROOT}/groups/{r['group']['id']}",
            failed=f"{ROOT}/groups",
            said=lambda r: f"Created the group {r['group']['name']} (id {r['group']['id']}).",
            detail=form.detail(),
        )

    async def group(self, request: web.Request) -> web.Response:
        group_id, number = int(request.match_info["id"]), page_number(request)
        try:
            result = await self.ops.show_group(group_id)
        except Exception as exc:
            return self.console.refuse(request, http_status(exc), error_text(exc))
        group = result["group"]
        shown = group.get("members", [])[(number - 1) * MEMBERS_PAGE : number * MEMBERS_PAGE]
        try:
            known = await self.ops.users_by_id(shown)
        except ImError:
            known = {}
        return self.console.render(
            request,
            "group.html",
            title=f"Group {group['name']}",
            group=group,
            members=[(user_id, known.get(user_id)) for user_id in shown],
            page=number,
            pages=max(1, -(-len(group.get("members", [])) // MEMBERS_PAGE)),
        )

    async def change_members(self, request: web.Request) -> web.Response:
        group_id = int(request.match_info["id"])
        form = Form(await request.post())
        add, remove = names(form.text("add")), names(form.text("remove"))

        def said(result: dict[str, Any]) -> str:
            added, removed = len(result.get("added", [])), len(result.get("removed", []))
            return f"Group {group_id}: {added} added, {removed} removed."

        return await self.console.act(
            request,
            "change group members",
            str(group_id),
            lambda: self.ops.change_members(group_id, add, remove),
            done=f"{ROOT}/groups/{group_id}",
            said=said,
            detail=form.detail(),
        )

    async def confirm_dismiss_group(self, request: web.Request) -> web.Response:
        group_id = int(request.match_info["id"])
        return self.console.render(
            request,
            "confirm.html",
            title=f"Dismiss group {group_id}",
            question=f"Dismiss group {group_id}? Every member is removed from it.",
            action=f"{ROOT}/groups/{group_id}/dismiss",
            button="Dismiss",
            back=f"{ROOT}/groups/{group_id}",
        )

    async def dismiss_group(self, request: web.Request) -> web.Response:
        group_id = int(request.match_info["id"])
        return await self.console.act(
            request,
            "dismiss group",
            str(group_id),
            lambda: self.ops.dismiss_group(group_id),
            done=f"{ROOT}/groups",
            said=lambda r: f"Dismissed the group {r['group']['name']}.",
        )
