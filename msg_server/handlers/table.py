"""The client commands a gateway serves, typed.

A :class:`ClientCommand` names a TeamTalk request, its message type, and the
reply command (and type) that answers it; a :class:`ClientNotice` is a frame
TeamTalk's protocol never answers. :class:`ClientCommands` maps each to a
handler, so mypy checks that a handler takes the request type and returns
the reply type, and to the reply a refused request gets (see
``msg_server.handlers.base.client_error``). Anything not in the table is not
served.

The connection only parses a frame into a :class:`Job` (synchronously: a
bad body closes the connection before any work starts) and runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from google.protobuf.message import Message

from common.commands import MESSAGE_OF, BadBody, Cmd
from common.pb import buddy_pb2, file_pb2, group_pb2, login_pb2, message_pb2, other_pb2

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway
    from msg_server.handlers.base import ClientError

ReqT = TypeVar("ReqT", bound=Message)
ResT = TypeVar("ResT", bound=Message)

#: Answers a request: the reply to send (with the request's seq_num), or None
#: to send nothing. Raises an ImError to have the request refused.
Handler = Callable[["Gateway", "ClientConnection", ReqT], Awaitable[ResT | None]]
#: The reply a refused request gets, None where TeamTalk's protocol has none
#: (IMMsgDataAck cannot say "refused").
Refusal = Callable[["ClientConnection", ReqT, "ClientError"], ResT | None]
NoticeHandler = Callable[["Gateway", "ClientConnection", ReqT], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ClientCommand(Generic[ReqT, ResT]):
    """A client request and the one reply command that answers it."""

    command: int
    request: type[ReqT]
    reply_command: int
    reply: type[ResT]


@dataclass(frozen=True, slots=True)
class ClientNotice(Generic[ReqT]):
    """A client frame nobody answers (a read receipt, a P2P notice)."""

    command: int
    message: type[ReqT]


@dataclass(frozen=True, slots=True)
class Job:
    """One parsed client frame, ready to run; types are bound in it."""

    command: int
    reply_command: int  # 0: the command has no reply
    run: Callable[[Gateway, ClientConnection], Awaitable[Message | None]]
    refused: Callable[[ClientConnection, ClientError], Message | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """One command of the table: how its frames become jobs."""

    command: int
    reply_command: int
    parse: Callable[[bytes], Job]


def parse(command: int, cls: type[ReqT], body: bytes) -> ReqT:
    """A frame body as its request message; BadBody if it is not one.

    The parser accepts a body that lacks required fields; TeamTalk's servers
    do not, and neither do we (that also refuses unknown values of required
    enum fields, which the parser treats as absent).
    """
    msg = cls()
    try:
        msg.ParseFromString(body)
    except Exception as exc:  # DecodeError, or anything the parser raises on garbage
        raise BadBody(f"malformed body for command 0x{command:04x}: {exc}") from exc
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors())  # type: ignore[attr-defined]
        raise BadBody(f"command 0x{command:04x} lacks required fields: {missing}")
    return msg


def no_reply(conn: ClientConnection, req: Message, err: ClientError) -> None:
    return None


class ClientCommands:
    """The commands a logged-in client may send, each with its handler."""

    def __init__(self) -> None:
        self._entries: dict[int, Entry] = {}

    def request(
        self,
        command: ClientCommand[ReqT, ResT],
        handler: Handler[ReqT, ResT],
        refused: Refusal[ReqT, ResT],
    ) -> ClientCommands:
        def parse_job(body: bytes) -> Job:
            req = parse(command.command, command.request, body)
            return Job(
                command.command,
                command.reply_command,
                lambda gw, conn: handler(gw, conn, req),
                lambda conn, err: refused(conn, req, err),
            )

        self._add(Entry(command.command, command.reply_command, parse_job))
        return self

    def notice(self, notice: ClientNotice[ReqT], handler: NoticeHandler[ReqT]) -> ClientCommands:
        def parse_job(body: bytes) -> Job:
            msg = parse(notice.command, notice.message, body)
            return Job(notice.command, 0, lambda gw, conn: handler(gw, conn, msg), lambda conn, err: None)

        self._add(Entry(notice.command, 0, parse_job))
        return self

    def include(self, other: ClientCommands) -> ClientCommands:
        for entry in other:
            self._add(entry)
        return self

    def _add(self, entry: Entry) -> None:
        if entry.command in self._entries:
            raise ValueError(f"command 0x{entry.command:04x} registered twice")
        self._entries[entry.command] = entry

    def get(self, command: int) -> Entry | None:
        return self._entries.get(command)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, command: object) -> bool:
        return command in self._entries


def _command(
    command: Cmd, reply: Cmd, request: type[ReqT], reply_type: type[ResT]
) -> ClientCommand[ReqT, ResT]:
    if MESSAGE_OF[command] is not request or MESSAGE_OF[reply] is not reply_type:
        raise ValueError(f"0x{command:04x}: its messages are not those of common.commands")
    return ClientCommand(command, request, reply, reply_type)


class Client:
    """Every client command (TeamTalk's request -> reply pairs)."""

    # 0x01 login
    LOGIN = _command(Cmd.LOGIN_REQ, Cmd.LOGIN_RES, login_pb2.IMLoginReq, login_pb2.IMLoginRes)
    LOGOUT = _command(Cmd.LOGOUT_REQ, Cmd.LOGOUT_RES, login_pb2.IMLogoutReq, login_pb2.IMLogoutRsp)
    DEVICE_TOKEN = _command(
        Cmd.DEVICE_TOKEN_REQ, Cmd.DEVICE_TOKEN_RES, login_pb2.IMDeviceTokenReq, login_pb2.IMDeviceTokenRsp
    )
    KICK_PC_CLIENT = _command(
        Cmd.KICK_PC_CLIENT_REQ,
        Cmd.KICK_PC_CLIENT_RES,
        login_pb2.IMKickPCClientReq,
        login_pb2.IMKickPCClientRsp,
    )
    PUSH_SHIELD = _command(
        Cmd.PUSH_SHIELD_REQ, Cmd.PUSH_SHIELD_RES, login_pb2.IMPushShieldReq, login_pb2.IMPushShieldRsp
    )
    QUERY_PUSH_SHIELD = _command(
        Cmd.QUERY_PUSH_SHIELD_REQ,
        Cmd.QUERY_PUSH_SHIELD_RES,
        login_pb2.IMQueryPushShieldReq,
        login_pb2.IMQueryPushShieldRsp,
    )
    # 0x02 buddy list
    RECENT_SESSION = _command(
        Cmd.RECENT_SESSION_REQ,
        Cmd.RECENT_SESSION_RES,
        buddy_pb2.IMRecentContactSessionReq,
        buddy_pb2.IMRecentContactSessionRsp,
    )
    USERS_INFO = _command(
        Cmd.USERS_INFO_REQ, Cmd.USERS_INFO_RES, buddy_pb2.IMUsersInfoReq, buddy_pb2.IMUsersInfoRsp
    )
    REMOVE_SESSION = _command(
        Cmd.REMOVE_SESSION_REQ,
        Cmd.REMOVE_SESSION_RES,
        buddy_pb2.IMRemoveSessionReq,
        buddy_pb2.IMRemoveSessionRsp,
    )
    ALL_USER = _command(Cmd.ALL_USER_REQ, Cmd.ALL_USER_RES, buddy_pb2.IMAllUserReq, buddy_pb2.IMAllUserRsp)
    USERS_STAT = _command(
        Cmd.USERS_STAT_REQ, Cmd.USERS_STAT_RES, buddy_pb2.IMUsersStatReq, buddy_pb2.IMUsersStatRsp
    )
    CHANGE_AVATAR = _command(
        Cmd.CHANGE_AVATAR_REQ,
        Cmd.CHANGE_AVATAR_RES,
        buddy_pb2.IMChangeAvatarReq,
        buddy_pb2.IMChangeAvatarRsp,
    )
    DEPARTMENT = _command(
        Cmd.DEPARTMENT_REQ, Cmd.DEPARTMENT_RES, buddy_pb2.IMDepartmentReq, buddy_pb2.IMDepartmentRsp
    )
    CHANGE_SIGN_INFO = _command(
        Cmd.CHANGE_SIGN_INFO_REQ,
        Cmd.CHANGE_SIGN_INFO_RES,
        buddy_pb2.IMChangeSignInfoReq,
        buddy_pb2.IMChangeSignInfoRsp,
    )
    # 0x03 message
    MSG_DATA = _command(Cmd.MSG_DATA, Cmd.MSG_DATA_ACK, message_pb2.IMMsgData, message_pb2.IMMsgDataAck)
    MSG_READ_ACK = ClientNotice(Cmd.MSG_READ_ACK, message_pb2.IMMsgDataReadAck)
    CLIENT_TIME = _command(
        Cmd.CLIENT_TIME_REQ, Cmd.CLIENT_TIME_RES, message_pb2.IMClientTimeReq, message_pb2.IMClientTimeRsp
    )
    UNREAD_CNT = _command(
        Cmd.UNREAD_CNT_REQ, Cmd.UNREAD_CNT_RES, message_pb2.IMUnreadMsgCntReq, message_pb2.IMUnreadMsgCntRsp
    )
    MSG_LIST = _command(
        Cmd.MSG_LIST_REQ, Cmd.MSG_LIST_RES, message_pb2.IMGetMsgListReq, message_pb2.IMGetMsgListRsp
    )
    LATEST_MSG_ID = _command(
        Cmd.LATEST_MSG_ID_REQ,
        Cmd.LATEST_MSG_ID_RES,
        message_pb2.IMGetLatestMsgIdReq,
        message_pb2.IMGetLatestMsgIdRsp,
    )
    MSG_BY_ID = _command(
        Cmd.MSG_BY_ID_REQ, Cmd.MSG_BY_ID_RES, message_pb2.IMGetMsgByIdReq, message_pb2.IMGetMsgByIdRsp
    )
    # 0x04 group
    NORMAL_GROUP_LIST = _command(
        Cmd.NORMAL_GROUP_LIST_REQ,
        Cmd.NORMAL_GROUP_LIST_RES,
        group_pb2.IMNormalGroupListReq,
        group_pb2.IMNormalGroupListRsp,
    )
    GROUP_INFO = _command(
        Cmd.GROUP_INFO_REQ, Cmd.GROUP_INFO_RES, group_pb2.IMGroupInfoListReq, group_pb2.IMGroupInfoListRsp
    )
    GROUP_CREATE = _command(
        Cmd.GROUP_CREATE_REQ, Cmd.GROUP_CREATE_RES, group_pb2.IMGroupCreateReq, group_pb2.IMGroupCreateRsp
    )
    GROUP_CHANGE_MEMBER = _command(
        Cmd.GROUP_CHANGE_MEMBER_REQ,
        Cmd.GROUP_CHANGE_MEMBER_RES,
        group_pb2.IMGroupChangeMemberReq,
        group_pb2.IMGroupChangeMemberRsp,
    )
    GROUP_SHIELD = _command(
        Cmd.GROUP_SHIELD_REQ, Cmd.GROUP_SHIELD_RES, group_pb2.IMGroupShieldReq, group_pb2.IMGroupShieldRsp
    )
    # 0x05 file (the gateway's part: 0x0501-0x0505 go to the file server)
    FILE = _command(Cmd.FILE_REQ, Cmd.FILE_RES, file_pb2.IMFileReq, file_pb2.IMFileRsp)
    FILE_HAS_OFFLINE = _command(
        Cmd.FILE_HAS_OFFLINE_REQ,
        Cmd.FILE_HAS_OFFLINE_RES,
        file_pb2.IMFileHasOfflineReq,
        file_pb2.IMFileHasOfflineRsp,
    )
    FILE_ADD_OFFLINE = ClientNotice(Cmd.FILE_ADD_OFFLINE_REQ, file_pb2.IMFileAddOfflineReq)
    FILE_DEL_OFFLINE = ClientNotice(Cmd.FILE_DEL_OFFLINE_REQ, file_pb2.IMFileDelOfflineReq)
    # 0x06 switch
    P2P_CMD = ClientNotice(Cmd.P2P_CMD, other_pb2.IMP2PCmdMsg)
