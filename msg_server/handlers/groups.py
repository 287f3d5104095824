"""Service 0x04: groups. Membership rules live in db_proxy; the gateway tells
the members what changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.commands import Cmd
from common.pb import base_pb2, group_pb2
from msg_server.handlers.base import Handler, deliver, forward_to_db

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway


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


COMMANDS: dict[int, Handler] = {
    Cmd.NORMAL_GROUP_LIST_REQ: forward_to_db(Cmd.NORMAL_GROUP_LIST_RES),
    Cmd.GROUP_INFO_REQ: forward_to_db(Cmd.GROUP_INFO_RES),
    Cmd.GROUP_CREATE_REQ: forward_to_db(Cmd.GROUP_CREATE_RES, _created),
    Cmd.GROUP_CHANGE_MEMBER_REQ: forward_to_db(Cmd.GROUP_CHANGE_MEMBER_RES, _members_changed),
    Cmd.GROUP_SHIELD_REQ: forward_to_db(Cmd.GROUP_SHIELD_RES),
}
