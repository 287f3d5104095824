"""The directory sync planner: what to change so that the cluster matches the directory.

Sans-IO: it takes the directory's entries (already mapped to
:class:`DirectoryEntry`) and the cluster's users and departments, and
returns a :class:`Plan`; nothing here reads LDAP or calls the admin API, so
the rules are tested on plain values (tests/ldap/test_plan.py).

The rules:

* A user is matched to its entry by ``external_id`` (entryUUID, objectGUID);
  a user made before the first sync (``external_id`` empty) is matched by
  its login name instead, and gets the entry's id (a "link").
* A matched user whose synced fields differ is updated; a new login name in
  the directory is a rename of the same user (same id, messages, groups).
* A user disabled in the directory is disabled here; enabled there, enabled
  here: the directory decides for the users it holds.
* A user with an external id that no entry has any more is disabled, never
  deleted (its messages stay readable, a mistaken filter is undone by the
  next run). Users made here and not in the directory are left alone.
* An entry that cannot be synced (no id, a bad or ambiguous login, a login
  another user has) is skipped with the reason; the rest still syncs.

Only what differs is planned, so applying a plan and planning again gives an
empty plan: the sync is idempotent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from db_proxy.storage import schema

#: The profile fields a sync may set, with their column's length in characters:
#: longer directory values are cut to it (cut the same way every run, so still idempotent).
TEXT_FIELDS: dict[str, int] = {
    key: schema.USER_TEXT_LIMITS[key] for key in ("nick", "real_name", "email", "tel")
}
NAME_LIMIT = schema.USER_TEXT_LIMITS["name"]
DEPARTMENT_LIMIT = schema.DEPARTMENT_NAME_LIMIT
EXTERNAL_ID_LIMIT = schema.EXTERNAL_ID_LIMIT
#: Where a user the directory puts in no department goes (the cluster's default one).
DEFAULT_PATH = (schema.DEFAULT_DEPARTMENT,)

Path = tuple[str, ...]  # a department by its names from the top


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One user as the directory has it."""

    external_id: str
    login: str
    dn: str = ""
    nick: str = ""  # empty: the login name, as users.create does
    real_name: str = ""
    email: str = ""
    tel: str = ""
    department: Path = ()  # () puts the user in the default department
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class ClusterUser:
    id: int
    name: str
    nick: str = ""
    real_name: str = ""
    email: str = ""
    tel: str = ""
    department_id: int = 0
    disabled: bool = False
    external_id: str = ""

    @classmethod
    def from_json(cls, user: Mapping[str, Any]) -> ClusterUser:
        """A user as the admin API shows it (docs/admin-api.md)."""
        return cls(
            id=int(user["id"]),
            name=str(user["name"]),
            nick=str(user.get("nick", "")),
            real_name=str(user.get("real_name", "")),
            email=str(user.get("email", "")),
            tel=str(user.get("tel", "")),
            department_id=int(user.get("department_id", 0)),
            disabled=bool(user.get("disabled", False)),
            external_id=str(user.get("external_id", "")),
        )


