"""Groups and their members.

A member row is kept when the member leaves (``removed = 1``), so a group's
membership history stays; every read checks current membership. A member's
``joined_msg_id`` is the group's last msg id when it (last) joined: it sees
only later messages.

Locking (InnoDB; SQLite's single writer serialises everything anyway): a
member change locks the group row, then the group's msg id counter, then its
member rows. A message save locks the counter (allocating ids), then reads
the members with a locking read. So the two queue on the counter, and the
members a message goes to are exactly those at its commit.
"""

from __future__ import annotations

import itertools
import time
from functools import cache

from . import schema
from .model import SESSION_GROUP, Group, InvalidValue, NotMember, UnknownGroup
from .sql_base import (
    BUMP_UPDATED,
    U32_MAX,
    Database,
    Dialect,
    Row,
    Tx,
    check_int,
    check_text,
    chunks,
    marks,
    valid_ids,
)

GROUP_TYPES = (1, 2)  # normal, temporary
_GROUP_COLUMNS = "g.id, g.name, g.avatar, g.creator_id, g.group_type, g.version"


async def current_members(
    tx: Tx, d: Dialect, group_ids: list[int], *, lock: bool = False
) -> dict[int, tuple[int, ...]]:
    """The current members of each of ``group_ids`` (sorted), ascending.

    ``lock``: inside a write transaction, read the latest commit and keep
    those rows until it ends. Groups without members are absent.
    """
    members: dict[int, tuple[int, ...]] = {}
    suffix = d.for_update if lock else ""
    for chunk in chunks(group_ids):
        rows = await tx.fetchall(
            f"SELECT group_id, user_id FROM group_members WHERE group_id IN ({marks(len(chunk))}) "
            f"AND removed = 0 ORDER BY group_id, user_id{suffix}",
            chunk,
        )
        for group_id, group_rows in itertools.groupby(rows, key=lambda row: row[0]):
            members[group_id] = tuple(row[1] for row in group_rows)
    return members


@cache
def _join_sql(d: Dialect) -> str:
    # A new member, or a former one back: joins now, unmuted.
    return (
        "INSERT INTO group_members (group_id, user_id, joined_msg_id, removed, updated, shield) "
        f"VALUES (?, ?, ?, 0, ?, 0) {d.upsert('group_id, user_id')} "
        f"joined_msg_id = {d.new('joined_msg_id')}, removed = 0, updated = {d.new('updated')}, shield = 0"
    )


