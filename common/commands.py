"""Command ids and the protobuf message each one carries.

Client commands are TeamTalk's (the high byte is the service id); internal
commands live in service 0x08, which no TeamTalk client sends.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from google.protobuf.message import Message

from common.pb import buddy_pb2, file_pb2, group_pb2, internal_pb2, login_pb2, message_pb2, other_pb2
from common.rpc import OneWay, Rpc


class Cmd(IntEnum):
    # 0x01 login
    LOGIN_REQ = 0x0103
    LOGIN_RES = 0x0104
    LOGOUT_REQ = 0x0105
    LOGOUT_RES = 0x0106
    KICK_USER = 0x0107
    DEVICE_TOKEN_REQ = 0x0108
    DEVICE_TOKEN_RES = 0x0109
    KICK_PC_CLIENT_REQ = 0x010A
    KICK_PC_CLIENT_RES = 0x010B
    PUSH_SHIELD_REQ = 0x010C
    PUSH_SHIELD_RES = 0x010D
    QUERY_PUSH_SHIELD_REQ = 0x010E
    QUERY_PUSH_SHIELD_RES = 0x010F
    # 0x02 buddy list
    RECENT_SESSION_REQ = 0x0201
    RECENT_SESSION_RES = 0x0202
    USER_STAT_NOTIFY = 0x0203
    USERS_INFO_REQ = 0x0204
    USERS_INFO_RES = 0x0205
    REMOVE_SESSION_REQ = 0x0206
    REMOVE_SESSION_RES = 0x0207
    ALL_USER_REQ = 0x0208
    ALL_USER_RES = 0x0209
    USERS_STAT_REQ = 0x020A
    USERS_STAT_RES = 0x020B
    CHANGE_AVATAR_REQ = 0x020C
    CHANGE_AVATAR_RES = 0x020D
    PC_LOGIN_STATUS_NOTIFY = 0x020E
    REMOVE_SESSION_NOTIFY = 0x020F
    DEPARTMENT_REQ = 0x0210
    DEPARTMENT_RES = 0x0211
    AVATAR_CHANGED_NOTIFY = 0x0212
    CHANGE_SIGN_INFO_REQ = 0x0213
    CHANGE_SIGN_INFO_RES = 0x0214
    SIGN_INFO_CHANGED_NOTIFY = 0x0215
    # 0x03 message
    MSG_DATA = 0x0301
    MSG_DATA_ACK = 0x0302
    MSG_READ_ACK = 0x0303
    MSG_READ_NOTIFY = 0x0304
    CLIENT_TIME_REQ = 0x0305
    CLIENT_TIME_RES = 0x0306
    UNREAD_CNT_REQ = 0x0307
    UNREAD_CNT_RES = 0x0308
    MSG_LIST_REQ = 0x0309
    MSG_LIST_RES = 0x030A
    LATEST_MSG_ID_REQ = 0x030B
    LATEST_MSG_ID_RES = 0x030C
    MSG_BY_ID_REQ = 0x030D
    MSG_BY_ID_RES = 0x030E
    # 0x04 group
    NORMAL_GROUP_LIST_REQ = 0x0401
    NORMAL_GROUP_LIST_RES = 0x0402
    GROUP_INFO_REQ = 0x0403
    GROUP_INFO_RES = 0x0404
    GROUP_CREATE_REQ = 0x0405
    GROUP_CREATE_RES = 0x0406
    GROUP_CHANGE_MEMBER_REQ = 0x0407
    GROUP_CHANGE_MEMBER_RES = 0x0408
    GROUP_SHIELD_REQ = 0x0409
    GROUP_SHIELD_RES = 0x040A
    GROUP_CHANGE_MEMBER_NOTIFY = 0x040B
    # 0x05 file (0x0501-0x0505 go to the file server, the rest to the gateway)
    FILE_LOGIN_REQ = 0x0501
    FILE_LOGIN_RES = 0x0502
    FILE_STATE = 0x0503
    FILE_PULL_DATA_REQ = 0x0504
    FILE_PULL_DATA_RES = 0x0505
    FILE_REQ = 0x0506
    FILE_RES = 0x0507
    FILE_NOTIFY = 0x0508
    FILE_HAS_OFFLINE_REQ = 0x0509
    FILE_HAS_OFFLINE_RES = 0x050A
    FILE_ADD_OFFLINE_REQ = 0x050B
    FILE_DEL_OFFLINE_REQ = 0x050C
    # 0x06 switch, 0x07 other
    P2P_CMD = 0x0601
    HEARTBEAT = 0x0701
    # 0x08 internal
    LINK_HELLO = 0x0801
    LINK_ERROR = 0x0802
    LINK_OK = 0x0803
    LINK_CHALLENGE = 0x0804
    LINK_WELCOME = 0x0805
    GATEWAY_INFO = 0x0810
    GATEWAY_LOAD = 0x0811
    DB_LOGIN_REQ = 0x0820
    DB_LOGIN_RES = 0x0821
    DB_SAVE_MSG_REQ = 0x0822
    DB_SAVE_MSG_RES = 0x0823
    DB_SAVE_MSGS_REQ = 0x0824
    DB_SAVE_MSGS_RES = 0x0825
    ROUTE_SNAPSHOT = 0x0830
    ROUTE_SESSION_UP = 0x0831
    ROUTE_SESSION_DOWN = 0x0832
    ROUTE_DELIVER = 0x0833
    ROUTE_KICK = 0x0834
    ROUTE_KICK_DESKTOP = 0x0835
    ROUTE_STATUS_BATCH = 0x0836
    ROUTE_USERS_STAT_REQ = 0x0837
    ROUTE_USERS_STAT_RES = 0x0838
    ROUTE_PROFILE_CHANGE = 0x0839
    ROUTE_PROFILE_BATCH = 0x083A
    ADMIN_CALL = 0x0840
    ADMIN_RESULT = 0x0841
    PUSH_MSG_REQ = 0x0850
    PUSH_MSG_RES = 0x0851
    PUSH_MSGS_REQ = 0x0852
    PUSH_MSGS_RES = 0x0853
    FILE_TASK_REQ = 0x0860
    FILE_TASK_RES = 0x0861
    FILE_OFFLINE_READY_REQ = 0x0862
    FILE_OFFLINE_READY_RES = 0x0863
    FILE_OFFLINE_DELETE = 0x0864
    FILE_SERVER_INFO_REQ = 0x0865
    FILE_SERVER_INFO_RES = 0x0866
    DB_OFFLINE_FILE_ADD = 0x0867
    DB_OFFLINE_FILE_DEL_REQ = 0x0868
    DB_OFFLINE_FILE_DEL_RES = 0x0869
    DB_PROXY_INFO_REQ = 0x0870
    DB_PROXY_INFO_RES = 0x0871
    DB_INVALIDATE = 0x0872
    DB_GROUP_CREATE_REQ = 0x0873
    DB_GROUP_CHANGE_MEMBER_REQ = 0x0874
    DB_CHANGE_AVATAR_REQ = 0x0875
    DB_CHANGE_SIGN_INFO_REQ = 0x0876


MESSAGE_OF: dict[int, type[Message]] = {
    Cmd.LOGIN_REQ: login_pb2.IMLoginReq,
    Cmd.LOGIN_RES: login_pb2.IMLoginRes,
    Cmd.LOGOUT_REQ: login_pb2.IMLogoutReq,
    Cmd.LOGOUT_RES: login_pb2.IMLogoutRsp,
    Cmd.KICK_USER: login_pb2.IMKickUser,
    Cmd.DEVICE_TOKEN_REQ: login_pb2.IMDeviceTokenReq,
    Cmd.DEVICE_TOKEN_RES: login_pb2.IMDeviceTokenRsp,
    Cmd.KICK_PC_CLIENT_REQ: login_pb2.IMKickPCClientReq,
    Cmd.KICK_PC_CLIENT_RES: login_pb2.IMKickPCClientRsp,
    Cmd.PUSH_SHIELD_REQ: login_pb2.IMPushShieldReq,
    Cmd.PUSH_SHIELD_RES: login_pb2.IMPushShieldRsp,
    Cmd.QUERY_PUSH_SHIELD_REQ: login_pb2.IMQueryPushShieldReq,
    Cmd.QUERY_PUSH_SHIELD_RES: login_pb2.IMQueryPushShieldRsp,
    Cmd.RECENT_SESSION_REQ: buddy_pb2.IMRecentContactSessionReq,
    Cmd.RECENT_SESSION_RES: buddy_pb2.IMRecentContactSessionRsp,
    Cmd.USER_STAT_NOTIFY: buddy_pb2.IMUserStatNotify,
    Cmd.USERS_INFO_REQ: buddy_pb2.IMUsersInfoReq,
    Cmd.USERS_INFO_RES: buddy_pb2.IMUsersInfoRsp,
    Cmd.REMOVE_SESSION_REQ: buddy_pb2.IMRemoveSessionReq,
    Cmd.REMOVE_SESSION_RES: buddy_pb2.IMRemoveSessionRsp,
    Cmd.ALL_USER_REQ: buddy_pb2.IMAllUserReq,
    Cmd.ALL_USER_RES: buddy_pb2.IMAllUserRsp,
    Cmd.USERS_STAT_REQ: buddy_pb2.IMUsersStatReq,
    Cmd.USERS_STAT_RES: buddy_pb2.IMUsersStatRsp,
    Cmd.CHANGE_AVATAR_REQ: buddy_pb2.IMChangeAvatarReq,
    Cmd.CHANGE_AVATAR_RES: buddy_pb2.IMChangeAvatarRsp,
    Cmd.PC_LOGIN_STATUS_NOTIFY: buddy_pb2.IMPCLoginStatusNotify,
    Cmd.REMOVE_SESSION_NOTIFY: buddy_pb2.IMRemoveSessionNotify,
    Cmd.DEPARTMENT_REQ: buddy_pb2.IMDepartmentReq,
    Cmd.DEPARTMENT_RES: buddy_pb2.IMDepartmentRsp,
    Cmd.AVATAR_CHANGED_NOTIFY: buddy_pb2.IMAvatarChangedNotify,
    Cmd.CHANGE_SIGN_INFO_REQ: buddy_pb2.IMChangeSignInfoReq,
    Cmd.CHANGE_SIGN_INFO_RES: buddy_pb2.IMChangeSignInfoRsp,
    Cmd.SIGN_INFO_CHANGED_NOTIFY: buddy_pb2.IMSignInfoChangedNotify,
    Cmd.MSG_DATA: message_pb2.IMMsgData,
    Cmd.MSG_DATA_ACK: message_pb2.IMMsgDataAck,
    Cmd.MSG_READ_ACK: message_pb2.IMMsgDataReadAck,
    Cmd.MSG_READ_NOTIFY: message_pb2.IMMsgDataReadNotify,
    Cmd.CLIENT_TIME_REQ: message_pb2.IMClientTimeReq,
    Cmd.CLIENT_TIME_RES: message_pb2.IMClientTimeRsp,
    Cmd.UNREAD_CNT_REQ: message_pb2.IMUnreadMsgCntReq,
    Cmd.UNREAD_CNT_RES: message_pb2.IMUnreadMsgCntRsp,
    Cmd.MSG_LIST_REQ: message_pb2.IMGetMsgListReq,
    Cmd.MSG_LIST_RES: message_pb2.IMGetMsgListRsp,
    Cmd.LATEST_MSG_ID_REQ: message_pb2.IMGetLatestMsgIdReq,
    Cmd.LATEST_MSG_ID_RES: message_pb2.IMGetLatestMsgIdRsp,
    Cmd.MSG_BY_ID_REQ: message_pb2.IMGetMsgByIdReq,
    Cmd.MSG_BY_ID_RES: message_pb2.IMGetMsgByIdRsp,
    Cmd.NORMAL_GROUP_LIST_REQ: group_pb2.IMNormalGroupListReq,
    Cmd.NORMAL_GROUP_LIST_RES: group_pb2.IMNormalGroupListRsp,
    Cmd.GROUP_INFO_REQ: group_pb2.IMGroupInfoListReq,
    Cmd.GROUP_INFO_RES: group_pb2.IMGroupInfoListRsp,
    Cmd.GROUP_CREATE_REQ: group_pb2.IMGroupCreateReq,
    Cmd.GROUP_CREATE_RES: group_pb2.IMGroupCreateRsp,
    Cmd.GROUP_CHANGE_MEMBER_REQ: group_pb2.IMGroupChangeMemberReq,
    Cmd.GROUP_CHANGE_MEMBER_RES: group_pb2.IMGroupChangeMemberRsp,
    Cmd.GROUP_SHIELD_REQ: group_pb2.IMGroupShieldReq,
    Cmd.GROUP_SHIELD_RES: group_pb2.IMGroupShieldRsp,
    Cmd.GROUP_CHANGE_MEMBER_NOTIFY: group_pb2.IMGroupChangeMemberNotify,
    Cmd.FILE_LOGIN_REQ: file_pb2.IMFileLoginReq,
    Cmd.FILE_LOGIN_RES: file_pb2.IMFileLoginRsp,
    Cmd.FILE_STATE: file_pb2.IMFileState,
    Cmd.FILE_PULL_DATA_REQ: file_pb2.IMFilePullDataReq,
    Cmd.FILE_PULL_DATA_RES: file_pb2.IMFilePullDataRsp,
    Cmd.FILE_REQ: file_pb2.IMFileReq,
    Cmd.FILE_RES: file_pb2.IMFileRsp,
    Cmd.FILE_NOTIFY: file_pb2.IMFileNotify,
    Cmd.FILE_HAS_OFFLINE_REQ: file_pb2.IMFileHasOfflineReq,
    Cmd.FILE_HAS_OFFLINE_RES: file_pb2.IMFileHasOfflineRsp,
    Cmd.FILE_ADD_OFFLINE_REQ: file_pb2.IMFileAddOfflineReq,
    Cmd.FILE_DEL_OFFLINE_REQ: file_pb2.IMFileDelOfflineReq,
    Cmd.P2P_CMD: other_pb2.IMP2PCmdMsg,
    Cmd.HEARTBEAT: other_pb2.IMHeartBeat,
    Cmd.LINK_HELLO: internal_pb2.LinkHello,
    Cmd.LINK_ERROR: internal_pb2.LinkError,
    Cmd.LINK_OK: internal_pb2.LinkOk,
    Cmd.LINK_CHALLENGE: internal_pb2.LinkChallenge,
    Cmd.LINK_WELCOME: internal_pb2.LinkWelcome,
    Cmd.GATEWAY_INFO: internal_pb2.GatewayInfo,
    Cmd.GATEWAY_LOAD: internal_pb2.GatewayLoad,
    Cmd.DB_LOGIN_REQ: internal_pb2.DbLoginReq,
    Cmd.DB_LOGIN_RES: internal_pb2.DbLoginRes,
    Cmd.DB_SAVE_MSG_REQ: internal_pb2.DbSaveMsgReq,
    Cmd.DB_SAVE_MSG_RES: internal_pb2.DbSaveMsgRes,
    Cmd.DB_SAVE_MSGS_REQ: internal_pb2.DbSaveMsgBatch,
    Cmd.DB_SAVE_MSGS_RES: internal_pb2.DbSaveMsgBatchRes,
    Cmd.ROUTE_SNAPSHOT: internal_pb2.RouteSnapshot,
    Cmd.ROUTE_SESSION_UP: internal_pb2.RouteSessionUp,
    Cmd.ROUTE_SESSION_DOWN: internal_pb2.RouteSessionDown,
    Cmd.ROUTE_DELIVER: internal_pb2.RouteDeliver,
    Cmd.ROUTE_KICK: internal_pb2.RouteKick,
    Cmd.ROUTE_KICK_DESKTOP: internal_pb2.RouteKickDesktop,
    Cmd.ROUTE_STATUS_BATCH: internal_pb2.RouteStatusBatch,
    Cmd.ROUTE_USERS_STAT_REQ: internal_pb2.RouteUsersStatReq,
    Cmd.ROUTE_USERS_STAT_RES: internal_pb2.RouteUsersStatRes,
    Cmd.ROUTE_PROFILE_CHANGE: internal_pb2.RouteProfileChange,
    Cmd.ROUTE_PROFILE_BATCH: internal_pb2.RouteProfileBatch,
    Cmd.ADMIN_CALL: internal_pb2.AdminCall,
    Cmd.ADMIN_RESULT: internal_pb2.AdminResult,
    Cmd.PUSH_MSG_REQ: internal_pb2.PushMsg,
    Cmd.PUSH_MSG_RES: internal_pb2.PushMsgResult,
    Cmd.PUSH_MSGS_REQ: internal_pb2.PushMsgBatch,
    Cmd.PUSH_MSGS_RES: internal_pb2.PushMsgBatchResult,
    Cmd.FILE_TASK_REQ: internal_pb2.FileTaskReq,
    Cmd.FILE_TASK_RES: internal_pb2.FileTaskRes,
    Cmd.FILE_OFFLINE_READY_REQ: internal_pb2.FileOfflineReadyReq,
    Cmd.FILE_OFFLINE_READY_RES: internal_pb2.FileOfflineReadyRes,
    Cmd.FILE_OFFLINE_DELETE: internal_pb2.FileOfflineDeleteReq,
    Cmd.FILE_SERVER_INFO_REQ: internal_pb2.FileServerInfoReq,
    Cmd.FILE_SERVER_INFO_RES: internal_pb2.FileServerInfo,
    Cmd.DB_OFFLINE_FILE_ADD: internal_pb2.DbOfflineFileAdd,
    Cmd.DB_OFFLINE_FILE_DEL_REQ: internal_pb2.DbOfflineFileDel,
    Cmd.DB_OFFLINE_FILE_DEL_RES: internal_pb2.DbOfflineFileDelRes,
    Cmd.DB_PROXY_INFO_REQ: internal_pb2.DbProxyInfoReq,
    Cmd.DB_PROXY_INFO_RES: internal_pb2.DbProxyInfo,
    Cmd.DB_INVALIDATE: internal_pb2.DbInvalidate,
    Cmd.DB_GROUP_CREATE_REQ: internal_pb2.DbGroupCreateReq,
    Cmd.DB_GROUP_CHANGE_MEMBER_REQ: internal_pb2.DbGroupChangeMemberReq,
    Cmd.DB_CHANGE_AVATAR_REQ: internal_pb2.DbChangeAvatarReq,
    Cmd.DB_CHANGE_SIGN_INFO_REQ: internal_pb2.DbChangeSignInfoReq,
}


class BadBody(Exception):
    """A frame's body is not a valid message for its command."""


