"""The sync planner and its apply on plain values: no slapd, no cluster.

A :class:`FakeCluster` keeps users and departments with the admin API's
rules that matter here (unique login names and department names per
parent, the default department, nick defaulting to the name). The main
property: whatever the directory and the cluster hold, applying the plan
and planning again plans nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from imctl.ldap_sync.apply import Refused, apply
from imctl.ldap_sync.plan import (
    DISABLED,
    GONE,
    ClusterDepartment,
    ClusterUser,
    DirectoryEntry,
    SyncOptions,
    plan,
)

DEFAULT_ID = 1


class FakeCluster:
    def __init__(self, users: list[ClusterUser], departments: list[ClusterDepartment] | None = None) -> None:
        self.departments = {DEFAULT_ID: ClusterDepartment(DEFAULT_ID, "default", 0)}
        for d in departments or []:
            self.departments[d.id] = d
        self.users = {u.id: u for u in users}
        self.next_id = 1000

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def create_department(self, name: str, parent_id: int) -> int:
        if any(d.parent_id == parent_id and d.name == name for d in self.departments.values()):
            raise Refused(f"department {parent_id} has a department named {name!r}")
        if parent_id and parent_id not in self.departments:
            raise Refused(f"no department {parent_id}")
        new = ClusterDepartment(self._id(), name, parent_id)
        self.departments[new.id] = new
        return new.id

    def create_user(self, fields: dict[str, Any]) -> int:
        name = fields["name"]
        if any(u.name == name for u in self.users.values()):
            raise Refused(f"a user named {name!r} exists")
        assert "password" not in fields and fields["external_id"]  # none that works
        values = dict(fields)
        values.setdefault("nick", name)
        values["department_id"] = values.get("department_id") or DEFAULT_ID
        user = ClusterUser(self._id(), **values)
        self.users[user.id] = user
        return user.id

    def update_user(self, user_id: int, fields: dict[str, Any]) -> None:
        name = fields.get("name")
        if name is not None and any(u.name == name and u.id != user_id for u in self.users.values()):
            raise Refused(f"a user named {name!r} exists")
        self.users[user_id] = dataclasses.replace(self.users[user_id], **fields)

    def set_disabled(self, user_id: int, disabled: bool) -> None:
        self.users[user_id] = dataclasses.replace(self.users[user_id], disabled=disabled)

    def plan(self, entries: list[DirectoryEntry], options: SyncOptions | None = None) -> Any:
        return plan(entries, self.users.values(), self.departments.values(), options)

    def sync(self, entries: list[DirectoryEntry], options: SyncOptions | None = None) -> Any:
        the_plan = self.plan(entries, options)
        return the_plan, apply(the_plan, list(self.departments.values()), self)

    def by_name(self, name: str) -> ClusterUser:
        return next(u for u in self.users.values() if u.name == name)

    def path(self, dept_id: int) -> str:
        names = []
        while dept_id:
            names.append(self.departments[dept_id].name)
            dept_id = self.departments[dept_id].parent_id
        return "/".join(reversed(names))


def entry(uid: str, eid: str, **fields: Any) -> DirectoryEntry:
    return DirectoryEntry(eid, uid, dn=f"uid={uid},ou=people", **fields)


def test_a_first_sync_creates_and_links_then_nothing() -> None:
    cluster = FakeCluster([ClusterUser(5, "carol", nick="C"), ClusterUser(6, "zed")])
    entries = [
        entry("ann", "u1", nick="Ann", email="ann@x", department=("eng", "dev")),
        entry("carol", "u3", nick="Carol", department=("eng",)),
        entry("dave", "u4", disabled=True),
        entry("frank", "u6"),
    ]
    the_plan, outcome = cluster.sync(entries)
    assert the_plan.departments == (("eng",), ("eng", "dev"))
    assert [c.login for c in the_plan.creates] == ["ann", "frank"]
    assert the_plan.disabled_not_created == 1 and outcome.failed == []
    carol = cluster.by_name("carol")
    assert (carol.id, carol.external_id, carol.nick, cluster.path(carol.department_id)) == (
        5,
        "u3",
        "Carol",
        "eng",
    )
    assert cluster.path(cluster.by_name("ann").department_id) == "eng/dev"
    assert cluster.path(cluster.by_name("frank").department_id) == "default"
    assert cluster.by_name("frank").nick == "frank"
    assert cluster.by_name("zed").external_id == ""
    assert cluster.plan(entries).changes == 0


def test_gone_and_disabled_users_are_disabled_never_deleted() -> None:
    cluster = FakeCluster(
        [
            ClusterUser(1, "ann", external_id="u1"),
            ClusterUser(2, "bob", external_id="u2"),
            ClusterUser(3, "zed"),
        ]
    )
    the_plan = cluster.plan([entry("ann", "u1", disabled=True)])
    assert [(c.name, c.reason) for c in the_plan.disables] == [("ann", DISABLED), ("bob", GONE)]
    cluster.sync([entry("ann", "u1", disabled=True)])
    assert set(cluster.users) == {1, 2, 3} and cluster.users[2].disabled and not cluster.users[3].disabled
    back = cluster.plan([entry("ann", "u1"), entry("bob", "u2")])
    assert sorted(c.name for c in back.enables) == ["ann", "bob"]


def test_a_rename_is_an_update_of_the_same_user() -> None:
    cluster = FakeCluster([ClusterUser(7, "ann", external_id="u1", nick="ann")])
    the_plan, _ = cluster.sync([entry("anne", "u1")])
    (update,) = the_plan.updates
    assert update.fields["name"] == "anne" and update.before["name"] == "ann"
    assert cluster.users[7].name == "anne" and len(cluster.users) == 1


def test_chains_are_ordered_and_swaps_skipped() -> None:
    users = [ClusterUser(1, "a", external_id="1"), ClusterUser(2, "b", external_id="2")]
    chain = FakeCluster(users)
    _, outcome = chain.sync([entry("b", "1"), entry("c", "2")])  # a -> b needs b -> c first
    assert outcome.failed == [] and [chain.users[i].name for i in (1, 2)] == ["b", "c"]
    swap = FakeCluster(users)
    the_plan, _ = swap.sync([entry("b", "1"), entry("a", "2")])
    assert [s.reason.startswith("renamed, but") for s in the_plan.skipped] == [True, True]
    assert [swap.users[i].name for i in (1, 2)] == ["a", "b"]


def test_entries_that_cannot_sync_are_skipped_with_the_reason() -> None:
    cluster = FakeCluster([ClusterUser(1, "taken", external_id="other")])
    the_plan = cluster.plan(
        [
            entry("", "e1"),
            entry("has space", "e2"),
            entry("dup", "e3"),
            entry("dup", "e4"),
            entry("noid", ""),
            entry("taken", "e5"),
            entry("ok", "e6"),
        ]
    )
    reasons = {s.login: s.reason for s in the_plan.skipped}
    assert reasons[""] == "no login name" and "whitespace" in reasons["has space"]
    assert reasons["dup"] == "login name used by 2 entries" and "external id" in reasons["noid"]
    assert reasons["taken"] == "login name taken by user 1"
    assert [c.login for c in the_plan.creates] == ["ok"]
    assert [c.name for c in the_plan.disables] == ["taken"]  # "other" is not in the directory


def test_long_values_are_cut_to_their_columns_the_same_way_every_time() -> None:
    cluster = FakeCluster([])
    entries = [entry("ann", "u1", nick="N" * 100, tel="9" * 40, department=("D" * 80,))]
    cluster.sync(entries)
    ann = cluster.by_name("ann")
    assert len(ann.nick) == 64 and len(ann.tel) == 32 and cluster.path(ann.department_id) == "D" * 64
    assert cluster.plan(entries).changes == 0


def test_unmapped_fields_and_departments_are_left_alone() -> None:
    cluster = FakeCluster(
        [ClusterUser(1, "ann", nick="ann", external_id="u1", tel="123", department_id=DEFAULT_ID)]
    )
    options = SyncOptions(fields=frozenset({"nick"}), departments=False)
    the_plan = cluster.plan([entry("ann", "u1", nick="ann", tel="", department=("x",))], options)
    assert the_plan.changes == 0


names = st.sampled_from(["a", "b", "c", "d", "e", "default"])
ids = st.sampled_from(["1", "2", "3", "4", "5"])
texts = st.sampled_from(["", "x", "y", " x ", "张三"])
paths = st.lists(st.sampled_from(["p", "q", "", " p", "default"]), max_size=3).map(tuple)
entries_st = st.lists(
    st.builds(
        DirectoryEntry,
        external_id=st.one_of(ids, st.just("")),
        login=st.one_of(names, st.just("a b")),
        nick=texts,
        real_name=texts,
        email=texts,
        tel=texts,
        department=paths,
        disabled=st.booleans(),
    ),
    max_size=8,
)


@st.composite
def clusters(draw: st.DrawFn) -> FakeCluster:
    logins = draw(st.lists(names, unique=True, max_size=6))
    users = [
        ClusterUser(
            id=n + 10,
            name=login,
            nick=draw(texts),
            email=draw(texts),
            department_id=draw(st.sampled_from([DEFAULT_ID, 2, 3])),
            disabled=draw(st.booleans()),
            external_id=draw(st.one_of(ids, st.just(""), st.just("9"))),
        )
        for n, login in enumerate(logins)
    ]
    departments = [ClusterDepartment(2, "p", 0), ClusterDepartment(3, "q", 2)]
    return FakeCluster(users, departments)


@settings(max_examples=300, deadline=None)
@given(clusters(), entries_st, st.booleans())
def test_applying_the_plan_then_planning_again_plans_nothing(
    cluster: FakeCluster, entries: list[DirectoryEntry], departments: bool
) -> None:
    options = SyncOptions(departments=departments)
    before = dict(cluster.users)
    _, outcome = cluster.sync(entries, options)
    assert outcome.failed == []
    again = cluster.plan(entries, options)
    assert again.changes == 0, again
    assert set(before) <= set(cluster.users)  # nobody is deleted
    present = {e.external_id for e in entries}
    for user_id, user in before.items():
        if not user.external_id:
            # Made here: only a directory entry of the same login may touch it.
            if not any(e.login == user.name for e in entries):
                assert cluster.users[user_id] == user
        elif user.external_id not in present:
            assert cluster.users[user_id].disabled  # gone: disabled