class GroupQueries:
    """The group part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    async def create_group(
        self, name: str, avatar: str, creator_id: int, group_type: int, member_ids: list[int]
    ) -> Group:
        """See :meth:`Store.create_group`. The caller passes users that exist
        (the users table may be in another database: the group service asks
        the directory); the creator is a member whether listed or not."""
        check_text("group name", name, schema.GROUP_TEXT_LIMITS["name"])
        check_text("group avatar", avatar, schema.GROUP_TEXT_LIMITS["avatar"])
        if group_type not in GROUP_TYPES:
            raise InvalidValue(f"unknown group type {group_type}")
        check_int("group creator", creator_id, 1, U32_MAX)
        now = int(time.time())
        async with self.db.transaction() as tx:
            members = sorted(set(valid_ids([creator_id, *member_ids])))
            group_id = await tx.insert(
                "INSERT INTO chat_groups (name, avatar, creator_id, group_type, version, created, updated) "
                "VALUES (?, ?, ?, ?, 1, ?, ?)",
                (name, avatar, creator_id, group_type, now, now),
            )
            # The msg id counter exists from the start: member changes lock it.
            await tx.execute(
                "INSERT INTO conversations (session_type, conv_id, last_msg_id) VALUES (?, ?, 0)",
                (SESSION_GROUP, group_id),
            )
            await tx.executemany(_join_sql(self.db.dialect), [(group_id, m, 0, now) for m in members])
        return Group(group_id, name, avatar, creator_id, group_type, 1, tuple(members))

    async def normal_groups_of(self, user_id: int) -> list[tuple[int, int]]:
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                "SELECT g.id, g.version FROM group_members gm JOIN chat_groups g ON g.id = gm.group_id "
                "WHERE gm.user_id = ? AND gm.removed = 0 AND g.group_type = 1 "
                "ORDER BY g.id",
                (user_id,),
            )
        return [(group_id, version) for group_id, version in rows]

    async def groups_for_member(self, user_id: int, group_ids: list[int]) -> list[Group]:
        """Those of ``group_ids`` the user is a member of, ascending by id."""
        groups: list[Group] = []
        async with self.db.reading() as tx:
            for chunk in chunks(valid_ids(group_ids)):
                # One statement (a row per member), so version and members agree.
                rows = await tx.fetchall(
                    f"SELECT {_GROUP_COLUMNS}, v.shield, m.user_id FROM group_members v "
                    "JOIN chat_groups g ON g.id = v.group_id "
                    "JOIN group_members m ON m.group_id = v.group_id AND m.removed = 0 "
                    f"WHERE v.user_id = ? AND v.removed = 0 AND v.group_id IN ({marks(len(chunk))}) "
                    "ORDER BY g.id, m.user_id",
                    (user_id, *chunk),
                )
                for _, group_rows in itertools.groupby(rows, key=lambda row: row[0]):
                    members = list(group_rows)
                    group_id, name, avatar, creator_id, group_type, version, shield, _ = members[0]
                    member_ids = tuple(row[-1] for row in members)
                    groups.append(
                        Group(group_id, name, avatar, creator_id, group_type, version, member_ids, shield)
                    )
        return groups

    async def change_group_members(
        self, group_id: int, add: list[int], remove: list[int]
    ) -> tuple[Group, list[int]]:
        """See :meth:`Store.change_group_members`.

        ``add`` are users that exist (the group service asks the directory;
        no join on users here). Adding a member, and removing a non-member, change
        nothing; a user in both lists is left as it is. The version goes up
        only if someone changed. A removed member's session with the group
        is hidden and its unread count cleared. UnknownGroup
        if there is no such group, or it was dismissed. The returned group
        has no viewer (shield 0).
        """
        now = int(time.time())
        d = self.db.dialect
        async with self.db.transaction() as tx:
            found, last_msg_id, current = await _lock_group(tx, d, group_id)
            both = set(add) & set(remove)
            adding = sorted(set(valid_ids(add)) - current - both)
            removing = sorted(current & set(remove) - both)
            if adding:
                await tx.executemany(_join_sql(d), [(group_id, m, last_msg_id, now) for m in adding])
            await _remove_members(tx, group_id, removing, now)
            changed = sorted(adding + removing)
            if changed:
                await tx.execute(
                    "UPDATE chat_groups SET version = version + 1, updated = ? WHERE id = ?", (now, group_id)
                )
        _, name, avatar, creator_id, group_type, version = found
        members = tuple(sorted(current.union(adding).difference(removing)))
        after = Group(group_id, name, avatar, creator_id, group_type, version + bool(changed), members)
        return after, changed

    async def dismiss_group(self, group_id: int) -> tuple[Group, list[int]]:
        """See :meth:`Store.dismiss_group`: every member leaves as by change_group_members."""
        now = int(time.time())
        async with self.db.transaction() as tx:
            found, _, current = await _lock_group(tx, self.db.dialect, group_id)
            removing = sorted(current)
            await _remove_members(tx, group_id, removing, now)
            await tx.execute(
                "UPDATE chat_groups SET version = version + 1, dismissed = 1, updated = ? WHERE id = ?",
                (now, group_id),
            )
        _, name, avatar, creator_id, group_type, version = found
        return Group(
            group_id, name, avatar, creator_id, group_type, version + 1, (), dismissed=True
        ), removing

    async def group_by_id(self, group_id: int) -> Group | None:
        async with self.db.reading() as tx:
            groups = await _groups_where(tx, self.db.dialect, "g.id = ?", (group_id,))
        return groups[0] if groups else None

    async def list_groups(self, offset: int, limit: int) -> tuple[list[Group], int]:
        async with self.db.reading() as tx:
            groups = await _groups_where(
                tx, self.db.dialect, "g.dismissed = 0 ORDER BY g.id LIMIT ? OFFSET ?", (limit, offset)
            )
            total = await tx.fetchall("SELECT COUNT(*) FROM chat_groups WHERE dismissed = 0")
        return groups, int(total[0][0])

    async def group_ids_of(self, user_id: int) -> list[int]:
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                "SELECT group_id FROM group_members WHERE user_id = ? AND removed = 0 ORDER BY group_id",
                (user_id,),
            )
        return [row[0] for row in rows]

    async def set_group_shield(self, group_id: int, user_id: int, shield: int) -> None:
        check_int("group shield", shield, 0, 1)
        async with self.db.transaction() as tx:
            member = await tx.fetchall(
                "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ? AND removed = 0"
                f"{self.db.dialect.for_update}",
                (group_id, user_id),
            )
            if not member:
                raise NotMember(f"user {user_id} is not a member of group {group_id}")
            await tx.execute(
                "UPDATE group_members SET shield = ?, updated = ? WHERE group_id = ? AND user_id = ?",
                (shield, int(time.time()), group_id, user_id),
            )


async def _lock_group(tx: Tx, d: Dialect, group_id: int) -> tuple[Row, int, set[int]]:
    """Lock a live group for a member change: its row, then its msg id
    counter, then its member rows (see the module's locking order).

    Returns the group's columns (:data:`_GROUP_COLUMNS`), its last msg id
    and its current members. UnknownGroup if there is none or it was dismissed.
    """
    found = await tx.fetchall(
        f"SELECT {_GROUP_COLUMNS} FROM chat_groups g WHERE g.id = ? AND g.dismissed = 0{d.for_update}",
        (group_id,),
    )
    if not found:
        raise UnknownGroup(f"no group {group_id}")
    counter = await tx.fetchall(
        f"SELECT last_msg_id FROM conversations WHERE session_type = ? AND conv_id = ?{d.for_update}",
        (SESSION_GROUP, group_id),
    )
    last_msg_id = counter[0][0] if counter else 0
    current = set((await current_members(tx, d, [group_id], lock=True)).get(group_id, ()))
    return found[0], last_msg_id, current


async def _remove_members(tx: Tx, group_id: int, removing: list[int], now: int) -> None:
    """Members leave: their rows stay (removed), their sessions with the group are hidden."""
    for chunk in chunks(removing):
        await tx.execute(
            "UPDATE group_members SET removed = 1, updated = ? "
            f"WHERE group_id = ? AND user_id IN ({marks(len(chunk))})",
            (now, group_id, *chunk),
        )
        await tx.execute(
            f"UPDATE sessions SET {BUMP_UPDATED}, unread_cnt = 0, removed = 1 "
            f"WHERE session_type = ? AND peer_id = ? AND user_id IN ({marks(len(chunk))})",
            (now, now, SESSION_GROUP, group_id, *chunk),
        )


async def _groups_where(tx: Tx, d: Dialect, where: str, params: tuple[object, ...]) -> list[Group]:
    """Groups selected by a condition on ``g`` (it may end in ORDER BY and LIMIT), with their members."""
    rows = await tx.fetchall(f"SELECT {_GROUP_COLUMNS}, g.dismissed FROM chat_groups g WHERE {where}", params)
    members = await current_members(tx, d, [row[0] for row in rows])
    return [
        Group(
            group_id,
            name,
            avatar,
            creator_id,
            group_type,
            version,
            members.get(group_id, ()),
            dismissed=bool(dismissed),
        )
        for group_id, name, avatar, creator_id, group_type, version, dismissed in rows
    ]