def decode_body(command_id: int, body: bytes) -> Message:
    """Parse a frame body as the message its command carries.

    Raises BadBody for an unknown command, a malformed body or a body that
    lacks a required field (proto2 checks that on parse).
    """
    cls = MESSAGE_OF.get(command_id)
    if cls is None:
        raise BadBody(f"unknown command 0x{command_id:04x}")
    msg = cls()
    try:
        msg.ParseFromString(body)
    except Exception as exc:  # DecodeError, or anything the parser raises on garbage
        raise BadBody(f"malformed body for command 0x{command_id:04x}: {exc}") from exc
    # The parser accepts a body that lacks required fields; TeamTalk's peers
    # would not, and neither do we.
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors())  # type: ignore[attr-defined]
        raise BadBody(f"command 0x{command_id:04x} lacks required fields: {missing}")
    return msg


# -- the internal links' typed commands (common.rpc) ---------------------------
# Reads that answer a client command carry the client's own request and
# response messages (see internal.proto).


def _rpc(command: Cmd, reply: Cmd) -> Rpc[Any, Any]:
    return Rpc(command, MESSAGE_OF[command], reply, MESSAGE_OF[reply])


class Rpcs:
    """Every request of the internal links, with the one reply it may get."""

    # gateway -> db_proxy
    DB_LOGIN: Rpc[internal_pb2.DbLoginReq, internal_pb2.DbLoginRes] = _rpc(Cmd.DB_LOGIN_REQ, Cmd.DB_LOGIN_RES)
    DB_SAVE_MSG: Rpc[internal_pb2.DbSaveMsgReq, internal_pb2.DbSaveMsgRes] = _rpc(
        Cmd.DB_SAVE_MSG_REQ, Cmd.DB_SAVE_MSG_RES
    )
    # many DB_SAVE_MSG in one frame, answered item by item
    DB_SAVE_MSGS: Rpc[internal_pb2.DbSaveMsgBatch, internal_pb2.DbSaveMsgBatchRes] = _rpc(
        Cmd.DB_SAVE_MSGS_REQ, Cmd.DB_SAVE_MSGS_RES
    )
    UNREAD_CNT: Rpc[message_pb2.IMUnreadMsgCntReq, message_pb2.IMUnreadMsgCntRsp] = _rpc(
        Cmd.UNREAD_CNT_REQ, Cmd.UNREAD_CNT_RES
    )
    MSG_LIST: Rpc[message_pb2.IMGetMsgListReq, message_pb2.IMGetMsgListRsp] = _rpc(
        Cmd.MSG_LIST_REQ, Cmd.MSG_LIST_RES
    )
    MSG_READ_ACK: Rpc[message_pb2.IMMsgDataReadAck, internal_pb2.LinkOk] = _rpc(Cmd.MSG_READ_ACK, Cmd.LINK_OK)
    LATEST_MSG_ID: Rpc[message_pb2.IMGetLatestMsgIdReq, message_pb2.IMGetLatestMsgIdRsp] = _rpc(
        Cmd.LATEST_MSG_ID_REQ, Cmd.LATEST_MSG_ID_RES
    )
    MSG_BY_ID: Rpc[message_pb2.IMGetMsgByIdReq, message_pb2.IMGetMsgByIdRsp] = _rpc(
        Cmd.MSG_BY_ID_REQ, Cmd.MSG_BY_ID_RES
    )
    RECENT_SESSION: Rpc[buddy_pb2.IMRecentContactSessionReq, buddy_pb2.IMRecentContactSessionRsp] = _rpc(
        Cmd.RECENT_SESSION_REQ, Cmd.RECENT_SESSION_RES
    )
    USERS_INFO: Rpc[buddy_pb2.IMUsersInfoReq, buddy_pb2.IMUsersInfoRsp] = _rpc(
        Cmd.USERS_INFO_REQ, Cmd.USERS_INFO_RES
    )
    REMOVE_SESSION: Rpc[buddy_pb2.IMRemoveSessionReq, buddy_pb2.IMRemoveSessionRsp] = _rpc(
        Cmd.REMOVE_SESSION_REQ, Cmd.REMOVE_SESSION_RES
    )
    ALL_USER: Rpc[buddy_pb2.IMAllUserReq, buddy_pb2.IMAllUserRsp] = _rpc(Cmd.ALL_USER_REQ, Cmd.ALL_USER_RES)
    CHANGE_AVATAR: Rpc[buddy_pb2.IMChangeAvatarReq, buddy_pb2.IMChangeAvatarRsp] = _rpc(
        Cmd.CHANGE_AVATAR_REQ, Cmd.CHANGE_AVATAR_RES
    )
    DEPARTMENT: Rpc[buddy_pb2.IMDepartmentReq, buddy_pb2.IMDepartmentRsp] = _rpc(
        Cmd.DEPARTMENT_REQ, Cmd.DEPARTMENT_RES
    )
    CHANGE_SIGN_INFO: Rpc[buddy_pb2.IMChangeSignInfoReq, buddy_pb2.IMChangeSignInfoRsp] = _rpc(
        Cmd.CHANGE_SIGN_INFO_REQ, Cmd.CHANGE_SIGN_INFO_RES
    )
    DEVICE_TOKEN: Rpc[login_pb2.IMDeviceTokenReq, login_pb2.IMDeviceTokenRsp] = _rpc(
        Cmd.DEVICE_TOKEN_REQ, Cmd.DEVICE_TOKEN_RES
    )
    PUSH_SHIELD: Rpc[login_pb2.IMPushShieldReq, login_pb2.IMPushShieldRsp] = _rpc(
        Cmd.PUSH_SHIELD_REQ, Cmd.PUSH_SHIELD_RES
    )
    QUERY_PUSH_SHIELD: Rpc[login_pb2.IMQueryPushShieldReq, login_pb2.IMQueryPushShieldRsp] = _rpc(
        Cmd.QUERY_PUSH_SHIELD_REQ, Cmd.QUERY_PUSH_SHIELD_RES
    )
    NORMAL_GROUP_LIST: Rpc[group_pb2.IMNormalGroupListReq, group_pb2.IMNormalGroupListRsp] = _rpc(
        Cmd.NORMAL_GROUP_LIST_REQ, Cmd.NORMAL_GROUP_LIST_RES
    )
    GROUP_INFO: Rpc[group_pb2.IMGroupInfoListReq, group_pb2.IMGroupInfoListRsp] = _rpc(
        Cmd.GROUP_INFO_REQ, Cmd.GROUP_INFO_RES
    )
    GROUP_CREATE: Rpc[group_pb2.IMGroupCreateReq, group_pb2.IMGroupCreateRsp] = _rpc(
        Cmd.GROUP_CREATE_REQ, Cmd.GROUP_CREATE_RES
    )
    GROUP_CHANGE_MEMBER: Rpc[group_pb2.IMGroupChangeMemberReq, group_pb2.IMGroupChangeMemberRsp] = _rpc(
        Cmd.GROUP_CHANGE_MEMBER_REQ, Cmd.GROUP_CHANGE_MEMBER_RES
    )
    GROUP_SHIELD: Rpc[group_pb2.IMGroupShieldReq, group_pb2.IMGroupShieldRsp] = _rpc(
        Cmd.GROUP_SHIELD_REQ, Cmd.GROUP_SHIELD_RES
    )
    FILE_HAS_OFFLINE: Rpc[file_pb2.IMFileHasOfflineReq, file_pb2.IMFileHasOfflineRsp] = _rpc(
        Cmd.FILE_HAS_OFFLINE_REQ, Cmd.FILE_HAS_OFFLINE_RES
    )
    DB_OFFLINE_FILE_ADD: Rpc[internal_pb2.DbOfflineFileAdd, internal_pb2.LinkOk] = _rpc(
        Cmd.DB_OFFLINE_FILE_ADD, Cmd.LINK_OK
    )
    DB_OFFLINE_FILE_DEL: Rpc[internal_pb2.DbOfflineFileDel, internal_pb2.DbOfflineFileDelRes] = _rpc(
        Cmd.DB_OFFLINE_FILE_DEL_REQ, Cmd.DB_OFFLINE_FILE_DEL_RES
    )
    # gateway, login_server or admin -> db_proxy: its roles (common/db_roles.py)
    DB_PROXY_INFO: Rpc[internal_pb2.DbProxyInfoReq, internal_pb2.DbProxyInfo] = _rpc(
        Cmd.DB_PROXY_INFO_REQ, Cmd.DB_PROXY_INFO_RES
    )
    # gateway -> db_proxy: client changes db_proxy announces (with the connection they came from)
    DB_GROUP_CREATE: Rpc[internal_pb2.DbGroupCreateReq, group_pb2.IMGroupCreateRsp] = _rpc(
        Cmd.DB_GROUP_CREATE_REQ, Cmd.GROUP_CREATE_RES
    )
    DB_GROUP_CHANGE_MEMBER: Rpc[internal_pb2.DbGroupChangeMemberReq, group_pb2.IMGroupChangeMemberRsp] = _rpc(
        Cmd.DB_GROUP_CHANGE_MEMBER_REQ, Cmd.GROUP_CHANGE_MEMBER_RES
    )
    DB_CHANGE_AVATAR: Rpc[internal_pb2.DbChangeAvatarReq, buddy_pb2.IMChangeAvatarRsp] = _rpc(
        Cmd.DB_CHANGE_AVATAR_REQ, Cmd.CHANGE_AVATAR_RES
    )
    DB_CHANGE_SIGN_INFO: Rpc[internal_pb2.DbChangeSignInfoReq, buddy_pb2.IMChangeSignInfoRsp] = _rpc(
        Cmd.DB_CHANGE_SIGN_INFO_REQ, Cmd.CHANGE_SIGN_INFO_RES
    )
    # gateway -> file_server
    FILE_TASK: Rpc[internal_pb2.FileTaskReq, internal_pb2.FileTaskRes] = _rpc(
        Cmd.FILE_TASK_REQ, Cmd.FILE_TASK_RES
    )
    FILE_OFFLINE_READY: Rpc[internal_pb2.FileOfflineReadyReq, internal_pb2.FileOfflineReadyRes] = _rpc(
        Cmd.FILE_OFFLINE_READY_REQ, Cmd.FILE_OFFLINE_READY_RES
    )
    FILE_OFFLINE_DELETE: Rpc[internal_pb2.FileOfflineDeleteReq, internal_pb2.LinkOk] = _rpc(
        Cmd.FILE_OFFLINE_DELETE, Cmd.LINK_OK
    )
    FILE_SERVER_INFO: Rpc[internal_pb2.FileServerInfoReq, internal_pb2.FileServerInfo] = _rpc(
        Cmd.FILE_SERVER_INFO_REQ, Cmd.FILE_SERVER_INFO_RES
    )
    # gateway or admin -> route_server
    ROUTE_USERS_STAT: Rpc[internal_pb2.RouteUsersStatReq, internal_pb2.RouteUsersStatRes] = _rpc(
        Cmd.ROUTE_USERS_STAT_REQ, Cmd.ROUTE_USERS_STAT_RES
    )
    # admin -> db_proxy or route_server
    ADMIN_CALL: Rpc[internal_pb2.AdminCall, internal_pb2.AdminResult] = _rpc(Cmd.ADMIN_CALL, Cmd.ADMIN_RESULT)
    # db_proxy's push dispatcher -> route_server -> gateway: a stored message, acknowledged
    PUSH_MSG: Rpc[internal_pb2.PushMsg, internal_pb2.PushMsgResult] = _rpc(Cmd.PUSH_MSG_REQ, Cmd.PUSH_MSG_RES)
    # many PUSH_MSG in one frame, answered push by push
    PUSH_MSGS: Rpc[internal_pb2.PushMsgBatch, internal_pb2.PushMsgBatchResult] = _rpc(
        Cmd.PUSH_MSGS_REQ, Cmd.PUSH_MSGS_RES
    )


