"""Users: create (one or many), change a profile or password, disable, delete.

Users live in the directory store. A profile change of what clients show of
others (avatar, sign info) is announced to the user's watchers; a deleted
user leaves its groups (the messages store) and is forgotten by every
db_proxy's cache of known users.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from common.commands import Cmd
from common.errors import Conflict, NotFound, Unavailable
from common.pb import buddy_pb2
from db_proxy.hash_pool import HashPool, hash_in_bulk
from db_proxy.recipients import KnownUsers
from db_proxy.services.departments import DepartmentService
from db_proxy.services.groups import GroupService
from db_proxy.services.outcome import Notice, Outcome, ProfileNotice, UsersGone
from db_proxy.storage.model import DuplicateName, Store, User
from db_proxy.storage.schema import USER_KIND_SYSTEM
from db_proxy.storage.sql_base import TransientError
from db_proxy.user_rows import UserRows

log = logging.getLogger(__name__)

UNUSABLE_PASSWORD = "!"
CREATE_ATTEMPTS = 4  # a batch of new users that loses a deadlock is run again this often in all
#: Fields whose change the other db_proxies hear of at once (DbInvalidate): what a login checks.
LOGIN_FIELDS = frozenset(
    {"password_hash", "disabled", "name"}
)  # no scrypt hash: verify_password never accepts anything


def profile_notices(user: User, fields: set[str]) -> tuple[Notice, ...]:
    """What the user's watchers hear of a change to ``fields``: its avatar and sign info."""
    notifies: list[tuple[int, Message]] = []
    if "avatar" in fields:
        notify = buddy_pb2.IMAvatarChangedNotify(changed_user_id=user.id, avatar_url=user.avatar)
        notifies.append((Cmd.AVATAR_CHANGED_NOTIFY, notify))
    if "sign_info" in fields:
        sign = buddy_pb2.IMSignInfoChangedNotify(changed_user_id=user.id, sign_info=user.sign_info)
        notifies.append((Cmd.SIGN_INFO_CHANGED_NOTIFY, sign))
    return tuple(ProfileNotice(user.id, command_id, n.SerializeToString()) for command_id, n in notifies)


#: A user to create: login name, plain password, profile fields.
NewAccount = tuple[str, str, dict[str, object]]


