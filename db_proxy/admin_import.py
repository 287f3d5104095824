"""users.import: many users in one call, each row checked on its own.

A row that cannot be created is skipped with the reason; the others are
created together. Names already taken are found before any hashing, the
passwords are hashed concurrently in threads (scrypt releases the GIL), and
the users are written in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from common.errors import ImError, InvalidArgument, NotFound
from db_proxy import admin_args as a
from db_proxy.storage.model import Department, NewUser, Store

MAX_ROWS = 1000
ROW_FIELDS = frozenset({"name", "password", "nick", "department", "email", "tel"})


class UserImport:
    def __init__(
        self, store: Store, departments: Iterable[Department], hash_password: Callable[[str], Awaitable[str]]
    ) -> None:
        self.store = store
        self.hash_password = hash_password
        self.by_id = {d.id: d for d in departments}
        self.by_name: dict[str, list[int]] = {}
        for d in self.by_id.values():
            self.by_name.setdefault(d.name, []).append(d.id)
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
                name, password, values = self._row(row)
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
        hashes = await asyncio.gather(*(self.hash_password(accepted[n][1]) for n in names))
        new: list[NewUser] = [(n, h, accepted[n][2]) for n, h in zip(names, hashes, strict=True)]
        ids = await self.store.create_users(new) if new else []
        for name, user_id in zip(names, ids, strict=True):
            if user_id is None:  # taken since we looked
                self._skip(accepted[name][0], {"name": name}, f"a user named {name!r} exists")
        self.skipped.sort(key=lambda s: int(s["row"]))
        return sum(1 for i in ids if i is not None), self.skipped

    def _row(self, row: object) -> tuple[str, str, dict[str, object]]:
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
            values["department_id"] = self._department(department)
        return name, password, values

    def _department(self, ref: object) -> int:
        """A live department by id (an integer or its decimal string) or by its name."""
        if a.is_decimal(ref) and int(ref) in self.by_id:
            return int(ref)
        if type(ref) is int:
            if ref in self.by_id:
                return ref
            raise NotFound(f"no department {ref}")
        if not isinstance(ref, str):
            raise InvalidArgument("department must be a department id or name")
        ids = self.by_name.get(ref, [])
        if not ids:
            raise NotFound(f"no department named {ref!r}")
        if len(ids) > 1:
            raise InvalidArgument(f"{len(ids)} departments are named {ref!r}; give its id")
        return ids[0]

    def _skip(self, index: int, row: object, reason: str) -> None:
        name = row.get("name") if isinstance(row, dict) else None
        self.skipped.append({"row": index, "name": name if isinstance(name, str) else "", "reason": reason})