class OneWays:
    """Every frame of the internal links that nobody answers."""

    GATEWAY_INFO = OneWay(Cmd.GATEWAY_INFO, internal_pb2.GatewayInfo)
    GATEWAY_LOAD = OneWay(Cmd.GATEWAY_LOAD, internal_pb2.GatewayLoad)
    ROUTE_SNAPSHOT = OneWay(Cmd.ROUTE_SNAPSHOT, internal_pb2.RouteSnapshot)
    ROUTE_SESSION_UP = OneWay(Cmd.ROUTE_SESSION_UP, internal_pb2.RouteSessionUp)
    ROUTE_SESSION_DOWN = OneWay(Cmd.ROUTE_SESSION_DOWN, internal_pb2.RouteSessionDown)
    ROUTE_DELIVER = OneWay(Cmd.ROUTE_DELIVER, internal_pb2.RouteDeliver)
    ROUTE_KICK = OneWay(Cmd.ROUTE_KICK, internal_pb2.RouteKick)
    ROUTE_KICK_DESKTOP = OneWay(Cmd.ROUTE_KICK_DESKTOP, internal_pb2.RouteKickDesktop)
    ROUTE_STATUS_BATCH = OneWay(Cmd.ROUTE_STATUS_BATCH, internal_pb2.RouteStatusBatch)
    ROUTE_PROFILE_CHANGE = OneWay(Cmd.ROUTE_PROFILE_CHANGE, internal_pb2.RouteProfileChange)
    ROUTE_PROFILE_BATCH = OneWay(Cmd.ROUTE_PROFILE_BATCH, internal_pb2.RouteProfileBatch)
    DB_INVALIDATE = OneWay(Cmd.DB_INVALIDATE, internal_pb2.DbInvalidate)