class UserService:
    def __init__(
        self,
        directory: Store,
        known: KnownUsers,
        groups: GroupService,
        departments: DepartmentService,
        password_log2_n: int,
        rows: UserRows | None = None,
        hash_pool: HashPool | None = None,
    ) -> None:
        self.directory = directory
        self.hash_pool = hash_pool  # its bulk lane: an import never holds up the logins
        self.known = known
        # The login's kept rows (db_proxy/user_rows.py): every change here drops the user's.
        self.rows = rows if rows is not None else UserRows(directory, ttl=0)
        self.groups = groups
        self.departments = departments
        self.password_log2_n = password_log2_n

    async def hash(self, password: str) -> str:
        """A password as stored (scrypt of its md5, as TeamTalk clients send it), in a hashing thread."""
        return await hash_in_bulk(self.hash_pool, password, self.password_log2_n)

    async def create(self, name: str, password: str | None, **profile: Any) -> User:
        """A new user; ``password`` None: none that works (no hash to compute or crack)."""
        department_id = profile.get("department_id", 0)
        if isinstance(department_id, int) and department_id:
            await self.departments.get(department_id)
        if await self.directory.user_by_name(name) is not None:  # known before paying for a hash
            raise Conflict(f"a user named {name!r} exists")
        if password is None:
            (user_id,) = await self.directory.create_users([(name, UNUSABLE_PASSWORD, profile)])
        else:
            (user_id,) = await self.create_many([(name, password, profile)])
        if user_id is None:
            raise Conflict(f"a user named {name!r} exists")
        return await self.get(user_id)

    async def create_many(self, accounts: Sequence[NewAccount]) -> list[int | None]:
        """The new users' ids (None for a name taken), written in one transaction;
        the passwords are hashed concurrently on the hashing threads (scrypt releases the GIL)."""
        if not accounts:
            return []
        hashes = await asyncio.gather(*(self.hash(password) for _, password, _ in accounts))
        rows = [(name, h, profile) for (name, _, profile), h in zip(accounts, hashes, strict=True)]
        # Two imports at once (imctl keeps two chunks in flight) can deadlock in
        # InnoDB's unique-name index; the loser's transaction was rolled back
        # whole, so it is run again (names taken meanwhile come back as None).
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                return await self.directory.create_users(rows)
            except TransientError:
                if attempt == CREATE_ATTEMPTS:
                    raise
                log.info("creating %d users lost a lock race (attempt %d); again", len(rows), attempt)
                await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    async def get(self, user_id: int) -> User:
        found = [u for u in await self.directory.users_by_id([user_id]) if not u.deleted]
        if not found:
            raise NotFound(f"no user {user_id}")
        return found[0]

    async def update_profile(self, user_id: int, **values: object) -> Outcome[User]:
        """The user after the change, and the notices of what others see of it.
        NotFound if there is no such user; InvalidValue for a value that does not fit."""
        department_id = values.get("department_id")
        if isinstance(department_id, int) and department_id:
            await self.departments.get(department_id)
        try:
            changed = await self.directory.update_user_profile(user_id, **values)
        finally:
            self.rows.drop([user_id])  # the next login here reads the new row (even after a failure)
        if changed is None or changed.deleted:
            raise NotFound(f"no user {user_id}")
        notices = profile_notices(changed, set(values))
        if LOGIN_FIELDS & set(values):
            # What a login checks changed: the other db_proxies drop their kept row at once.
            notices = (*notices, UsersGone((user_id,)))
        return Outcome(changed, notices)

    async def set_password(self, user_id: int, password: str) -> Outcome[User]:
        return await self.update_profile(user_id, password_hash=await self.hash(password))

    async def set_disabled(self, user_id: int, disabled: bool) -> Outcome[User]:
        return await self.update_profile(user_id, disabled=disabled)

    async def delete(self, user_id: int) -> Outcome[User]:
        """The user as it was. It leaves its groups (a deleted user can join
        none: it is no known user any more), and every db_proxy forgets it."""
        try:
            before = await self.directory.delete_user(user_id)
        finally:
            self.rows.drop([user_id])
        if before is None:
            raise NotFound(f"no user {user_id}")
        self.known.forget([user_id])
        left = await self.groups.leave_all(user_id)
        return Outcome(before, (*left, UsersGone((user_id,))))

    async def system_user(self, name: str) -> User:
        """The account admin notices come from: a system user (out of every
        list and search, no login), created on first use."""
        user = await self.directory.user_by_name(name)
        if user is None:
            try:
                await self.directory.create_user(name, UNUSABLE_PASSWORD, nick=name)
            except DuplicateName:
                pass  # created meanwhile by another call
            user = await self.directory.user_by_name(name)
        if user is None:
            raise Unavailable(f"cannot create the system user {name!r}")
        if user.kind != USER_KIND_SYSTEM or user.password_hash != UNUSABLE_PASSWORD:
            user = await self._mark_system(user)
        return user

    async def _mark_system(self, user: User) -> User:
        try:
            await self.directory.mark_system_user(user.id)
        finally:
            self.rows.drop([user.id])
        log.info("user %r (id %d) is now the system user admin notices come from", user.name, user.id)
        return dataclasses.replace(user, kind=USER_KIND_SYSTEM, password_hash=UNUSABLE_PASSWORD)

    async def mark_system_user(self, name: str) -> User | None:
        """At start: an existing account named ``name`` becomes the system user (None: none yet)."""
        user = await self.directory.user_by_name(name)
        if user is None or user.deleted:
            return None
        return await self.system_user(name)
