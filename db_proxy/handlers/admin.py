"""Admin methods served by db_proxy (see docs/admin-api.md): users,
departments, groups, sending messages, and this process's status.

Here only the arguments are checked and the results shaped; every change is
the service operation a client's request runs (:mod:`db_proxy.services`),
and its notices are pushed by the same code, with the origin "admin" (no
connection sent it, so every connection of the recipients hears it): profile
changes bump ``updated`` and announce avatar and sign info, member changes
raise group versions and push IMGroupChangeMemberNotify, messages are stored
and pushed by the ordered workers like any other.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from typing import Any, TypeVar

from common.admin import AdminMethod
from common.errors import Forbidden, InvalidArgument, NotFound
from common.pb import base_pb2
from common.teamtalk_text import encode_text
from db_proxy.cache import ThrottleCounters
from db_proxy.config import DbProxyConfig
from db_proxy.handlers import admin_args as a
from db_proxy.handlers.admin_audit import audit_methods
from db_proxy.handlers.admin_import import UserImport
from db_proxy.notices import ADMIN_ORIGIN, Notices
from db_proxy.services.outcome import Outcome
from db_proxy.services.registry import Services
from db_proxy.storage import schema
from db_proxy.storage.model import SESSION_GROUP, SESSION_SINGLE, Group, User
from db_proxy.storage.sql_base import I32, U32_MAX

MAX_TEXT_BYTES = 45_000  # UTF-8; encoded for TeamTalk clients it still fits their 64 KiB frame
MAX_NAME_IDS = 5000  # users.names: ids a call may ask for
PING_TIMEOUT = 1.5  # each of database and Redis, checked together: the HTTP API waits 3 s

T = TypeVar("T")


class DbAdmin:
    def __init__(
        self,
        config: DbProxyConfig,
        services: Services,
        notices: Notices,
        redis: Any | None,
        throttle: ThrottleCounters | None = None,
    ) -> None:
        self.config = config
        self.services = services
        self.users = services.users
        self.groups = services.groups
        self.departments = services.departments
        self.notices = notices
        self.redis = redis
        self.throttle = throttle

    def methods(self) -> dict[str, AdminMethod]:
        table: dict[str, AdminMethod] = {
            "users.create": self.create_user,
            "users.list": self.list_users,
            "users.show": self.show_user,
            "users.update": self.update_user,
            "users.passwd": self.set_password,
            "users.unlock": self.unlock_user,
            "users.disable": functools.partial(self.set_disabled, disabled=True),
            "users.enable": functools.partial(self.set_disabled, disabled=False),
            "users.delete": self.delete_user,
            "users.import": self.import_users,
            "users.names": self.user_names,
            "depts.list": self.list_departments,
            "depts.create": self.create_department,
            "depts.update": self.update_department,
            "depts.delete": self.delete_department,
            "groups.create": self.create_group,
            "groups.list": self.list_groups,
            "groups.show": self.show_group,
            "groups.members": self.change_members,
            "groups.dismiss": self.dismiss_group,
            "send": self.send,
            "status": self.status,
            **audit_methods(self.config, self.services),  # audit, export, retention
        }
        return table

    def _pushed(self, outcome: Outcome[T]) -> T:
        """The result of a service operation whose notices are now on their way."""
        self.notices.publish(outcome.notices, ADMIN_ORIGIN)
        return outcome.result

    # -- lookups ------------------------------------------------------------------

    async def _user(self, ref: int | str) -> User:
        """The user named by id or login name (a decimal string is tried as an id first)."""
        user: User | None = None
        if isinstance(ref, int) or a.is_decimal(ref):
            try:
                user = await self.users.get(int(ref))
            except NotFound:
                user = None
        if user is None and isinstance(ref, str):
            user = await self.services.directory.user_by_name(ref)
        if user is None or user.deleted:
            raise NotFound(f"no user {ref!r}")
        return user

    async def _users(self, refs: Iterable[int | str]) -> list[int]:
        """The ids of the named users, each once, in the order named."""
        return list(dict.fromkeys([(await self._user(ref)).id for ref in refs]))

    async def _group(self, group_id: int) -> Group:
        group = await self.services.store.group_by_id(group_id)
        if group is None or group.dismissed:
            raise NotFound(f"no group {group_id}")
        return group

    # -- users ----------------------------------------------------------------------

    async def create_user(self, args: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in args.items() if k not in ("name", "password")}
        values = a.profile(fields, a.CREATE_FIELDS, "users.create")
        name = a.login_name(args.get("name"))
        # A directory's user (imctl sync ldap) may come without one: it gets none that works.
        password = (
            None
            if args.get("password") is None and values.get("external_id")
            else a.password(args.get("password"))
        )
        values.setdefault("nick", name)
        return {"user": a.user_json(await self.users.create(name, password, **values))}

    async def list_users(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"offset", "limit", "search"}, "users.list")
        offset, limit = a.page(args)
        search = a.text(args.get("search", ""), "search", 255)
        users, total = await self.services.directory.list_users(offset, limit, search)
        return {"users": [a.user_json(u) for u in users], "total": total}

    async def show_user(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"user"}, "users.show")
        return {"user": a.user_json(await self._user(a.user_ref(args.get("user"), "user")))}

    async def update_user(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"user", "fields"}, "users.update")
        fields = args.get("fields")
        if not isinstance(fields, dict):
            raise InvalidArgument("fields must be an object")
        values = a.profile(fields, a.UPDATE_FIELDS, "users.update fields")
        user = await self._user(a.user_ref(args.get("user"), "user"))
        if values.get("department_id") == user.department_id:
            del values["department_id"]  # unchanged: not checked again (it may be deleted since)
        if not values:
            return {"user": a.user_json(user)}
        return {"user": a.user_json(self._pushed(await self.users.update_profile(user.id, **values)))}

    async def set_password(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"user", "password"}, "users.passwd")
        password = a.password(args.get("password"))
        user = await self._user(a.user_ref(args.get("user"), "user"))
        changed = self._pushed(await self.users.set_password(user.id, password))
        await self._unlock(user)  # the old password's guessers have nothing left to guess
        return {"user": a.user_json(changed)}

    async def unlock_user(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"user"}, "users.unlock")
        user = await self._user(a.user_ref(args.get("user"), "user"))
        await self._unlock(user)
        return {"user": a.user_json(user)}

    async def _unlock(self, user: User) -> None:
        """Clear the user's failed-login counters, from every address."""
        if self.throttle is not None:
            await self.throttle.unlock(user.name)

    async def set_disabled(self, args: dict[str, Any], *, disabled: bool) -> dict[str, Any]:
        a.check_keys(args, {"user"}, "users.disable" if disabled else "users.enable")
        user = await self._user(a.user_ref(args.get("user"), "user"))
        return {"user": a.user_json(self._pushed(await self.users.set_disabled(user.id, disabled)))}

    async def delete_user(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"user"}, "users.delete")
        user = await self._user(a.user_ref(args.get("user"), "user"))
        return {"user": a.user_json(self._pushed(await self.users.delete(user.id)))}

    async def user_names(self, args: dict[str, Any]) -> dict[str, Any]:
        """The name and nick of each user id given that exists, not deleted (for lists of ids:
        who is online, a group's members)."""
        a.check_keys(args, {"ids"}, "users.names")
        ids = args.get("ids")
        if not isinstance(ids, list) or len(ids) > MAX_NAME_IDS:
            raise InvalidArgument(f"ids must be a list of at most {MAX_NAME_IDS} user ids")
        wanted = [a.integer(i, "ids", 1, U32_MAX) for i in ids]
        users = await self.services.directory.users_by_id(wanted)
        return {
            "users": [{"id": u.id, "name": u.name, "nick": u.nick or u.name} for u in users if not u.deleted]
        }

    async def import_users(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"rows"}, "users.import")
        run = UserImport(self.services.directory, await self.departments.all(), self.users)
        created, skipped = await run.run(args.get("rows"))
        return {"created": created, "skipped": skipped}

    # -- departments ----------------------------------------------------------------

    async def list_departments(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, set(), "depts.list")
        return {"departments": [a.department_json(d) for d in await self.departments.all()]}

    async def create_department(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"name", "parent_id", "priority"}, "depts.create")
        name = a.text(args.get("name"), "name", schema.DEPARTMENT_NAME_LIMIT, empty=False)
        parent_id = a.optional_int(args, "parent_id", 0, 0, U32_MAX)
        priority = a.optional_int(args, "priority", 0, *I32)
        return {"department": a.department_json(await self.departments.create(name, parent_id, priority))}

    async def update_department(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"id", "name", "parent_id", "priority"}, "depts.update")
        dept_id = a.object_id(args)
        name = args.get("name")
        if name is not None:
            name = a.text(name, "name", schema.DEPARTMENT_NAME_LIMIT, empty=False)
        parent_id = args.get("parent_id")
        if parent_id is not None:
            parent_id = a.integer(parent_id, "parent_id", 0, U32_MAX)
        priority = args.get("priority")
        if priority is not None:
            priority = a.integer(priority, "priority", *I32)
        department = await self.departments.update(dept_id, name=name, parent_id=parent_id, priority=priority)
        return {"department": a.department_json(department)}

    async def delete_department(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"id"}, "depts.delete")
        return {"department": a.department_json(await self.departments.delete(a.object_id(args)))}

    # -- groups ------------------------------------------------------------------------

    async def create_group(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"name", "creator", "members", "type", "avatar"}, "groups.create")
        name = a.text(args.get("name"), "name", schema.GROUP_TEXT_LIMITS["name"], empty=False)
        avatar = a.text(args.get("avatar", ""), "avatar", schema.GROUP_TEXT_LIMITS["avatar"])
        group_type = a.GROUP_TYPES.get(args.get("type", "normal"))
        if group_type is None:
            raise InvalidArgument('type must be "normal" or "temp"')
        creator = await self._user(a.user_ref(args.get("creator"), "creator"))
        members = await self._users(a.user_refs(args.get("members"), "members"))
        group = self._pushed(await self.groups.create(creator.id, name, avatar, group_type, members))
        return {"group": a.group_json(group)}

    async def list_groups(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"offset", "limit"}, "groups.list")
        offset, limit = a.page(args)
        groups, total = await self.services.store.list_groups(offset, limit)
        return {"groups": [a.group_json(g) for g in groups], "total": total}

    async def show_group(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"id"}, "groups.show")
        return {"group": a.group_json(await self._group(a.object_id(args)))}

    async def change_members(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"id", "add", "remove"}, "groups.members")
        group_id = a.object_id(args)
        add_refs, remove_refs = a.user_refs(args.get("add"), "add"), a.user_refs(args.get("remove"), "remove")
        group = await self._group(group_id)
        add, remove = await self._users(add_refs), await self._users(remove_refs)
        # Named by its creator, as if the creator had changed it.
        change = self._pushed(await self.groups.change_members(group, group.creator_id, add, remove))
        return {"group": a.group_json(change.group), "added": change.added, "removed": change.removed}

    async def dismiss_group(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"id"}, "groups.dismiss")
        return {"group": a.group_json(self._pushed(await self.groups.dismiss(a.object_id(args))))}

    # -- messages -------------------------------------------------------------------

    async def send(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"from", "to_user", "to_group", "text"}, "send")
        text = a.text(args.get("text"), "text", MAX_TEXT_BYTES, empty=False)
        if len(text.encode()) > MAX_TEXT_BYTES:
            raise InvalidArgument(f"text is longer than {MAX_TEXT_BYTES} bytes of UTF-8")
        # Written as TeamTalk's clients write text, so they can show it.
        body = encode_text(text) if self.config.admin_text_encoding == "teamtalk" else text.encode()
        if ("to_user" in args) == ("to_group" in args):
            raise InvalidArgument("send needs exactly one of to_user and to_group")
        sender_ref = a.user_ref(args.get("from"), "from")
        if sender_ref == "system":
            sender = await self.users.system_user(self.config.system_user)
        else:
            sender = await self._user(sender_ref)
        trusted = sender.name == self.config.system_user
        if "to_user" in args:
            session_type, msg_type = SESSION_SINGLE, base_pb2.MSG_TYPE_SINGLE_TEXT
            to_id = (await self._user(a.user_ref(args["to_user"], "to_user"))).id
        else:
            session_type, msg_type = SESSION_GROUP, base_pb2.MSG_TYPE_GROUP_TEXT
            group = await self._group(a.object_id(args, "to_group"))
            if not trusted and sender.id not in group.members:
                raise Forbidden(f"user {sender.id} is not a member of group {group.id}")
            to_id = group.id
        # Membership is checked again at the commit (the workers answer ERR_FORBIDDEN).
        saved = await self.services.messages.send(
            sender.id, session_type, to_id, msg_type, body, ADMIN_ORIGIN, trusted=trusted
        )
        return {"msg_id": saved.msg_id, "session_type": session_type, "to": to_id}

    # -- status -----------------------------------------------------------------------

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        database, redis = await asyncio.gather(self._database_state(), self._redis_state())
        workers = self.services.messages.workers
        return {
            "node_id": self.config.node_id,
            "roles": list(self.config.served_roles),
            "workers": len(workers.queues),
            "queue_depths": workers.depths(),
            "committed": workers.committed,
            "database": database,
            "redis": redis,
        }

    async def _database_state(self) -> str:
        directory, store = self.services.directory, self.services.store
        try:
            pings = [directory.ping()] if store is directory else [directory.ping(), store.ping()]
            ok = all(await asyncio.wait_for(asyncio.gather(*pings), PING_TIMEOUT))
        except TimeoutError:
            return f"no answer within {PING_TIMEOUT:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok" if ok else "unreachable"

    async def _redis_state(self) -> str:
        if self.redis is None:
            return "off"
        try:
            await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT)
        except TimeoutError:
            return f"no answer within {PING_TIMEOUT:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok"
