"""Groups: create, change members, dismiss, shield; and the notices each causes.

Groups and members live in the messages store; whether a user exists is
asked of the directory through :class:`KnownUsers` (never a join), and only
existing, not deleted users reach the store. Who may do what is the
caller's to decide (a client's rules in :mod:`db_proxy.handlers.groups`; an
admin may do anything): these operations only keep the group consistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from common.errors import InvalidArgument
from common.pb import base_pb2
from db_proxy.recipients import KnownUsers
from db_proxy.services.outcome import GroupNotice, Outcome
from db_proxy.storage.model import Group, Store, UnknownGroup, UnknownUser

MAX_GROUP_MEMBERS = 2000
GROUP_TYPES = (base_pb2.GROUP_TYPE_NORMAL, base_pb2.GROUP_TYPE_TMP)
ADD, DEL = base_pb2.GROUP_MODIFY_TYPE_ADD, base_pb2.GROUP_MODIFY_TYPE_DEL


@dataclass(frozen=True, slots=True)
class MemberChange:
    group: Group  # after the change
    added: list[int]
    removed: list[int]

    @property
    def changed(self) -> list[int]:
        return sorted(self.added + self.removed)


def notice(
    group: Group,
    by: int,
    change_type: base_pb2.GroupModifyType.ValueType,
    changed: list[int],
    told: Iterable[int],
) -> GroupNotice:
    """IMGroupChangeMemberNotify of a change to ``group``, for those ``told``."""
    return GroupNotice(
        user_id=by,
        change_type=change_type,
        group_id=group.id,
        current=tuple(group.members),
        changed=tuple(changed),
        recipients=tuple(sorted(set(told))),
    )


def change_notices(change: MemberChange, by: int) -> tuple[GroupNotice, ...]:
    """The members hear of those added; the members and those removed (so their
    clients drop the group) of those removed."""
    after = change.group
    notices = []
    if change.added:
        notices.append(notice(after, by, ADD, change.added, after.members))
    if change.removed:
        notices.append(notice(after, by, DEL, change.removed, [*after.members, *change.removed]))
    return tuple(notices)


class GroupService:
    def __init__(self, store: Store, known: KnownUsers) -> None:
        self.store = store  # the messages store
        self.known = known  # users, from the directory

    async def create(
        self, creator_id: int, name: str, avatar: str, group_type: int, member_ids: Iterable[int]
    ) -> Outcome[Group]:
        """A new group of the creator and those of ``member_ids`` that are users;
        every member hears of it (the creator's other devices too)."""
        if group_type not in GROUP_TYPES:
            raise InvalidArgument(f"group type {group_type}")
        if not name.strip():
            raise InvalidArgument("empty group name")
        requested = list(dict.fromkeys([creator_id, *member_ids]))
        if len(requested) > MAX_GROUP_MEMBERS:
            raise InvalidArgument(f"{len(requested)} members, more than {MAX_GROUP_MEMBERS}")
        members = await self.known.existing(requested)
        if creator_id not in members:
            raise UnknownUser(f"the creator {creator_id} is not a user")
        # The store checks the name and avatar (length, UTF-8).
        group = await self.store.create_group(name, avatar, creator_id, group_type, members)
        everyone = list(group.members)
        return Outcome(group, (notice(group, creator_id, ADD, everyone, everyone),))

    async def change_members(
        self, group: Group, by: int, add: Iterable[int], remove: Iterable[int]
    ) -> Outcome[MemberChange]:
        """Add and remove members of ``group`` (as read by the caller); ``by`` is
        named in the notices as the one who changed it. Adding a non-user or a
        member, or removing a non-member, changes nothing. UnknownGroup if it
        was dismissed meanwhile."""
        add, remove = list(dict.fromkeys(add)), list(dict.fromkeys(remove))
        if len(set(group.members).union(add)) > MAX_GROUP_MEMBERS:
            raise InvalidArgument(f"group {group.id} would have more than {MAX_GROUP_MEMBERS} members")
        adding = await self.known.existing(add)
        after, changed = await self.store.change_group_members(group.id, adding, remove)
        change = MemberChange(
            after,
            added=[u for u in changed if u in after.members],
            removed=[u for u in changed if u not in after.members],
        )
        return Outcome(change, change_notices(change, by))

    async def dismiss(self, group_id: int) -> Outcome[Group]:
        """Every member leaves; they hear of it (named by the creator)."""
        after, removed = await self.store.dismiss_group(group_id)
        return Outcome(after, (notice(after, after.creator_id, DEL, removed, removed),) if removed else ())

    async def leave_all(self, user_id: int) -> tuple[GroupNotice, ...]:
        """A deleted user leaves every group it is in, as its creator would remove it."""
        notices: list[GroupNotice] = []
        for group_id in await self.store.group_ids_of(user_id):
            try:
                after, changed = await self.store.change_group_members(group_id, [], [user_id])
            except UnknownGroup:
                continue  # dismissed meanwhile
            change = MemberChange(after, added=[], removed=changed)
            notices += change_notices(change, after.creator_id)
        return tuple(notices)

    async def shield(self, group_id: int, user_id: int, shield: bool) -> None:
        await self.store.set_group_shield(group_id, user_id, 1 if shield else 0)
