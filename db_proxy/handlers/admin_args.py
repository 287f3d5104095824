"""The admin API's arguments and results on db_proxy's side: checking the
decoded JSON arguments (a bad one is InvalidArgument with a message naming
it) and the JSON shapes of users, departments and groups (docs/admin-api.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from common.errors import InvalidArgument
from db_proxy.storage import schema
from db_proxy.storage.model import Department, Group, User, is_text
from db_proxy.storage.sql_base import I32, U32_MAX

MAX_PAGE = 1000
DEFAULT_PAGE = 50
MAX_ID_DIGITS = 20  # more than any id has
MAX_PASSWORD = 1024  # characters of a plain password; it is only ever hashed
GROUP_TYPES = {"normal": 1, "temp": 2}
GROUP_TYPE_NAMES = {number: name for name, number in GROUP_TYPES.items()}

# Profile fields with their column's limits: text length, or integer range.
PROFILE_TEXTS = {
    key: schema.USER_TEXT_LIMITS[key]
    for key in ("nick", "avatar", "email", "real_name", "tel", "domain", "sign_info")
}
# The user's id in the company directory (`imctl sync ldap` sets it).
PROFILE_TEXTS["external_id"] = schema.EXTERNAL_ID_LIMIT
PROFILE_INTS = {"gender": I32, "department_id": (0, U32_MAX), "status": I32}
CREATE_FIELDS = frozenset(PROFILE_TEXTS) | {"gender", "department_id"}
# "name" renames the user (its id, messages and groups stay).
UPDATE_FIELDS = frozenset(PROFILE_TEXTS) | frozenset(PROFILE_INTS) | {"name"}


def check_keys(args: Mapping[str, Any], allowed: frozenset[str] | set[str], what: str) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise InvalidArgument(f"{what}: unknown field(s) {', '.join(unknown)}")


def integer(value: object, what: str, low: int, high: int) -> int:
    """An int in [low, high] (JSON has no other integers; bools are refused)."""
    if type(value) is not int:
        raise InvalidArgument(f"{what} must be an integer")
    if not low <= value <= high:
        raise InvalidArgument(f"{what} {value} is out of range [{low}, {high}]")
    return value


def text(value: object, what: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    if not is_text(value):  # a lone surrogate ("\ud800" in the JSON): no database takes it
        raise InvalidArgument(f"{what} is not valid Unicode")
    if len(value) > limit:
        raise InvalidArgument(f"{what} is longer than {limit} characters")
    if not empty and not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    return value


def optional_int(args: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = args.get(key)
    return default if value is None else integer(value, key, low, high)


def object_id(args: Mapping[str, Any], key: str = "id") -> int:
    """A required id (an integer, or its decimal string as it comes from a path)."""
    value = args.get(key)
    if is_decimal(value):
        value = int(value)
    if value is None:
        raise InvalidArgument(f"{key} is required")
    return integer(value, key, 1, U32_MAX)


def page(args: Mapping[str, Any]) -> tuple[int, int]:
    """``offset`` (default 0) and ``limit`` (default 50, at most 1000: more is cut to 1000)."""
    offset = optional_int(args, "offset", 0, 0, 2**62)
    limit = optional_int(args, "limit", DEFAULT_PAGE, 0, 2**62)
    return offset, min(limit, MAX_PAGE)


def login_name(value: object) -> str:
    """A new user's login name: 1 to 64 characters, no whitespace."""
    name = text(value, "name", schema.USER_TEXT_LIMITS["name"])
    if not name:
        raise InvalidArgument("name must not be empty")
    if any(c.isspace() for c in name):
        raise InvalidArgument(f"name {name!r} contains whitespace")
    return name


def password(value: object) -> str:
    """A plain password (hashed as a TeamTalk client's md5 would be)."""
    if value is None:
        raise InvalidArgument("password is required")
    return text(value, "password", MAX_PASSWORD, empty=False)


def profile(fields: Mapping[str, Any], allowed: frozenset[str], what: str) -> dict[str, object]:
    """Profile field values checked against their columns."""
    check_keys(fields, allowed, what)
    values: dict[str, object] = {}
    for key, value in fields.items():
        if key == "name":
            values[key] = login_name(value)
        elif key in PROFILE_TEXTS:
            values[key] = text(value, key, PROFILE_TEXTS[key])
        else:
            values[key] = integer(value, key, *PROFILE_INTS[key])
    return values


def user_ref(value: object, what: str) -> int | str:
    """A user named by id (an integer) or by login name (a string)."""
    if type(value) is int:
        return value
    if isinstance(value, str) and value:
        return text(value, what, schema.USER_TEXT_LIMITS["name"])
    raise InvalidArgument(f"{what} must be a user id or login name")


def is_decimal(value: object) -> TypeGuard[str]:
    """A string of ASCII digits short enough for an id (``int()`` of a very
    long one is an error, and "²" is a digit but no decimal)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_DIGITS and value.isascii() and value.isdigit()


def user_refs(value: object, what: str) -> list[int | str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{what} must be a list of user ids or login names")
    return [user_ref(item, what) for item in value]


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "nick": user.nick,
        "gender": user.gender,
        "avatar": user.avatar,
        "department_id": user.department_id,
        "email": user.email,
        "real_name": user.real_name,
        "tel": user.tel,
        "domain": user.domain,
        "status": user.status,
        "sign_info": user.sign_info,
        "disabled": user.disabled,
        "updated": user.updated,
        "external_id": user.external_id,
    }


def department_json(department: Department) -> dict[str, Any]:
    return {
        "id": department.id,
        "name": department.name,
        "parent_id": department.parent_id,
        "priority": department.priority,
    }


def group_json(group: Group) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "avatar": group.avatar,
        "creator_id": group.creator_id,
        "type": GROUP_TYPE_NAMES.get(group.group_type, str(group.group_type)),
        "version": group.version,
        "members": list(group.members),
    }
