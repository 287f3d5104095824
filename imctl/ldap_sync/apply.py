"""Carrying out a :class:`~imctl.ldap_sync.plan.Plan` through a :class:`Writer`.

The order: departments (parents first), updates (renames free names that
new entries may take), creates, enables, disables. Each step is done or
fails on its own (:class:`Refused`: a name taken meanwhile, a value the
server refuses) and the rest goes on; any other exception (the cluster
unreachable) stops the run, and the next run plans what is left.

A user made here has no password that works (users.create without one, for
a user with an external id, stores none a login accepts, and costs no hash):
it logs in once an administrator sets one (``imctl user passwd``), see README.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from imctl.ldap_sync.plan import ClusterDepartment, DepartmentTree, Path, Plan


class Refused(Exception):
    """The cluster refused one step (the message says why); the others go on."""


class Writer(Protocol):
    def create_department(self, name: str, parent_id: int) -> int: ...
    def create_user(self, fields: dict[str, Any]) -> int: ...
    def update_user(self, user_id: int, fields: dict[str, Any]) -> None: ...
    def set_disabled(self, user_id: int, disabled: bool) -> None: ...


@dataclass
class Outcome:
    done: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"step", "target", "error"}

    def fail(self, step: str, target: str, error: str) -> None:
        self.failed.append({"step": step, "target": target, "error": error})


def _show(path: Path) -> str:
    return "/".join(path)


def apply(plan: Plan, departments: Iterable[ClusterDepartment], writer: Writer) -> Outcome:
    outcome = Outcome()
    tree = DepartmentTree(departments)
    made: dict[Path, int] = {}

    def department_id(path: Path) -> int | None:
        return made.get(path) or tree.resolve(path)

    for path in plan.departments:
        parent = department_id(path[:-1]) if len(path) > 1 else 0
        if parent is None:
            outcome.fail("create department", _show(path), "its parent was not created")
            continue
        try:
            made[path] = writer.create_department(path[-1], parent)
            outcome.done += 1
        except Refused as exc:
            outcome.fail("create department", _show(path), str(exc))

    renames_refused = []
    for update in plan.updates:
        fields: dict[str, Any] = dict(update.fields)
        if update.department is not None:
            target = department_id(update.department)
            if target is None:
                outcome.fail("update user", update.name, f"department {_show(update.department)} missing")
                continue
            fields["department_id"] = target
        try:
            writer.update_user(update.user_id, fields)
            outcome.done += 1
        except Refused as exc:
            if "name" in fields:
                renames_refused.append((update.user_id, update.name, fields, str(exc)))
            else:
                outcome.fail("update user", update.name, str(exc))
    # A rename to a name another rename frees (a -> b while b -> c) fails if
    # it comes first: once more, now that the others are done.
    for user_id, name, fields, _ in renames_refused:
        try:
            writer.update_user(user_id, fields)
            outcome.done += 1
        except Refused as exc:
            outcome.fail("update user", name, str(exc))

    for new in plan.creates:
        # No password: the user gets none that works (see the module docstring).
        body: dict[str, Any] = {"name": new.login, "external_id": new.external_id, **new.fields}
        if new.department is not None:
            target = department_id(new.department)
            if target is None:
                outcome.fail("create user", new.login, f"department {_show(new.department)} missing")
                continue
            body["department_id"] = target
        try:
            writer.create_user(body)
            outcome.done += 1
        except Refused as exc:
            outcome.fail("create user", new.login, str(exc))

    for change, disabled in [*((c, False) for c in plan.enables), *((c, True) for c in plan.disables)]:
        try:
            writer.set_disabled(change.user_id, disabled)
            outcome.done += 1
        except Refused as exc:
            outcome.fail("disable user" if disabled else "enable user", change.name, str(exc))
    return outcome
