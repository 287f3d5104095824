"""db_proxy commands for the directory: users, departments, profile changes,
device tokens and push shield. Reads and writes the directory store only."""

from __future__ import annotations

import time

from common.commands import Rpcs
from common.link import Link
from common.pb import base_pb2, buddy_pb2, internal_pb2, login_pb2
from common.rpc import Commands
from db_proxy.handlers.replies import Refused, echo, result_code, unless_refused, user_info
from db_proxy.notices import Notices
from db_proxy.services.users import UserService
from db_proxy.storage.model import Store, User

MAX_USERS_INFO = 2000  # ids in one users-info request


def sync_point(latest_updated: int) -> int:
    """The ``latest_update_time`` to hand back for an incremental sync.

    A row changed later in this same second still gets ``updated`` = now, so
    a client told "now" would never ask for it: tell it one second less and it
    asks again for this second (clients take a repeated row as an update).
    """
    return min(latest_updated, int(time.time()) - 1)


class DirectoryHandlers:
    def __init__(self, directory: Store, users: UserService, notices: Notices) -> None:
        self.store = directory
        self.users = users
        self.notices = notices

    def commands(self) -> Commands:
        """The commands a gateway may send for this part of db_proxy."""
        return (
            Commands()
            .rpc(Rpcs.USERS_INFO, self.users_info)
            .rpc(Rpcs.ALL_USER, self.all_users)
            .rpc(Rpcs.DB_CHANGE_AVATAR, self.change_avatar)
            .rpc(Rpcs.DEPARTMENT, self.departments)
            .rpc(Rpcs.DB_CHANGE_SIGN_INFO, self.change_sign_info)
            .rpc(Rpcs.DEVICE_TOKEN, self.device_token)
            .rpc(Rpcs.PUSH_SHIELD, self.push_shield)
            .rpc(Rpcs.QUERY_PUSH_SHIELD, self.query_push_shield)
        )

    async def users_info(self, link: Link, req: buddy_pb2.IMUsersInfoReq) -> buddy_pb2.IMUsersInfoRsp:
        ids = list(dict.fromkeys(req.user_id_list))[:MAX_USERS_INFO]
        users = await self.store.users_by_id(ids)
        return buddy_pb2.IMUsersInfoRsp(
            user_id=req.user_id, user_info_list=[user_info(u) for u in users], attach_data=req.attach_data
        )

    async def all_users(self, link: Link, req: buddy_pb2.IMAllUserReq) -> buddy_pb2.IMAllUserRsp:
        users = await self.store.users_updated_since(req.latest_update_time)
        latest = sync_point(max((u.updated for u in users), default=req.latest_update_time))
        return buddy_pb2.IMAllUserRsp(
            user_id=req.user_id,
            latest_update_time=latest,
            user_list=[user_info(u) for u in users],
            attach_data=req.attach_data,
        )

    async def departments(self, link: Link, req: buddy_pb2.IMDepartmentReq) -> buddy_pb2.IMDepartmentRsp:
        departments = await self.store.departments_updated_since(req.latest_update_time)
        latest = sync_point(max((d.updated for d in departments), default=req.latest_update_time))
        res = buddy_pb2.IMDepartmentRsp(
            user_id=req.user_id, latest_update_time=latest, attach_data=req.attach_data
        )
        for d in departments:
            res.dept_list.add(
                dept_id=d.id,
                priority=d.priority,
                dept_name=d.name,
                parent_dept_id=d.parent_id,
                dept_status=base_pb2.DEPT_STATUS_DELETE if d.deleted else base_pb2.DEPT_STATUS_OK,
            )
        return res

    async def _update(self, origin: internal_pb2.Origin, user_id: int, **fields: object) -> User | Refused:
        """The profile after the change, announced; Refused for a value that does
        not fit (too long, not UTF-8) or a user that is no more."""
        outcome = await unless_refused(self.users.update_profile(user_id, **fields))
        if isinstance(outcome, Refused):
            return outcome
        self.notices.publish(outcome.notices, origin)
        return outcome.result

    async def change_avatar(
        self, link: Link, wrapped: internal_pb2.DbChangeAvatarReq
    ) -> buddy_pb2.IMChangeAvatarRsp:
        req = wrapped.req
        changed = await self._update(wrapped.origin, req.user_id, avatar=req.avatar_url)
        return buddy_pb2.IMChangeAvatarRsp(
            user_id=req.user_id, result_code=result_code(changed), attach_data=req.attach_data
        )

    async def change_sign_info(
        self, link: Link, wrapped: internal_pb2.DbChangeSignInfoReq
    ) -> buddy_pb2.IMChangeSignInfoRsp:
        req = wrapped.req
        changed = await self._update(wrapped.origin, req.user_id, sign_info=req.sign_info)
        return buddy_pb2.IMChangeSignInfoRsp(
            user_id=req.user_id,
            result_code=result_code(changed),
            sign_info=changed.sign_info if isinstance(changed, User) else echo(req.sign_info),
            attach_data=req.attach_data,
        )

    async def device_token(self, link: Link, req: login_pb2.IMDeviceTokenReq) -> login_pb2.IMDeviceTokenRsp:
        await self.store.set_device_token(req.user_id, req.client_type, req.device_token)
        return login_pb2.IMDeviceTokenRsp(user_id=req.user_id, attach_data=req.attach_data)

    async def push_shield(self, link: Link, req: login_pb2.IMPushShieldReq) -> login_pb2.IMPushShieldRsp:
        shield = 1 if req.shield_status else 0
        await self.store.set_push_shield(req.user_id, shield)
        return login_pb2.IMPushShieldRsp(
            user_id=req.user_id, result_code=0, shield_status=shield, attach_data=req.attach_data
        )

    async def query_push_shield(
        self, link: Link, req: login_pb2.IMQueryPushShieldReq
    ) -> login_pb2.IMQueryPushShieldRsp:
        shield = await self.store.push_shield(req.user_id)
        return login_pb2.IMQueryPushShieldRsp(
            user_id=req.user_id, result_code=0, shield_status=shield, attach_data=req.attach_data
        )
