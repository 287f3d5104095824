"""db_proxy commands for the directory: users, departments, recent sessions,
profile changes, device tokens and push shield."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from common.codec import Frame
from common.commands import Cmd
from common.link import LinkServerConnection
from common.pb import base_pb2, buddy_pb2, login_pb2
from db_proxy.handlers import user_info
from db_proxy.storage.model import SESSION_GROUP, Store, StoreError

Reply = tuple[int, Message]
MAX_USERS_INFO = 2000  # ids in one users-info request


def sync_point(latest_updated: int) -> int:
    """The ``latest_update_time`` to hand back for an incremental sync.

    A row changed later in this same second still gets ``updated`` = now, so
    a client told "now" would never ask for it: tell it one second less and it
    asks again for this second (clients take a repeated row as an update).
    """
    return min(latest_updated, int(time.time()) - 1)


class DirectoryHandlers:
    def __init__(self, store: Store) -> None:
        self.store = store

    def table(self) -> Mapping[int, Callable[[LinkServerConnection, Frame, Any], Any]]:
        return {
            Cmd.RECENT_SESSION_REQ: self.recent_sessions,
            Cmd.USERS_INFO_REQ: self.users_info,
            Cmd.REMOVE_SESSION_REQ: self.remove_session,
            Cmd.ALL_USER_REQ: self.all_users,
            Cmd.CHANGE_AVATAR_REQ: self.change_avatar,
            Cmd.DEPARTMENT_REQ: self.departments,
            Cmd.CHANGE_SIGN_INFO_REQ: self.change_sign_info,
            Cmd.DEVICE_TOKEN_REQ: self.device_token,
            Cmd.PUSH_SHIELD_REQ: self.push_shield,
            Cmd.QUERY_PUSH_SHIELD_REQ: self.query_push_shield,
        }

    async def recent_sessions(
        self, conn: LinkServerConnection, frame: Frame, req: buddy_pb2.IMRecentContactSessionReq
    ) -> Reply:
        res = buddy_pb2.IMRecentContactSessionRsp(user_id=req.user_id, attach_data=req.attach_data)
        for s in await self.store.recent_sessions(req.user_id, req.latest_update_time):
            default_type = (
                base_pb2.MSG_TYPE_GROUP_TEXT
                if s.session_type == SESSION_GROUP
                else base_pb2.MSG_TYPE_SINGLE_TEXT
            )
            res.contact_session_list.add(
                session_id=s.peer_id,
                session_type=s.session_type,
                session_status=base_pb2.SESSION_STATUS_DELETE if s.removed else base_pb2.SESSION_STATUS_OK,
                updated_time=s.updated,
                latest_msg_id=s.latest_msg_id,
                latest_msg_data=s.latest_msg_data,
                latest_msg_type=s.latest_msg_type or default_type,
                latest_msg_from_user_id=s.latest_from_user_id,
            )
        return Cmd.RECENT_SESSION_RES, res

    async def users_info(
        self, conn: LinkServerConnection, frame: Frame, req: buddy_pb2.IMUsersInfoReq
    ) -> Reply:
        ids = list(dict.fromkeys(req.user_id_list))[:MAX_USERS_INFO]
        users = await self.store.users_by_id(ids)
        return Cmd.USERS_INFO_RES, buddy_pb2.IMUsersInfoRsp(
            user_id=req.user_id, user_info_list=[user_info(u) for u in users], attach_data=req.attach_data
        )

    async def remove_session(
        self, conn: LinkServerConnection, frame: Frame, req: buddy_pb2.IMRemoveSessionReq
    ) -> Reply:
        removed = await self.store.remove_session(req.user_id, req.session_type, req.session_id)
        return Cmd.REMOVE_SESSION_RES, buddy_pb2.IMRemoveSessionRsp(
            user_id=req.user_id,
            result_code=0 if removed else 1,
            session_type=req.session_type,
            session_id=req.session_id,
            attach_data=req.attach_data,
        )

    async def all_users(self, conn: LinkServerConnection, frame: Frame, req: buddy_pb2.IMAllUserReq) -> Reply:
        users = await self.store.users_updated_since(req.latest_update_time)
        latest = sync_point(max((u.updated for u in users), default=req.latest_update_time))
        return Cmd.ALL_USER_RES, buddy_pb2.IMAllUserRsp(
            user_id=req.user_id,
            latest_update_time=latest,
            user_list=[user_info(u) for u in users],
            attach_data=req.attach_data,
        )

    async def departments(
        self, conn: LinkServerConnection, frame: Frame, req: buddy_pb2.IMDepartmentReq
    ) -> Reply:
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
        return Cmd.DEPARTMENT_RES, res

    async def _update(self, user_id: int, **fields: object) -> int:
        try:
            return 0 if await self.store.update_user_profile(user_id, **fields) is not None else 1
        except StoreError:
            return 1  # e.g. longer than the column allows

    async def change_avatar(
        self, conn: LinkServerConnection, frame: Frame, req: buddy_pb2.IMChangeAvatarReq
    ) -> Reply:
        result = await self._update(req.user_id, avatar=req.avatar_url)
        return Cmd.CHANGE_AVATAR_RES, buddy_pb2.IMChangeAvatarRsp(
            user_id=req.user_id, result_code=result, attach_data=req.attach_data
        )

    async def change_sign_info(
        self, conn: LinkServerConnection, frame: Frame, req: buddy_pb2.IMChangeSignInfoReq
    ) -> Reply:
        result = await self._update(req.user_id, sign_info=req.sign_info)
        return Cmd.CHANGE_SIGN_INFO_RES, buddy_pb2.IMChangeSignInfoRsp(
            user_id=req.user_id, result_code=result, sign_info=req.sign_info, attach_data=req.attach_data
        )

    async def device_token(
        self, conn: LinkServerConnection, frame: Frame, req: login_pb2.IMDeviceTokenReq
    ) -> Reply:
        await self.store.set_device_token(req.user_id, req.client_type, req.device_token)
        return Cmd.DEVICE_TOKEN_RES, login_pb2.IMDeviceTokenRsp(
            user_id=req.user_id, attach_data=req.attach_data
        )

    async def push_shield(
        self, conn: LinkServerConnection, frame: Frame, req: login_pb2.IMPushShieldReq
    ) -> Reply:
        shield = 1 if req.shield_status else 0
        await self.store.set_push_shield(req.user_id, shield)
        return Cmd.PUSH_SHIELD_RES, login_pb2.IMPushShieldRsp(
            user_id=req.user_id, result_code=0, shield_status=shield, attach_data=req.attach_data
        )

    async def query_push_shield(
        self, conn: LinkServerConnection, frame: Frame, req: login_pb2.IMQueryPushShieldReq
    ) -> Reply:
        shield = await self.store.push_shield(req.user_id)
        return Cmd.QUERY_PUSH_SHIELD_RES, login_pb2.IMQueryPushShieldRsp(
            user_id=req.user_id, result_code=0, shield_status=shield, attach_data=req.attach_data
        )
