"""Service 0x04: groups. Membership rules live in db_proxy; the gateway tells
the members what changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.commands import Cmd, Rpcs
from common.pb import base_pb2, group_pb2
from msg_server.handlers.base import ClientError, deliver, echo, forward_to_db, no_zero_ids, nonzero, text
from msg_server.handlers.table import Client, ClientCommands

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

# Storage's limits (db_proxy.storage.schema GROUP_TEXT_LIMITS); a test keeps them equal.
GROUP_NAME_LIMIT = 64
GROUP_AVATAR_LIMIT = 255


def _created(
    gw: Gateway, conn: ClientConnection, req: group_pb2.IMGroupCreateReq, res: group_pb2.IMGroupCreateRsp
) -> None:
    if res.result_code != 0:
        return
    members = list(res.user_id_list)
    notify = group_pb2.IMGroupChangeMemberNotify(
        user_id=conn.user_id,
        change_type=base_pb2.GROUP_MODIFY_TYPE_ADD,
        group_id=res.group_id,
        cur_user_id_list=members,
        chg_user_id_list=members,
    )
    deliver(gw, conn, [m for m in members if m != conn.user_id], Cmd.GROUP_CHANGE_MEMBER_NOTIFY, notify)


def _members_changed(
    gw: Gateway,
    conn: ClientConnection,
    req: group_pb2.IMGroupChangeMemberReq,
    res: group_pb2.IMGroupChangeMemberRsp,
) -> None:
    if res.result_code != 0 or not res.chg_user_id_list:
        return
    notify = group_pb2.IMGroupChangeMemberNotify(
        user_id=conn.user_id,
        change_type=res.change_type,
        group_id=res.group_id,
        cur_user_id_list=res.cur_user_id_list,
        chg_user_id_list=res.chg_user_id_list,
    )
    # The members, and those just removed so their clients drop the group;
    # the requester's other devices too, but not the requesting connection.
    told = sorted(set(res.cur_user_id_list) | set(res.chg_user_id_list))
    deliver(gw, conn, told, Cmd.GROUP_CHANGE_MEMBER_NOTIFY, notify)


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
        forward_to_db(Rpcs.GROUP_CREATE, check=_check_create, after=_created),
        _create_refused,
    )
    .request(
        Client.GROUP_CHANGE_MEMBER,
        forward_to_db(Rpcs.GROUP_CHANGE_MEMBER, check=_check_change, after=_members_changed),
        _change_refused,
    )
    .request(Client.GROUP_SHIELD, forward_to_db(Rpcs.GROUP_SHIELD, check=_check_shield), _shield_refused)
)