@dataclass(frozen=True, slots=True)
class ClusterDepartment:
    id: int
    name: str
    parent_id: int = 0

    @classmethod
    def from_json(cls, department: Mapping[str, Any]) -> ClusterDepartment:
        return cls(int(department["id"]), str(department["name"]), int(department.get("parent_id", 0)))


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Which fields the directory decides: the ones with an attribute mapped."""

    fields: frozenset[str] = frozenset(TEXT_FIELDS)
    departments: bool = True


@dataclass(frozen=True, slots=True)
class NewUser:
    login: str
    external_id: str
    fields: dict[str, str]  # the synced text fields
    department: Path | None  # None: departments are not synced


@dataclass(frozen=True, slots=True)
class UserUpdate:
    user_id: int
    name: str  # the login name now (before a rename)
    fields: dict[str, str]  # new values: profile fields, "name" (a rename), "external_id" (a link)
    department: Path | None = None  # the department to move to, if it changes
    before: dict[str, str] = field(default_factory=dict)  # the old values, to show


@dataclass(frozen=True, slots=True)
class StateChange:
    user_id: int
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    dn: str
    login: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    departments: tuple[Path, ...] = ()  # to create, parents first
    creates: tuple[NewUser, ...] = ()
    updates: tuple[UserUpdate, ...] = ()
    disables: tuple[StateChange, ...] = ()
    enables: tuple[StateChange, ...] = ()
    skipped: tuple[Skipped, ...] = ()  # entries not synced, and why (no change: shown every run)
    disabled_not_created: int = 0  # disabled entries with no user here: none is made for them

    @property
    def changes(self) -> int:
        return (
            len(self.departments)
            + len(self.creates)
            + len(self.updates)
            + len(self.disables)
            + len(self.enables)
        )


GONE = "gone from the directory (disabled, not deleted)"
DISABLED = "disabled in the directory"
ENABLED = "enabled in the directory"


class DepartmentTree:
    """The cluster's departments by path (names from the top)."""

    def __init__(self, departments: Iterable[ClusterDepartment]) -> None:
        self.by_parent: dict[tuple[int, str], int] = {}
        for d in sorted(departments, key=lambda d: d.id):
            self.by_parent.setdefault((d.parent_id, d.name), d.id)

    def resolve(self, path: Path) -> int | None:
        """The id of the department at ``path``, None if some part of it is missing."""
        parent = 0
        for name in path:
            found = self.by_parent.get((parent, name))
            if found is None:
                return None
            parent = found
        return parent if path else None

    def missing(self, path: Path) -> list[Path]:
        """The prefixes of ``path`` that do not exist, top first."""
        return [path[:n] for n in range(1, len(path) + 1) if self.resolve(path[:n]) is None]


def clean_path(path: Sequence[str]) -> Path:
    """A department path as the cluster can hold it: no empty names, each cut to the column."""
    cleaned = tuple(part.strip()[:DEPARTMENT_LIMIT].strip() for part in path)
    return tuple(part for part in cleaned if part) or DEFAULT_PATH


def _login_problem(login: str) -> str | None:
    if not login:
        return "no login name"
    if len(login) > NAME_LIMIT:
        return f"login name longer than {NAME_LIMIT} characters"
    if any(c.isspace() for c in login):
        return "login name contains whitespace"
    return None


def wanted_fields(entry: DirectoryEntry, options: SyncOptions) -> dict[str, str]:
    """The synced text fields as the cluster would hold them."""
    values = {
        "nick": entry.nick or entry.login,
        "real_name": entry.real_name,
        "email": entry.email,
        "tel": entry.tel,
    }
    return {key: values[key].strip()[:limit] for key, limit in TEXT_FIELDS.items() if key in options.fields}


def _usable(entries: Iterable[DirectoryEntry]) -> tuple[list[DirectoryEntry], list[Skipped]]:
    """The entries that can be synced, and the others with the reason."""
    entries = sorted(entries, key=lambda e: (e.external_id, e.dn))
    logins = Counter(e.login for e in entries)
    seen: set[str] = set()
    usable, skipped = [], []
    for entry in entries:
        problem = _login_problem(entry.login)
        if not entry.external_id:
            problem = "no external id (entryUUID / objectGUID) read"
        elif len(entry.external_id) > EXTERNAL_ID_LIMIT:
            problem = f"external id longer than {EXTERNAL_ID_LIMIT} characters"
        elif entry.external_id in seen:
            problem = f"external id {entry.external_id} seen twice"
        elif problem is None and logins[entry.login] > 1:
            problem = f"login name used by {logins[entry.login]} entries"
        seen.add(entry.external_id)
        if problem is None:
            usable.append(entry)
        else:
            skipped.append(Skipped(entry.dn, entry.login, problem))
    return usable, skipped


def _renames(matched: Mapping[int, str], users: Mapping[int, ClusterUser]) -> list[int]:
    """The users whose rename to ``matched[id]`` can be done, in an order that works:
    one whose new name another user keeps is not (the caller skips it), a chain
    a -> b, b -> c is ordered b -> c first, a cycle (a swap) is not done at all."""
    by_name = {u.name: u.id for u in users.values()}
    pending = {uid: name for uid, name in matched.items() if users[uid].name != name}
    ordered: list[int] = []
    done: set[int] = set()
    for _ in range(len(pending) + 1):  # each round orders at least one, or stops
        ready = [
            uid for uid, name in pending.items() if by_name.get(name) in (None, uid) or by_name[name] in done
        ]
        for uid in sorted(ready):
            ordered.append(uid)
            done.add(uid)
            del pending[uid]
        if not ready:
            break
    return ordered  # what is left in pending waits on a user that keeps its name, or is a cycle


