"""Admin methods served by db_proxy (see docs/admin-api.md): users,
departments, groups, sending messages, and this process's status.

Every change goes through the store operations clients' requests use, so
connected clients see it as another client's change: profile changes bump
``updated`` (incremental sync), member changes raise group versions and are
pushed as IMGroupChangeMemberNotify, messages are stored and pushed by the
ordered workers like any other.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from common.admin import AdminMethod
from common.commands import Cmd
from common.errors import Conflict, Forbidden, InvalidArgument, NotFound, Unavailable
from common.pb import base_pb2, group_pb2, internal_pb2
from common.teamtalk_text import encode_text
from db_proxy import admin_args as a
from db_proxy.admin_import import UserImport
from db_proxy.cache import ThrottleCounters
from db_proxy.config import DbProxyConfig
from db_proxy.groups import MAX_GROUP_MEMBERS
from db_proxy.passwords import hash_password, md5_hex
from db_proxy.storage import schema
from db_proxy.storage.model import (
    SESSION_GROUP,
    SESSION_SINGLE,
    Department,
    DuplicateName,
    Group,
    NewMessage,
    Store,
    UnknownGroup,
    User,
)
from db_proxy.storage.sql_base import I32, U32_MAX
from db_proxy.workers import MessageWorkers

# Where an admin message comes from, for the gateways: no client connection
# sent it, so every connection of the recipients (the sender's too) gets it.
ADMIN_ORIGIN = internal_pb2.Origin(gateway_id="admin", conn_id=0)
MAX_TEXT_BYTES = 45_000  # UTF-8; encoded for TeamTalk clients it still fits their 64 KiB frame
UNUSABLE_PASSWORD = "!"  # no scrypt hash: verify_password never accepts anything
PING_TIMEOUT = 1.5  # each of database and Redis, checked together: the HTTP API waits 3 s

Deliver = Callable[[internal_pb2.RouteDeliver], bool]


class DbAdmin:
    def __init__(
        self,
        config: DbProxyConfig,
        store: Store,
        workers: MessageWorkers,
        redis: Any | None,
        deliver: Deliver | None = None,
        throttle: ThrottleCounters | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.workers = workers
        self.redis = redis
        self.deliver = deliver
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
        }
        return table

    # -- lookups ------------------------------------------------------------------

    async def _user(self, ref: int | str) -> User:
        """The user named by id or login name (a decimal string is tried as an id first)."""
        user: User | None = None
        if isinstance(ref, int) or a.is_decimal(ref):
            found = [u for u in await self.store.users_by_id([int(ref)]) if not u.deleted]
            user = found[0] if found else None
        if user is None and isinstance(ref, str):
            user = await self.store.user_by_name(ref)
        if user is None or user.deleted:
            raise NotFound(f"no user {ref!r}")
        return user

    async def _users(self, refs: Iterable[int | str]) -> list[int]:
        """The ids of the named users, each once, in the order named."""
        return list(dict.fromkeys([(await self._user(ref)).id for ref in refs]))

    async def _department(self, dept_id: int) -> Department:
        department = await self.store.department_by_id(dept_id)
        if department is None or department.deleted:
            raise NotFound(f"no department {dept_id}")
        return department

    async def _group(self, group_id: int) -> Group:
        group = await self.store.group_by_id(group_id)
        if group is None or group.dismissed:
            raise NotFound(f"no group {group_id}")
        return group

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(hash_password, md5_hex(password), self.config.password_log2_n)

    # -- users ----------------------------------------------------------------------

    async def create_user(self, args: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in args.items() if k not in ("name", "password")}
        values = a.profile(fields, a.CREATE_FIELDS, "users.create")
        name = a.login_name(args.get("name"))
        password = a.password(args.get("password"))
        values.setdefault("nick", name)
        department_id = values.get("department_id", 0)
        if isinstance(department_id, int) and department_id:
            await self._department(department_id)
        if await self.store.user_by_name(name) is not None:
            raise Conflict(f"a user named {name!r} exists")
        user_id = await self.store.create_user(name, await self._hash(password), **values)
        return {"user": a.user_json(await self._user(user_id))}

    async def list_users(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"offset", "limit", "search"}, "users.list")
        offset, limit = a.page(args)
        search = a.text(args.get("search", ""), "search", 255)
        users, total = await self.store.list_users(offset, limit, search)
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
        department_id = values.get("department_id")
        if isinstance(department_id, int) and department_id and department_id != user.department_id:
            await self._department(department_id)
        return {"user": a.user_json(await self._change(user, **values) if values else user)}

    async def set_password(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"user", "password"}, "users.passwd")
        password = a.password(args.get("password"))
        user = await self._user(a.user_ref(args.get("user"), "user"))
        changed = await self._change(user, password_hash=await self._hash(password))
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
        return {"user": a.user_json(await self._change(user, disabled=disabled))}

    async def _change(self, user: User, **values: object) -> User:
        changed = await self.store.update_user_profile(user.id, **values)
        if changed is None or changed.deleted:
            raise NotFound(f"no user {user.id}")
        return changed

    async def delete_user(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"user"}, "users.delete")
        user = await self._user(a.user_ref(args.get("user"), "user"))
        before = await self.store.delete_user(user.id)
        if before is None:
            raise NotFound(f"no user {user.id}")
        # A deleted user can join nothing (the store ignores it), so this
        # leaves it in no group.
        for group_id in await self.store.group_ids_of(user.id):
            try:
                after, changed = await self.store.change_group_members(group_id, [], [user.id])
            except UnknownGroup:
                continue
            self._tell_members(after, base_pb2.GROUP_MODIFY_TYPE_DEL, changed, [*after.members, *changed])
        return {"user": a.user_json(before)}

    async def import_users(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"rows"}, "users.import")
        run = UserImport(self.store, await self.store.departments(), self._hash)
        created, skipped = await run.run(args.get("rows"))
        return {"created": created, "skipped": skipped}

    # -- departments ----------------------------------------------------------------

    async def list_departments(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, set(), "depts.list")
        return {"departments": [a.department_json(d) for d in await self.store.departments()]}

    async def create_department(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"name", "parent_id", "priority"}, "depts.create")
        name = a.text(args.get("name"), "name", schema.DEPARTMENT_NAME_LIMIT, empty=False)
        parent_id = a.optional_int(args, "parent_id", 0, 0, U32_MAX)
        priority = a.optional_int(args, "priority", 0, *I32)
        if parent_id:
            await self._department(parent_id)
        dept_id = await self.store.create_department(name, parent_id, priority)
        return {"department": a.department_json(await self._department(dept_id))}

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
        if name is None and parent_id is None and priority is None:
            return {"department": a.department_json(await self._department(dept_id))}
        department = await self.store.update_department(
            dept_id, name=name, parent_id=parent_id, priority=priority
        )
        return {"department": a.department_json(department)}

    async def delete_department(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"id"}, "depts.delete")
        return {"department": a.department_json(await self.store.delete_department(a.object_id(args)))}

    # -- groups ------------------------------------------------------------------------

    async def create_group(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"name", "creator", "members", "type", "avatar"}, "groups.create")
        name = a.text(args.get("name"), "name", schema.GROUP_TEXT_LIMITS["name"], empty=False)
        avatar = a.text(args.get("avatar", ""), "avatar", schema.GROUP_TEXT_LIMITS["avatar"])
        group_type = a.GROUP_TYPES.get(args.get("type", "normal"))
        if group_type is None:
            raise InvalidArgument('type must be "normal" or "temp"')
        creator = await self._user(a.user_ref(args.get("creator"), "creator"))
        members = await self._users([creator.id, *a.user_refs(args.get("members"), "members")])
        if len(members) > MAX_GROUP_MEMBERS:
            raise InvalidArgument(f"{len(members)} members, more than {MAX_GROUP_MEMBERS}")
        group = await self.store.create_group(name, avatar, creator.id, group_type, members)
        self._tell_members(group, base_pb2.GROUP_MODIFY_TYPE_ADD, list(group.members), group.members)
        return {"group": a.group_json(group)}

    async def list_groups(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"offset", "limit"}, "groups.list")
        offset, limit = a.page(args)
        groups, total = await self.store.list_groups(offset, limit)
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
        if len(set(group.members).union(add)) > MAX_GROUP_MEMBERS:
            raise InvalidArgument(f"group {group_id} would have more than {MAX_GROUP_MEMBERS} members")
        after, changed = await self.store.change_group_members(group_id, add, remove)
        added = [u for u in changed if u in after.members]
        removed = [u for u in changed if u not in after.members]
        self._tell_members(after, base_pb2.GROUP_MODIFY_TYPE_ADD, added, after.members)
        self._tell_members(after, base_pb2.GROUP_MODIFY_TYPE_DEL, removed, [*after.members, *removed])
        return {"group": a.group_json(after), "added": added, "removed": removed}

    async def dismiss_group(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"id"}, "groups.dismiss")
        after, removed = await self.store.dismiss_group(a.object_id(args))
        self._tell_members(after, base_pb2.GROUP_MODIFY_TYPE_DEL, removed, removed)
        return {"group": a.group_json(after)}

    def _tell_members(
        self,
        group: Group,
        change_type: base_pb2.GroupModifyType.ValueType,
        changed: list[int],
        told: Iterable[int],
    ) -> None:
        """IMGroupChangeMemberNotify, as a client's change would push it (its
        creator named as the one who changed it)."""
        recipients = sorted(set(told))
        if not changed or not recipients or self.deliver is None:
            return
        notify = group_pb2.IMGroupChangeMemberNotify(
            user_id=group.creator_id,
            change_type=change_type,
            group_id=group.id,
            cur_user_id_list=list(group.members),
            chg_user_id_list=changed,
        )
        self.deliver(
            internal_pb2.RouteDeliver(
                user_ids=recipients,
                command_id=Cmd.GROUP_CHANGE_MEMBER_NOTIFY,
                body=notify.SerializeToString(),
            )
        )

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
            sender = await self.system_user()
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
        message = NewMessage(
            sender.id, session_type, to_id, msg_type, body, int(time.time()), trusted=trusted
        )
        # Membership is checked again at the commit (the workers answer ERR_FORBIDDEN).
        saved = await self.workers.save(message, ADMIN_ORIGIN)
        return {"msg_id": saved.msg_id, "session_type": session_type, "to": to_id}

    async def system_user(self) -> User:
        """The account admin messages come from, created on first use."""
        name = self.config.system_user
        user = await self.store.user_by_name(name)
        if user is None:
            try:
                await self.store.create_user(name, UNUSABLE_PASSWORD, nick=name)
            except DuplicateName:
                pass  # created meanwhile by another call
            user = await self.store.user_by_name(name)
        if user is None:
            raise Unavailable(f"cannot create the system user {name!r}")
        return user

    # -- status -----------------------------------------------------------------------

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        database, redis = await asyncio.gather(self._database_state(), self._redis_state())
        return {
            "node_id": self.config.node_id,
            "workers": len(self.workers.queues),
            "queue_depths": self.workers.depths(),
            "committed": self.workers.committed,
            "database": database,
            "redis": redis,
        }

    async def _database_state(self) -> str:
        try:
            ok = await asyncio.wait_for(self.store.ping(), PING_TIMEOUT)
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
