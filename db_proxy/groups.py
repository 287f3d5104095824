"""db_proxy commands for groups, with who may do what.

* Anyone may create a group (TeamTalk's clients create temporary ones).
* Adding members: any member of a temporary group; only the creator of a
  normal group.
* Removing: the creator removes anyone; a member may remove only itself.
* Reading: only current members see a group's info or history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from common.codec import Frame
from common.commands import Cmd
from common.link import LinkServerConnection
from common.pb import base_pb2, group_pb2
from db_proxy.storage.model import Group, NotMember, Store, StoreError

log = logging.getLogger("db.groups")

Reply = tuple[int, Message]
MAX_GROUP_MEMBERS = 2000
FAILED = 1


def group_info(group: Group) -> base_pb2.GroupInfo:
    return base_pb2.GroupInfo(
        group_id=group.id,
        version=group.version,
        group_name=group.name,
        group_avatar=group.avatar,
        group_creator_id=group.creator_id,
        group_type=group.group_type,
        shield_status=group.shield,
        group_member_list=list(group.members),
    )


def may_change_members(group: Group, user_id: int, change_type: int, members: list[int]) -> bool:
    if change_type == base_pb2.GROUP_MODIFY_TYPE_ADD:
        return group.group_type == base_pb2.GROUP_TYPE_TMP or user_id == group.creator_id
    if change_type == base_pb2.GROUP_MODIFY_TYPE_DEL:
        return user_id == group.creator_id or set(members) <= {user_id}
    return False


class GroupHandlers:
    def __init__(self, store: Store) -> None:
        self.store = store

    def table(self) -> Mapping[int, Callable[[LinkServerConnection, Frame, Any], Any]]:
        return {
            Cmd.NORMAL_GROUP_LIST_REQ: self.normal_list,
            Cmd.GROUP_INFO_REQ: self.info,
            Cmd.GROUP_CREATE_REQ: self.create,
            Cmd.GROUP_CHANGE_MEMBER_REQ: self.change_members,
            Cmd.GROUP_SHIELD_REQ: self.shield,
        }

    async def normal_list(
        self, conn: LinkServerConnection, frame: Frame, req: group_pb2.IMNormalGroupListReq
    ) -> Reply:
        res = group_pb2.IMNormalGroupListRsp(user_id=req.user_id, attach_data=req.attach_data)
        for group_id, version in await self.store.normal_groups_of(req.user_id):
            res.group_version_list.add(group_id=group_id, version=version)
        return Cmd.NORMAL_GROUP_LIST_RES, res

    async def info(
        self, conn: LinkServerConnection, frame: Frame, req: group_pb2.IMGroupInfoListReq
    ) -> Reply:
        known = {v.group_id: v.version for v in req.group_version_list}
        groups = await self.store.groups_for_member(req.user_id, list(known))
        # Only what the client lacks: a version newer than the one it holds.
        fresh = [group_info(g) for g in groups if g.version > known.get(g.id, 0)]
        return Cmd.GROUP_INFO_RES, group_pb2.IMGroupInfoListRsp(
            user_id=req.user_id, group_info_list=fresh, attach_data=req.attach_data
        )

    async def create(
        self, conn: LinkServerConnection, frame: Frame, req: group_pb2.IMGroupCreateReq
    ) -> Reply:
        def failed(why: str) -> Reply:
            log.info("group create by %d refused: %s", req.user_id, why)
            return Cmd.GROUP_CREATE_RES, group_pb2.IMGroupCreateRsp(
                user_id=req.user_id,
                result_code=FAILED,
                group_name=req.group_name,
                attach_data=req.attach_data,
            )

        members = list(dict.fromkeys([req.user_id, *req.member_id_list]))
        if req.group_type not in (base_pb2.GROUP_TYPE_NORMAL, base_pb2.GROUP_TYPE_TMP):
            return failed(f"group type {req.group_type}")
        if not req.group_name.strip():
            return failed("empty name")
        if len(members) > MAX_GROUP_MEMBERS:
            return failed(f"{len(members)} members, more than {MAX_GROUP_MEMBERS}")
        try:
            group = await self.store.create_group(
                req.group_name, req.group_avatar, req.user_id, req.group_type, members
            )
        except StoreError as exc:
            return failed(str(exc))
        return Cmd.GROUP_CREATE_RES, group_pb2.IMGroupCreateRsp(
            user_id=req.user_id,
            result_code=0,
            group_id=group.id,
            group_name=group.name,
            user_id_list=list(group.members),
            attach_data=req.attach_data,
        )

    async def change_members(
        self, conn: LinkServerConnection, frame: Frame, req: group_pb2.IMGroupChangeMemberReq
    ) -> Reply:
        res = group_pb2.IMGroupChangeMemberRsp(
            user_id=req.user_id,
            change_type=req.change_type,
            result_code=FAILED,
            group_id=req.group_id,
            attach_data=req.attach_data,
        )
        requested = list(dict.fromkeys(req.member_id_list))
        found = await self.store.groups_for_member(req.user_id, [req.group_id])
        group = found[0] if found else None
        if group is None or not may_change_members(group, req.user_id, req.change_type, requested):
            return Cmd.GROUP_CHANGE_MEMBER_RES, res
        adding = req.change_type == base_pb2.GROUP_MODIFY_TYPE_ADD
        if adding and len(set(group.members) | set(requested)) > MAX_GROUP_MEMBERS:
            return Cmd.GROUP_CHANGE_MEMBER_RES, res
        try:
            after, changed = await self.store.change_group_members(
                req.group_id, requested if adding else [], [] if adding else requested
            )
        except StoreError as exc:
            log.info("member change of group %d refused: %s", req.group_id, exc)
            return Cmd.GROUP_CHANGE_MEMBER_RES, res
        res.result_code = 0
        res.cur_user_id_list.extend(after.members)
        res.chg_user_id_list.extend(changed)
        return Cmd.GROUP_CHANGE_MEMBER_RES, res

    async def shield(
        self, conn: LinkServerConnection, frame: Frame, req: group_pb2.IMGroupShieldReq
    ) -> Reply:
        result = 0
        try:
            await self.store.set_group_shield(req.group_id, req.user_id, 1 if req.shield_status else 0)
        except NotMember:
            result = FAILED
        return Cmd.GROUP_SHIELD_RES, group_pb2.IMGroupShieldRsp(
            user_id=req.user_id, group_id=req.group_id, result_code=result, attach_data=req.attach_data
        )
