"""An in-memory cluster behind the admin Backends: users, departments,
groups, sessions, sent messages and the audit trail, answering the admin
methods (docs/admin-api.md) the way db_proxy and route_server do, errors
from the same taxonomy included."""

from __future__ import annotations

import itertools
from typing import Any

from common.errors import Conflict, ImError, InvalidArgument, NotFound
from login_server.admin.backends import DB_PROXY, ROUTE_SERVER, Answer

PROFILE = ("nick", "gender", "department_id", "email", "real_name", "tel", "domain", "status", "sign_info")


class MemoryBackends:
    def __init__(self) -> None:
        self.ids = itertools.count(2)  # 1 is the default department
        self.users: dict[int, dict[str, Any]] = {}
        self.departments: dict[int, dict[str, Any]] = {
            1: {"id": 1, "name": "default", "parent_id": 0, "priority": 0}
        }
        self.groups: dict[int, dict[str, Any]] = {}
        self.sessions: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.kicked: list[int] = []
        self.audit: list[dict[str, Any]] = []
        self.audit_methods = True  # False: db_proxy without audit.record / audit.list (before H4's merge)
        self.failing: dict[str, ImError] = {}  # method -> what it raises
        self.each: dict[str, list[Answer]] = {
            DB_PROXY: [Answer("127.0.0.1:10600", {"node_id": "db-1", "workers": 4, "queue_depths": [0, 2]})],
            ROUTE_SERVER: [
                Answer("127.0.0.1:8200", {"node_id": "route-1", "gateways": [], "online_users": 0})
            ],
        }
        self.calls: list[str] = []

    # -- the Backends protocol -----------------------------------------------------------

    async def call(
        self, service: str, method: str, args: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        self.calls.append(method)
        if method in self.failing:
            raise self.failing[method]
        if method.startswith("audit.") and not self.audit_methods:
            raise InvalidArgument(f"unknown admin method {method!r}")
        handler = getattr(self, "_" + method.replace(".", "_"))
        result: dict[str, Any] = handler(args)
        return result

    async def call_each(
        self, service: str, method: str, args: dict[str, Any], timeout: float = 10.0
    ) -> list[Answer]:
        return self.each[service]

    # -- helpers ------------------------------------------------------------------------------

    def add_user(self, name: str, **fields: Any) -> dict[str, Any]:
        return self._users_create({"name": name, "password": "pw", **fields})["user"]

    def find(self, ref: Any) -> dict[str, Any]:
        for user in self.users.values():
            if user["id"] == ref or user["name"] == ref:
                return user
        raise NotFound(f"no user {ref!r}")

    # -- db_proxy -------------------------------------------------------------------------------

    def _users_create(self, args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("name", "")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("name must not be empty")
        if not args.get("password"):
            raise InvalidArgument("password must not be empty")
        if any(u["name"] == name for u in self.users.values()):
            raise Conflict(f"a user named {name!r} exists")
        user_id = next(self.ids)
        user = {"id": user_id, "name": name, "disabled": False, "updated": 1_700_000_000, "avatar": ""}
        user.update({key: "" for key in PROFILE})
        user.update({"gender": 0, "department_id": 1, "status": 0, "domain": name})
        user.update({k: v for k, v in args.items() if k in PROFILE})
        self.users[user_id] = user
        return {"user": dict(user)}

    def _users_import(self, args: dict[str, Any]) -> dict[str, Any]:
        for row in args["rows"]:
            self._users_create(row)
        return {"created": len(args["rows"]), "skipped": []}

    def _users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        search = args.get("search", "")
        found = [u for u in self.users.values() if search in u["name"] or search in u["nick"]]
        offset, limit = args.get("offset", 0), args.get("limit", 50)
        return {"users": [dict(u) for u in found[offset : offset + limit]], "total": len(found)}

    def _users_show(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": dict(self.find(args.get("user")))}

    def _users_names(self, args: dict[str, Any]) -> dict[str, Any]:
        """issue 13 H6's method (the API's /online names its sessions with it once merged)."""
        found = [self.users[i] for i in args["ids"] if i in self.users]
        return {"users": [{"id": u["id"], "name": u["name"], "nick": u["nick"] or u["name"]} for u in found]}

    def _users_update(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.find(args["user"])
        unknown = set(args["fields"]) - set(PROFILE)
        if unknown:
            raise InvalidArgument(f"users.update: unknown field(s) {', '.join(sorted(unknown))}")
        user.update(args["fields"])
        return {"user": dict(user)}

    def _users_passwd(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": dict(self.find(args["user"]))}

    def _users_unlock(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": dict(self.find(args["user"]))}

    def _users_disable(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.find(args["user"])
        user["disabled"] = True
        return {"user": dict(user)}

    def _users_enable(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.find(args["user"])
        user["disabled"] = False
        return {"user": dict(user)}

    def _users_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.find(args["user"])
        del self.users[user["id"]]
        return {"user": user}

    def _depts_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"departments": [dict(d) for d in self.departments.values()]}

    def _depts_create(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("name"):
            raise InvalidArgument("name must not be empty")
        dept_id = next(self.ids)
        dept = {"id": dept_id, "name": args["name"], "parent_id": args.get("parent_id", 0), "priority": 0}
        self.departments[dept_id] = dept
        return {"department": dict(dept)}

    def _depts_update(self, args: dict[str, Any]) -> dict[str, Any]:
        dept = self.departments.get(args["id"])
        if dept is None:
            raise NotFound(f"no department {args['id']}")
        dept.update({k: v for k, v in args.items() if k in ("name", "parent_id")})
        return {"department": dict(dept)}

    def _depts_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        dept_id = args["id"]
        if dept_id not in self.departments:
            raise NotFound(f"no department {dept_id}")
        if any(u["department_id"] == dept_id for u in self.users.values()) or any(
            d["parent_id"] == dept_id for d in self.departments.values()
        ):
            raise Conflict(f"department {dept_id} is not empty")
        return {"department": self.departments.pop(dept_id)}

    def _groups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        groups = list(self.groups.values())
        offset, limit = args.get("offset", 0), args.get("limit", 50)
        return {"groups": [dict(g) for g in groups[offset : offset + limit]], "total": len(groups)}

    def _groups_create(self, args: dict[str, Any]) -> dict[str, Any]:
        creator = self.find(args.get("creator"))
        members = [self.find(m)["id"] for m in args.get("members", [])]
        group_id = next(self.ids)
        group = {
            "id": group_id,
            "name": args["name"],
            "avatar": "",
            "creator_id": creator["id"],
            "type": args.get("type", "normal"),
            "version": 1,
            "members": sorted({creator["id"], *members}),
        }
        self.groups[group_id] = group
        return {"group": dict(group)}

    def _group(self, group_id: int) -> dict[str, Any]:
        group = self.groups.get(group_id)
        if group is None:
            raise NotFound(f"no group {group_id}")
        return group

    def _groups_show(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"group": dict(self._group(args["id"]))}

    def _groups_members(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self._group(args["id"])
        added = [self.find(u)["id"] for u in args["add"]]
        removed = [self.find(u)["id"] for u in args["remove"]]
        group["members"] = sorted((set(group["members"]) | set(added)) - set(removed))
        return {"group": dict(group), "added": added, "removed": removed}

    def _groups_dismiss(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self._group(args["id"])
        group["members"] = []
        return {"group": dict(group)}

    def _send(self, args: dict[str, Any]) -> dict[str, Any]:
        if "to_user" in args:
            self.find(args["to_user"])
        else:
            self._group(args["to_group"])
        self.sent.append(args)
        return {"msg_id": len(self.sent), "session_type": 1, "to": 0}

    def _audit_record(self, args: dict[str, Any]) -> dict[str, Any]:
        self.audit.append({"id": len(self.audit) + 1, **args})
        return {"id": len(self.audit)}

    def _audit_list(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = [
            e
            for e in reversed(self.audit)
            if (not args.get("who") or e["who"] == args["who"])
            and e["action"].startswith(args.get("action", ""))
            and e["id"] < args.get("before_id", 2**62)
        ]
        limit = args.get("limit", 100)
        page = entries[:limit]
        return {"entries": page, "next_before_id": page[-1]["id"] if len(entries) > limit else None}

    # -- route_server ----------------------------------------------------------------------------

    def _online(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"sessions": list(self.sessions)}

    def _kick(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args["user_id"]
        before = len(self.sessions)
        self.sessions = [s for s in self.sessions if s["user_id"] != user_id]
        self.kicked.append(user_id)
        return {"kicked": before - len(self.sessions)}