def plan(
    entries: Iterable[DirectoryEntry],
    users: Iterable[ClusterUser],
    departments: Iterable[ClusterDepartment],
    options: SyncOptions | None = None,
) -> Plan:
    """What to change so that the cluster matches ``entries`` (see the module docstring)."""
    options = options or SyncOptions()
    users = list(users)
    tree = DepartmentTree(departments)
    by_external = {u.external_id: u for u in users if u.external_id}
    by_name = {u.name: u for u in users}
    by_id = {u.id: u for u in users}
    entries = list(entries)
    present = {e.external_id for e in entries if e.external_id}  # skipped ones too: not "gone"
    usable, skipped = _usable(entries)

    # Each entry's user: by external id, else (made before the first sync) by name.
    matched: dict[str, ClusterUser | None] = {}
    for entry in usable:
        user = by_external.get(entry.external_id)
        if user is None:
            local = by_name.get(entry.login)
            user = local if local is not None and not local.external_id else None
        matched[entry.external_id] = user
    renames = _renames({u.id: e.login for e in usable if (u := matched[e.external_id]) is not None}, by_id)
    rank = {uid: n for n, uid in enumerate(renames)}
    freed = {by_id[uid].name for uid in renames}  # renames run before creates: a new entry may take one

    new_departments: dict[Path, None] = {}
    creates: list[NewUser] = []
    updates: list[UserUpdate] = []
    disables: list[StateChange] = []
    enables: list[StateChange] = []
    not_created = 0

    def department_of(entry: DirectoryEntry) -> Path:
        path = clean_path(entry.department)
        for missing in tree.missing(path):
            new_departments[missing] = None
        return path

    for entry in usable:
        user = matched[entry.external_id]
        fields = wanted_fields(entry, options)
        if user is None:
            holder = by_name.get(entry.login)
            if holder is not None and holder.name not in freed:
                skipped.append(Skipped(entry.dn, entry.login, f"login name taken by user {holder.id}"))
            elif entry.disabled:
                not_created += 1
            else:
                path = department_of(entry) if options.departments else None
                creates.append(NewUser(entry.login, entry.external_id, fields, path))
            continue
        changed = {k: v for k, v in fields.items() if getattr(user, k) != v}
        if user.external_id != entry.external_id:
            changed["external_id"] = entry.external_id
        if user.id in rank:
            changed["name"] = entry.login
        elif entry.login != user.name:
            holder = by_name.get(entry.login)
            why = f"user {holder.id} has the name" if holder is not None else "a rename cycle"
            skipped.append(Skipped(entry.dn, entry.login, f"renamed, but {why}: kept {user.name}"))
        move: Path | None = None
        if options.departments:
            path = clean_path(entry.department)
            if tree.resolve(path) != user.department_id:
                move = department_of(entry)
        if changed or move is not None:
            before = {k: str(getattr(user, k)) for k in changed}
            updates.append(UserUpdate(user.id, user.name, changed, move, before))
        if entry.disabled and not user.disabled:
            disables.append(StateChange(user.id, entry.login, DISABLED))
        elif not entry.disabled and user.disabled:
            enables.append(StateChange(user.id, entry.login, ENABLED))

    for user in sorted((u for u in users if u.external_id), key=lambda u: u.id):
        if user.external_id not in present and not user.disabled:
            disables.append(StateChange(user.id, user.name, GONE))

    # Renames in their working order, after the other updates.
    updates.sort(key=lambda u: rank.get(u.user_id, -1))
    ordered = sorted(new_departments, key=lambda p: (len(p), p))
    return Plan(
        tuple(ordered),
        tuple(creates),
        tuple(updates),
        tuple(disables),
        tuple(enables),
        tuple(skipped),
        not_created,
    )
