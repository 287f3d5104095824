"""Users, departments and devices: the directory clients sync by ``updated`` time."""

from __future__ import annotations

import dataclasses
import time
from functools import cache

from . import schema
from .model import Department, DuplicateName, StoreError, User
from .sql_base import (
    BUMP_UPDATED,
    I32,
    U32_MAX,
    Database,
    Dialect,
    Row,
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
# What update_user_profile may change: everything but the id and the name.
_UPDATABLE = _PROFILE_TEXTS | _PROFILE_INTS.keys() | {"disabled"}


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
            raise StoreError("a user name must not be empty")
        values = _profile_values({"name": name, "password_hash": password_hash, **profile})
        values["created"] = values["updated"] = int(time.time())
        # Column names come from the fixed lists above, never from the caller.
        sql = f"INSERT INTO users ({', '.join(values)}) VALUES ({marks(len(values))})"
        try:
            async with self.db.transaction() as tx:
                return await tx.insert(sql, list(values.values()))
        except UniqueViolation as exc:
            raise DuplicateName(f"a user named {name!r} exists") from exc

    async def user_by_name(self, name: str) -> User | None:
        async with self.db.reading() as tx:
            rows = await tx.fetchall(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

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
        """Users (disabled ones too) changed after ``since``, oldest change first."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_USER_COLUMNS} FROM users WHERE updated > ? ORDER BY updated, id", (since,)
            )
        return [_user(row) for row in rows]

    async def update_user_profile(self, user_id: int, **fields: object) -> User | None:
        """Change any profile field but the name (StoreError for an unknown one).

        ``updated`` becomes now, or one more than before if that is not
        older: every change moves it on, even two in the same second.
        """
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise StoreError(f"unknown or unchangeable user profile field(s) {', '.join(unknown)}")
        values = _profile_values(fields)
        now = int(time.time())
        # BUMP_UPDATED first: the other assignments do not read "updated".
        assignments = "".join(f", {column} = ?" for column in values)
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE users SET {BUMP_UPDATED}{assignments} WHERE id = ?",
                (now, now, *values.values(), user_id),
            )
            rows = await tx.fetchall(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    # departments

    async def create_department(self, name: str, parent_id: int = 0, priority: int = 0) -> int:
        """A new department; DuplicateName if its parent has one of that name."""
        if not check_text("department name", name, schema.DEPARTMENT_NAME_LIMIT):
            raise StoreError("a department name must not be empty")
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

    async def departments_updated_since(self, since: int) -> list[Department]:
        """Departments (deleted ones too) changed after ``since``, oldest change first."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE updated > ? ORDER BY updated, id",
                (since,),
            )
        return [
            Department(dept_id, name, parent_id, priority, bool(deleted), updated)
            for dept_id, name, parent_id, priority, deleted, updated in rows
        ]

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


def _profile_values(profile: dict[str, object]) -> dict[str, object]:
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
        elif key == "disabled":
            if not isinstance(value, bool):
                raise TypeError(f"user disabled must be a bool, not {type(value).__name__}")
            values[key] = int(value)
        else:
            raise TypeError(f"unknown user profile field {key!r}")
    return values


def _user(row: Row) -> User:
    fields = dict(zip(_USER_FIELDS, row, strict=True))
    fields["disabled"] = bool(fields["disabled"])
    return User(**fields)
