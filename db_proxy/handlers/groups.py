"""db_proxy commands for groups, with who may do what (a client's rules; the
operations and their notices are :mod:`db_proxy.services.groups`).

* Anyone may create a group (TeamTalk's clients create temporary ones).
* Adding members: any member of a temporary group; only the creator of a
  normal group.
* Removing: the creator removes anyone; a member may remove only itself.
* Reading: only current members see a group's info or history.
"""

from __future__ import annotations

import logging

from common.commands import Rpcs
from common.link import Link
from common.pb import base_pb2, group_pb2, internal_pb2
from common.rpc import Commands
from db_proxy.handlers.replies import FAILED, Refused, echo, result_code, unless_refused
from db_proxy.notices import Notices
from db_proxy.services.groups import GroupService
from db_proxy.storage.model import Group, Store

log = logging.getLogger("db.groups")


def group_info(group: Group) -> base_pb2.GroupInfo:
    return base_pb2.GroupInfo(
        group_id=group.id,
        version=group.version,
        group_name=group.name,
        group_avatar=group.avatar,
        group_creator_id=group.creator_id,
        group_type=base_pb2.GroupType.ValueType(group.group_type),
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
    def __init__(self, store: Store, groups: GroupService, notices: Notices) -> None:
        self.store = store  # the messages store
        self.groups = groups
        self.notices = notices

    def commands(self) -> Commands:
        """The commands a gateway may send for this part of db_proxy."""
        return (
            Commands()
            .rpc(Rpcs.NORMAL_GROUP_LIST, self.normal_list)
            .rpc(Rpcs.GROUP_INFO, self.info)
            .rpc(Rpcs.DB_GROUP_CREATE, self.create)
            .rpc(Rpcs.DB_GROUP_CHANGE_MEMBER, self.change_members)
            .rpc(Rpcs.GROUP_SHIELD, self.shield)
        )

    async def normal_list(
        self, link: Link, req: group_pb2.IMNormalGroupListReq
    ) -> group_pb2.IMNormalGroupListRsp:
        res = group_pb2.IMNormalGroupListRsp(user_id=req.user_id, attach_data=req.attach_data)
        for group_id, version in await self.store.normal_groups_of(req.user_id):
            res.group_version_list.add(group_id=group_id, version=version)
        return res

    async def info(self, link: Link, req: group_pb2.IMGroupInfoListReq) -> group_pb2.IMGroupInfoListRsp:
        known = {v.group_id: v.version for v in req.group_version_list}
        groups = await self.store.groups_for_member(req.user_id, list(known))
        # Only what the client lacks: a version newer than the one it holds.
        fresh = [group_info(g) for g in groups if g.version > known.get(g.id, 0)]
        return group_pb2.IMGroupInfoListRsp(
            user_id=req.user_id, group_info_list=fresh, attach_data=req.attach_data
        )

    async def create(self, link: Link, wrapped: internal_pb2.DbGroupCreateReq) -> group_pb2.IMGroupCreateRsp:
        req = wrapped.req
        outcome = await unless_refused(
            self.groups.create(
                req.user_id, req.group_name, req.group_avatar, req.group_type, req.member_id_list
            )
        )
        if isinstance(outcome, Refused):
            log.debug("group create by %d refused: %s", req.user_id, outcome.reason)
            return group_pb2.IMGroupCreateRsp(
                user_id=req.user_id,
                result_code=FAILED,
                group_name=echo(req.group_name),
                attach_data=req.attach_data,
            )
        self.notices.publish(outcome.notices, wrapped.origin)
        group = outcome.result
        return group_pb2.IMGroupCreateRsp(
            user_id=req.user_id,
            result_code=0,
            group_id=group.id,
            group_name=group.name,
            user_id_list=list(group.members),
            attach_data=req.attach_data,
        )

    async def change_members(
        self, link: Link, wrapped: internal_pb2.DbGroupChangeMemberReq
    ) -> group_pb2.IMGroupChangeMemberRsp:
        req = wrapped.req
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
            return res
        adding = req.change_type == base_pb2.GROUP_MODIFY_TYPE_ADD
        outcome = await unless_refused(
            self.groups.change_members(
                group, req.user_id, requested if adding else [], [] if adding else requested
            )
        )
        if isinstance(outcome, Refused):  # too many members, or dismissed meanwhile
            log.debug("member change of group %d refused: %s", req.group_id, outcome.reason)
            return res
        self.notices.publish(outcome.notices, wrapped.origin)
        res.result_code = 0
        res.cur_user_id_list.extend(outcome.result.group.members)
        res.chg_user_id_list.extend(outcome.result.changed)
        return res

    async def shield(self, link: Link, req: group_pb2.IMGroupShieldReq) -> group_pb2.IMGroupShieldRsp:
        done = await unless_refused(self.groups.shield(req.group_id, req.user_id, bool(req.shield_status)))
        return group_pb2.IMGroupShieldRsp(
            user_id=req.user_id,
            group_id=req.group_id,
            result_code=result_code(done),
            attach_data=req.attach_data,
        )
