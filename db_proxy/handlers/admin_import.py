"""users.import: many users in one call, each row checked on its own.

A row that cannot be created is skipped with the reason; the others are
created together. A row's department is an id, the name of one department,
or a path from the top ("Sales/East", "/Sales"): the departments of a path
that do not exist yet are created (they stay even if the row is then
skipped for another reason). A row without one goes to the default
department. Names already taken are found before any hashing; the users
are created as users.create creates one (:meth:`UserService.create_many`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.errors import ImError, InvalidArgument, NotFound
from db_proxy.handlers import admin_args as a
from db_proxy.services.users import UserService
from db_proxy.storage import schema
from db_proxy.storage.model import Department, DuplicateName, Store

MAX_ROWS = 1000
PATH_SEPARATOR = "/"
MAX_PATH_DEPTH = 16  # departments in one path
ROW_FIELDS = frozenset({"name", "password", "nick", "department", "email", "tel"})


class UserImport:
    def __init__(self, store: Store, departments: Iterable[Department], users: UserService) -> None:
        self.store = store  # the directory
        self.users = users
        self.by_id: dict[int, Department] = {}
        self.by_name: dict[str, list[int]] = {}
        self.by_place: dict[tuple[int, str], int] = {}  # (parent id, name) -> id
        for d in departments:
            self._known(d)
        self.skipped: list[dict[str, Any]] = []

    async def run(self, rows: object) -> tuple[int, list[dict[str, Any]]]:
        """Returns how many users were created and the rows skipped, by row index."""
        if not isinstance(rows, list):
            raise InvalidArgument("rows must be a list")
        if len(rows) > MAX_ROWS:
            raise InvalidArgument(f"{len(rows)} rows; at most {MAX_ROWS} a call")
        accepted: dict[str, tuple[int, str, dict[str, object]]] = {}
        for index, row in enumerate(rows):
            try:
                name, password, values = await self._row(row)
            except ImError as exc:
                self._skip(index, row, exc.message)
                continue
            if name in accepted:
                self._skip(index, row, f"name {name!r} is in row {accepted[name][0]} already")
                continue
            accepted[name] = (index, password, values)
        for user in await self.store.users_by_name(list(accepted)):
            if user.name in accepted:
                index, _, _ = accepted.pop(user.name)
                self._skip(index, {"name": user.name}, f"a user named {user.name!r} exists")
        names = list(accepted)
        ids = await self.users.create_many([(n, accepted[n][1], accepted[n][2]) for n in names])
        for name, user_id in zip(names, ids, strict=True):
            if user_id is None:  # taken since we looked
                self._skip(accepted[name][0], {"name": name}, f"a user named {name!r} exists")
        self.skipped.sort(key=lambda s: int(s["row"]))
        return sum(1 for i in ids if i is not None), self.skipped

    async def _row(self, row: object) -> tuple[str, str, dict[str, object]]:
        if not isinstance(row, dict):
            raise InvalidArgument("a row must be an object")
        a.check_keys(row, ROW_FIELDS, "row")
        name = a.login_name(row.get("name"))
        password = a.password(row.get("password"))
        values = a.profile(
            {k: row[k] for k in ("nick", "email", "tel") if row.get(k) is not None},
            frozenset({"nick", "email", "tel"}),
            "row",
        )
        values.setdefault("nick", name)
        department = row.get("department")
        if department not in (None, "", 0):
            values["department_id"] = await self._department(department)
        return name, password, values

    async def _department(self, ref: object) -> int:
        """A live department by id (an integer or its decimal string), by its
        name, or by its path (created as needed)."""
        if a.is_decimal(ref) and int(ref) in self.by_id:
            return int(ref)
        if type(ref) is int:
            if ref in self.by_id:
                return ref
            raise NotFound(f"no department {ref}")
        if not isinstance(ref, str):
            raise InvalidArgument("department must be a department id, name or path")
        if PATH_SEPARATOR in ref:
            return await self._path(ref)
        ids = self.by_name.get(ref, [])
        if not ids:
            raise NotFound(f"no department named {ref!r}")
        if len(ids) > 1:
            raise InvalidArgument(f"{len(ids)} departments are named {ref!r}; give its id")
        return ids[0]

    async def _path(self, path: str) -> int:
        """The department at ``path`` from the top, creating those missing."""
        names = [part.strip() for part in path.strip().strip(PATH_SEPARATOR).split(PATH_SEPARATOR)]
        if not all(names):
            raise InvalidArgument(f"department path {path!r} has an empty part")
        if len(names) > MAX_PATH_DEPTH:
            raise InvalidArgument(f"department path {path!r} is deeper than {MAX_PATH_DEPTH}")
        parent_id = 0
        for name in names:
            a.text(name, "department name", schema.DEPARTMENT_NAME_LIMIT, empty=False)
            found = self.by_place.get((parent_id, name))
            if found is None:
                found = await self._create(name, parent_id)
            parent_id = found
        return parent_id

    async def _create(self, name: str, parent_id: int) -> int:
        try:
            dept_id = await self.store.create_department(name, parent_id)
        except DuplicateName:
            # Created meanwhile (another import): take that one.
            for d in await self.store.departments():
                if (d.parent_id, d.name) == (parent_id, name):
                    self._known(d)
                    return d.id
            raise
        department = await self.store.department_by_id(dept_id)
        if department is None:
            raise NotFound(f"department {dept_id} vanished as it was created")
        self._known(department)
        return dept_id

    def _known(self, d: Department) -> None:
        self.by_id[d.id] = d
        self.by_name.setdefault(d.name, []).append(d.id)
        self.by_place[(d.parent_id, d.name)] = d.id

    def _skip(self, index: int, row: object, reason: str) -> None:
        name = row.get("name") if isinstance(row, dict) else None
        self.skipped.append({"row": index, "name": name if isinstance(name, str) else "", "reason": reason})
