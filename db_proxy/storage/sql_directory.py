"""Users, departments and devices: the directory clients sync by ``updated`` time."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from functools import cache

from db_proxy.names import search_key

from . import schema
from .model import (
    DefaultDepartmentFixed,
    Department,
    DepartmentCycle,
    DepartmentNotEmpty,
    DuplicateName,
    InvalidValue,
    NewUser,
    UnknownDepartment,
    User,
    is_text,
)
from .sql_base import (
    BUMP_UPDATED,
    I32,
    U32_MAX,
    Database,
    Dialect,
    Row,
    Tx,
    UniqueViolation,
    check_int,
    check_text,
    chunks,
    marks,
    valid_ids,
)

_USER_FIELDS = tuple(f.name for f in dataclasses.fields(User))
_USER_COLUMNS = ", ".join(_USER_FIELDS)
_DEPARTMENT_COLUMNS = ", ".join(f.name for f in dataclasses.fields(Department))
# Integer profile fields and their column's range (MySQL rejects values
# outside it, SQLite would store them).
_PROFILE_INTS = {"gender": I32, "department_id": (0, U32_MAX), "status": I32}
_PROFILE_TEXTS = frozenset(schema.USER_TEXT_LIMITS) - {"name"}
# What update_user_profile may change: everything but the id. A new name is
# a rename (the directory's login changed): the id, and so every message and
# group membership, stays.
_UPDATABLE = _PROFILE_TEXTS | _PROFILE_INTS.keys() | {"disabled", "external_id", "name"}
_SEARCH_LIMIT = 255  # characters of a list_users search
_DOMAIN_LIMIT = schema.USER_TEXT_LIMITS["domain"]
SYSTEM_PASSWORD_HASH = "!"  # not scrypt$...: the login refuses it whatever is typed


@cache
def _device_sql(d: Dialect) -> str:
    return (
        "INSERT INTO devices (user_id, client_type, token, updated) VALUES (?, ?, ?, ?) "
        f"{d.upsert('user_id, client_type')} token = {d.new('token')}, updated = {d.new('updated')}"
    )


@cache
def _push_shield_sql(d: Dialect) -> str:
    return (
        "INSERT INTO push_settings (user_id, shield, updated) VALUES (?, ?, ?) "
        f"{d.upsert('user_id')} shield = {d.new('shield')}, updated = {d.new('updated')}"
    )


class DirectoryQueries:
    """The users, departments and devices part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    # users

    async def create_user(self, name: str, password_hash: str, **profile: object) -> int:
        if not name:
            raise InvalidValue("a user name must not be empty")
        values = _new_user_values(name, password_hash, profile)
        values["created"] = values["updated"] = int(time.time())
        # Column names come from the fixed lists above, never from the caller.
        sql = f"INSERT INTO users ({', '.join(values)}) VALUES ({marks(len(values))})"
        try:
            async with self.db.transaction() as tx:
                if not values["department_id"]:
                    values["department_id"] = await _default_department_id(tx, self.db.dialect)
                return await tx.insert(sql, list(values.values()))
        except UniqueViolation as exc:
            raise DuplicateName(f"a user named {name!r} exists") from exc

    async def user_by_name(self, name: str) -> User | None:
        if not is_text(name):
            return None  # bytes (a login name that was not UTF-8) name nobody
        async with self.db.reading() as tx:
            rows = await tx.fetchall(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    async def create_users(self, users: Sequence[NewUser]) -> list[int | None]:
        """See :meth:`Store.create_users`."""
        now = int(time.time())
        prepared: list[dict[str, object]] = []
        for name, password_hash, profile in users:
            if not name:
                raise InvalidValue("a user name must not be empty")
            values = _new_user_values(name, password_hash, profile)
            values["created"] = values["updated"] = now
            prepared.append(values)
        names = sorted({str(v["name"]) for v in prepared})
        ids: list[int | None] = []
        lock = self.db.dialect.for_update
        try:
            async with self.db.transaction() as tx:
                default_id = 0
                if any(not v["department_id"] for v in prepared):
                    default_id = await _default_department_id(tx, self.db.dialect)
                for values in prepared:
                    values["department_id"] = values["department_id"] or default_id
                taken: set[object] = set()
                for chunk in chunks(names):
                    # A locking read: on InnoDB it also keeps others from
                    # inserting these names until this transaction ends.
                    rows = await tx.fetchall(
                        f"SELECT name FROM users WHERE name IN ({marks(len(chunk))}){lock}",
                        chunk,
                    )
                    taken.update(row[0] for row in rows)
                for values in prepared:
                    if values["name"] in taken:
                        ids.append(None)
                        continue
                    taken.add(values["name"])
                    sql = f"INSERT INTO users ({', '.join(values)}) VALUES ({marks(len(values))})"
                    ids.append(await tx.insert(sql, list(values.values())))
        except UniqueViolation as exc:
            raise DuplicateName(f"a user name was taken meanwhile: {exc}") from exc
        return ids

    async def users_by_name(self, names: list[str]) -> list[User]:
        """The users that exist among ``names`` (deleted ones under their freed names), ascending by id."""
        users: list[User] = []
        async with self.db.reading() as tx:
            for chunk in chunks(sorted({n for n in names if is_text(n)})):
                rows = await tx.fetchall(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE name IN ({marks(len(chunk))})", chunk
                )
                users += map(_user, rows)
        return sorted(users, key=lambda u: u.id)

    async def users_by_id(self, user_ids: list[int]) -> list[User]:
        """The users that exist among ``user_ids``, each once, in ascending id order."""
        users: list[User] = []
        async with self.db.reading() as tx:
            for chunk in chunks(valid_ids(user_ids)):
                rows = await tx.fetchall(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ({marks(len(chunk))}) ORDER BY id",
                    chunk,
                )
                users += map(_user, rows)
        return users

    async def users_updated_since(self, since: int) -> list[User]:
        """People (disabled ones too; no system user) changed after ``since``, oldest change first."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_USER_COLUMNS} FROM users WHERE updated > ? AND kind = ? ORDER BY updated, id",
                (since, schema.USER_KIND_PERSON),
            )
        return [_user(row) for row in rows]

    async def update_user_profile(self, user_id: int, **fields: object) -> User | None:
        """Change any profile field, or the name (StoreError for an unknown one;
        DuplicateName for a name another user has).

        ``updated`` becomes now, or one more than before if that is not
        older: every change moves it on, even two in the same second.
        """
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise InvalidValue(f"unknown or unchangeable user profile field(s) {', '.join(unknown)}")
        values = _profile_values(fields)
        if values.get("name") == "":
            raise InvalidValue("a user name must not be empty")
        now = int(time.time())
        d = self.db.dialect
        try:
            async with self.db.transaction() as tx:
                rows = await tx.fetchall(
                    f"SELECT name, nick, domain FROM users WHERE id = ?{d.for_update}", (user_id,)
                )
                if not rows:
                    return None
                name, nick, domain = rows[0]
                if values.get("department_id") == 0:
                    values["department_id"] = await _default_department_id(tx, self.db.dialect)
                # An empty domain means "the computed key"; a computed one
                # follows the name and nick, one an administrator chose stays.
                follows = ("nick" in values or "name" in values) and "domain" not in values
                if values.get("domain") == "" or (follows and domain in ("", search_key(name, nick))):
                    new_name, new_nick = str(values.get("name", name)), str(values.get("nick", nick))
                    values["domain"] = search_key(new_name, new_nick, _DOMAIN_LIMIT)
                # BUMP_UPDATED first: the other assignments do not read "updated".
                assignments = "".join(f", {column} = ?" for column in values)
                await tx.execute(
                    f"UPDATE users SET {BUMP_UPDATED}{assignments} WHERE id = ?",
                    (now, now, *values.values(), user_id),
                )
                rows = await tx.fetchall(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        except UniqueViolation as exc:
            raise DuplicateName(f"a user named {values.get('name')!r} exists") from exc
        return _user(rows[0]) if rows else None

    # departments

    async def create_department(self, name: str, parent_id: int = 0, priority: int = 0) -> int:
        """A new department; DuplicateName if its parent has one of that name."""
        if not check_text("department name", name, schema.DEPARTMENT_NAME_LIMIT):
            raise InvalidValue("a department name must not be empty")
        check_int("department parent_id", parent_id, 0, U32_MAX)
        check_int("department priority", priority, *I32)
        try:
            async with self.db.transaction() as tx:
                return await tx.insert(
                    "INSERT INTO departments (name, parent_id, priority, updated) VALUES (?, ?, ?, ?)",
                    (name, parent_id, priority, int(time.time())),
                )
        except UniqueViolation as exc:
            raise DuplicateName(f"department {parent_id} has a department named {name!r}") from exc

    async def default_department(self) -> Department:
        """The department users without one are in (created if missing)."""
        async with self.db.transaction() as tx:
            dept_id = await _default_department_id(tx, self.db.dialect)
            rows = await tx.fetchall(
                f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE id = ?", (dept_id,)
            )
        return _department(rows[0])

    async def fill_search_keys(self) -> int:
        """Compute the search key (``domain``) of every user that has none;
        bumps their ``updated``. Returns how many. For databases from before
        keys were computed (see :mod:`db_proxy.names`)."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall("SELECT id, name, nick FROM users WHERE domain = ''")
        if not rows:
            return 0
        now = int(time.time())
        keyed = [(now, now, search_key(name, nick, _DOMAIN_LIMIT), user_id) for user_id, name, nick in rows]
        async with self.db.transaction() as tx:
            # "AND domain = ''": one set meanwhile (by an administrator) stays.
            await tx.executemany(
                f"UPDATE users SET {BUMP_UPDATED}, domain = ? WHERE id = ? AND domain = ''", keyed
            )
        return len(keyed)

    async def departments_updated_since(self, since: int) -> list[Department]:
        """Departments (deleted ones too) changed after ``since``, oldest change first."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE updated > ? ORDER BY updated, id",
                (since,),
            )
        return [_department(row) for row in rows]

    async def list_users(self, offset: int, limit: int, search: str = "") -> tuple[list[User], int]:
        where, params = f"deleted = 0 AND kind = {schema.USER_KIND_PERSON}", []
        if check_text("search", search, _SEARCH_LIMIT):
            # LOWER matches any case on MySQL; SQLite's LIKE already ignores
            # ASCII case and its LOWER knows ASCII only, so the plain LIKE
            # keeps other letters matching in their exact case there.
            pattern = "%" + re.sub(r"([!%_])", r"!\1", search) + "%"
            where += (
                " AND ("
                + " OR ".join(f"{f}({c}) LIKE ? ESCAPE '!'" for c in ("name", "nick") for f in ("LOWER", ""))
                + ")"
            )
            params = [pattern.lower(), pattern] * 2
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_USER_COLUMNS} FROM users WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
            total = await tx.fetchall(f"SELECT COUNT(*) FROM users WHERE {where}", params)
        return [_user(row) for row in rows], int(total[0][0])

    async def mark_system_user(self, user_id: int) -> None:
        # The hash no password matches: a person's account taken over keeps no way in.
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE users SET kind = ?, password_hash = ? WHERE id = ?",
                (schema.USER_KIND_SYSTEM, SYSTEM_PASSWORD_HASH, user_id),
            )

    async def delete_user(self, user_id: int) -> User | None:
        now = int(time.time())
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id = ? AND deleted = 0{self.db.dialect.for_update}",
                (user_id,),
            )
            if not rows:
                return None
            user = _user(rows[0])
            await tx.execute(
                f"UPDATE users SET {BUMP_UPDATED}, deleted = 1, disabled = 1, name = ? WHERE id = ?",
                (now, now, _tombstone_name(user.name, user_id, schema.USER_TEXT_LIMITS["name"]), user_id),
            )
        return user

    # departments

    async def departments(self) -> list[Department]:
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE deleted = 0 ORDER BY id"
            )
        return [_department(row) for row in rows]

    async def department_by_id(self, dept_id: int) -> Department | None:
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE id = ?", (dept_id,)
            )
        return _department(rows[0]) if rows else None

    async def update_department(
        self,
        dept_id: int,
        *,
        name: str | None = None,
        parent_id: int | None = None,
        priority: int | None = None,
    ) -> Department:
        """See :meth:`Store.update_department`."""
        if name is not None and not check_text("department name", name, schema.DEPARTMENT_NAME_LIMIT):
            raise InvalidValue("a department name must not be empty")
        if parent_id is not None:
            check_int("department parent_id", parent_id, 0, U32_MAX)
        if priority is not None:
            check_int("department priority", priority, *I32)
        d = self.db.dialect
        now = int(time.time())
        try:
            async with self.db.transaction() as tx:
                # Every live department, locked: two concurrent moves cannot
                # together make a cycle that neither would alone.
                rows = await tx.fetchall(
                    f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE deleted = 0{d.for_update}"
                )
                live = {row[0]: _department(row) for row in rows}
                before = live.get(dept_id)
                if before is None:
                    raise UnknownDepartment(f"no department {dept_id}")
                after = dataclasses.replace(
                    before,
                    name=before.name if name is None else name,
                    parent_id=before.parent_id if parent_id is None else parent_id,
                    priority=before.priority if priority is None else priority,
                )
                if _is_default(before) and not _is_default(after):
                    raise DefaultDepartmentFixed(
                        f"department {dept_id} is the default department (users without one "
                        "are in it): it cannot be renamed or moved"
                    )
                if after.parent_id != before.parent_id:
                    _check_parent(live, dept_id, after.parent_id)
                await tx.execute(
                    f"UPDATE departments SET {BUMP_UPDATED}, name = ?, parent_id = ?, priority = ? "
                    "WHERE id = ?",
                    (now, now, after.name, after.parent_id, after.priority, dept_id),
                )
                rows = await tx.fetchall(
                    f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE id = ?", (dept_id,)
                )
        except UniqueViolation as exc:
            raise DuplicateName(
                f"a department of that name exists where department {dept_id} would go"
            ) from exc
        return _department(rows[0])

    async def delete_department(self, dept_id: int) -> Department:
        """See :meth:`Store.delete_department`."""
        now = int(time.time())
        d = self.db.dialect
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE id = ? AND deleted = 0{d.for_update}",
                (dept_id,),
            )
            if not rows:
                raise UnknownDepartment(f"no department {dept_id}")
            before = _department(rows[0])
            if _is_default(before):
                raise DefaultDepartmentFixed(
                    f"department {dept_id} is the default department (users without one are in it)"
                )
            children = await tx.fetchall(
                "SELECT COUNT(*) FROM departments WHERE parent_id = ? AND deleted = 0", (dept_id,)
            )
            users = await tx.fetchall(
                "SELECT COUNT(*) FROM users WHERE department_id = ? AND deleted = 0", (dept_id,)
            )
            if children[0][0] or users[0][0]:
                raise DepartmentNotEmpty(
                    f"department {dept_id} has {users[0][0]} user(s) and {children[0][0]} sub-department(s)"
                )
            # Deleted users stay visible to clients (old messages name them):
            # they go to the default department, not to one that is no more.
            default_id = await _default_department_id(tx, self.db.dialect)
            await tx.execute(
                f"UPDATE users SET {BUMP_UPDATED}, department_id = ? WHERE department_id = ? AND deleted = 1",
                (now, now, default_id, dept_id),
            )
            tombstone = _tombstone_name(before.name, dept_id, schema.DEPARTMENT_NAME_LIMIT)
            await tx.execute(
                f"UPDATE departments SET {BUMP_UPDATED}, deleted = 1, name = ? WHERE id = ?",
                (now, now, tombstone, dept_id),
            )
        return before

    # devices

    async def set_device_token(self, user_id: int, client_type: int, token: str) -> None:
        """The user's push token on that client type, replacing the one before."""
        check_int("client_type", client_type, 0, U32_MAX)
        check_text("device token", token, schema.DEVICE_TOKEN_LIMIT)
        async with self.db.transaction() as tx:
            await tx.execute(_device_sql(self.db.dialect), (user_id, client_type, token, int(time.time())))

    async def set_push_shield(self, user_id: int, shield: int) -> None:
        check_int("push shield", shield, 0, 1)
        async with self.db.transaction() as tx:
            await tx.execute(_push_shield_sql(self.db.dialect), (user_id, shield, int(time.time())))

    async def push_shield(self, user_id: int) -> int:
        """1 if the user muted push notifications; 0, the default, if not."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall("SELECT shield FROM push_settings WHERE user_id = ?", (user_id,))
        return int(rows[0][0]) if rows else 0


def _new_user_values(name: str, password_hash: str, profile: Mapping[str, object]) -> dict[str, object]:
    """A new user's column values: its profile checked, its search key computed
    unless given, department 0 (none) until the caller puts the default one in."""
    values = _profile_values({"name": name, "password_hash": password_hash, **profile})
    if not values.get("domain"):
        values["domain"] = search_key(name, str(values.get("nick", "")), _DOMAIN_LIMIT)
    values.setdefault("department_id", 0)
    return values


async def _default_department_id(tx: Tx, d: Dialect) -> int:
    """The default department's id, inserting it if it is missing (migration 4
    creates it and it cannot be deleted; this is for databases changed by hand)."""
    sql = "SELECT MIN(id) FROM departments WHERE parent_id = 0 AND name = ? AND deleted = 0"
    rows = await tx.fetchall(sql, (schema.DEFAULT_DEPARTMENT,))
    if rows and rows[0][0]:
        return int(rows[0][0])
    try:
        return await tx.insert(
            "INSERT INTO departments (name, parent_id, priority, updated) VALUES (?, 0, 0, ?)",
            (schema.DEFAULT_DEPARTMENT, int(time.time())),
        )
    except UniqueViolation:
        # Inserted meanwhile by another transaction: both engines undo only the
        # failed statement; a locking read sees the other's commit (InnoDB's
        # snapshot would not).
        rows = await tx.fetchall(sql + d.for_update, (schema.DEFAULT_DEPARTMENT,))
        if rows and rows[0][0]:
            return int(rows[0][0])
        raise


def _is_default(department: Department) -> bool:
    return department.parent_id == 0 and department.name == schema.DEFAULT_DEPARTMENT


def _profile_values(profile: Mapping[str, object]) -> dict[str, object]:
    """The column values of profile fields, checked against their columns.

    TypeError for a value of the wrong type or a field that does not exist,
    StoreError for one out of the column's range.
    """
    values: dict[str, object] = {}
    for key, value in profile.items():
        if key in schema.USER_TEXT_LIMITS:
            values[key] = check_text(f"user {key}", value, schema.USER_TEXT_LIMITS[key])
        elif key in _PROFILE_INTS:
            values[key] = check_int(f"user {key}", value, *_PROFILE_INTS[key])
        elif key == "external_id":
            values[key] = check_text("user external_id", value, schema.EXTERNAL_ID_LIMIT)
        elif key == "disabled":
            if not isinstance(value, bool):
                raise InvalidValue(f"user disabled must be a bool, not {type(value).__name__}")
            values[key] = int(value)
        else:
            raise InvalidValue(f"unknown user profile field {key!r}")
    return values


def _user(row: Row) -> User:
    fields = dict(zip(_USER_FIELDS, row, strict=True))
    fields["disabled"] = bool(fields["disabled"])
    fields["deleted"] = bool(fields["deleted"])
    return User(**fields)


def _department(row: Row) -> Department:
    dept_id, name, parent_id, priority, deleted, updated = row
    return Department(dept_id, name, parent_id, priority, bool(deleted), updated)


def _tombstone_name(name: str, row_id: int, limit: int) -> str:
    """The name a deleted row takes, so that its old one can be used again.

    The id makes it unique; the space keeps it apart from login names made
    by the admin API, which have none.
    """
    suffix = f" (deleted #{row_id})"
    return name[: max(0, limit - len(suffix))] + suffix


def _check_parent(live: dict[int, Department], dept_id: int, parent_id: int) -> None:
    """``parent_id`` may become ``dept_id``'s parent: 0 or a live department
    that is not ``dept_id`` itself nor one of its descendants."""
    seen: set[int] = set()
    ancestor = parent_id
    while ancestor and ancestor not in seen:
        if ancestor == dept_id:
            raise DepartmentCycle(f"department {parent_id} is department {dept_id} or inside it")
        parent = live.get(ancestor)
        if parent is None:
            if ancestor == parent_id:
                raise UnknownDepartment(f"no department {parent_id}")
            return  # an orphan further up: no cycle through dept_id
        seen.add(ancestor)
        ancestor = parent.parent_id
