"""Service 0x04: groups. Membership rules live in db_proxy, which also tells
the members what changed (skipping only the requesting connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.commands import Rpcs
from common.pb import group_pb2, internal_pb2
from msg_server.handlers.base import (
    ClientError,
    echo,
    forward_to_db,
    forward_with_origin,
    no_zero_ids,
    nonzero,
    text,
)
from msg_server.handlers.table import Client, ClientCommands

if TYPE_CHECKING:
    from msg_server.client import ClientConnection

# Storage's limits (db_proxy.storage.schema GROUP_TEXT_LIMITS); a test keeps them equal.
GROUP_NAME_LIMIT = 64
GROUP_AVATAR_LIMIT = 255


def _check_create(req: group_pb2.IMGroupCreateReq) -> None:
    text(req.group_name, "group name", GROUP_NAME_LIMIT)
    text(req.group_avatar, "group avatar", GROUP_AVATAR_LIMIT)
    no_zero_ids(req.member_id_list, "member list")


def _check_change(req: group_pb2.IMGroupChangeMemberReq) -> None:
    nonzero(req.group_id, "group id")
    no_zero_ids(req.member_id_list, "member list")


def _check_shield(req: group_pb2.IMGroupShieldReq) -> None:
    nonzero(req.group_id, "group id")


# -- what a refused request is answered with ----------------------------------------------


def _list_refused(
    conn: ClientConnection, req: group_pb2.IMNormalGroupListReq, err: ClientError
) -> group_pb2.IMNormalGroupListRsp:
    return group_pb2.IMNormalGroupListRsp(user_id=conn.user_id, attach_data=req.attach_data)


def _info_refused(
    conn: ClientConnection, req: group_pb2.IMGroupInfoListReq, err: ClientError
) -> group_pb2.IMGroupInfoListRsp:
    return group_pb2.IMGroupInfoListRsp(user_id=conn.user_id, attach_data=req.attach_data)


def _create_refused(
    conn: ClientConnection, req: group_pb2.IMGroupCreateReq, err: ClientError
) -> group_pb2.IMGroupCreateRsp:
    return group_pb2.IMGroupCreateRsp(
        user_id=conn.user_id,
        result_code=err.result_code,
        group_name=echo(req.group_name),
        attach_data=req.attach_data,
    )


def _change_refused(
    conn: ClientConnection, req: group_pb2.IMGroupChangeMemberReq, err: ClientError
) -> group_pb2.IMGroupChangeMemberRsp:
    return group_pb2.IMGroupChangeMemberRsp(
        user_id=conn.user_id,
        change_type=req.change_type,
        result_code=err.result_code,
        group_id=req.group_id,
        attach_data=req.attach_data,
    )


def _shield_refused(
    conn: ClientConnection, req: group_pb2.IMGroupShieldReq, err: ClientError
) -> group_pb2.IMGroupShieldRsp:
    return group_pb2.IMGroupShieldRsp(
        user_id=conn.user_id, group_id=req.group_id, result_code=err.result_code, attach_data=req.attach_data
    )


COMMANDS = (
    ClientCommands()
    .request(Client.NORMAL_GROUP_LIST, forward_to_db(Rpcs.NORMAL_GROUP_LIST), _list_refused)
    .request(Client.GROUP_INFO, forward_to_db(Rpcs.GROUP_INFO), _info_refused)
    .request(
        Client.GROUP_CREATE,
        forward_with_origin(Rpcs.DB_GROUP_CREATE, internal_pb2.DbGroupCreateReq, check=_check_create),
        _create_refused,
    )
    .request(
        Client.GROUP_CHANGE_MEMBER,
        forward_with_origin(
            Rpcs.DB_GROUP_CHANGE_MEMBER, internal_pb2.DbGroupChangeMemberReq, check=_check_change
        ),
        _change_refused,
    )
    .request(Client.GROUP_SHIELD, forward_to_db(Rpcs.GROUP_SHIELD, check=_check_shield), _shield_refused)
)
