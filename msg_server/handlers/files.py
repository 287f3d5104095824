"""Service 0x05: file transfer, the gateway's part (docs/files.md).

The gateway never carries file data. It asks a file server for a task
(which mints one ticket per participant: a task id is useless to anyone
else), answers the sender and tells the receiver; for offline files it keeps
the list in db_proxy. ``user_id`` fields are the logged-in user's, whatever
the client wrote. Every refusal is counted by reason (FILE_REFUSALS) on top
of the gateway's refusal count and log line (``base.refuse``).

Offline files live on the first file server that is up, in config order, so
every later step of an offline file (ready, list, delete) asks that one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from common.commands import Cmd, Rpcs
from common.errors import ImError, InvalidArgument, NotFound, Unavailable
from common.file_ticket import task_key_of
from common.pb import base_pb2, file_pb2, internal_pb2
from common.throttle import Throttle
from msg_server.gateway import NoFileServer
from msg_server.handlers.base import LOG_INTERVAL, ClientError, deliver, echo, text
from msg_server.handlers.table import Client, ClientCommands
from msg_server.metrics import FILE_REFUSALS

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

log = logging.getLogger("client.files")

FILE_NAME_LIMIT = 255  # characters; db_proxy's offline_files.file_name column
TASK_ID_LIMIT = 128  # characters: a ticket is 57
ONLINE = base_pb2.FILE_TYPE_ONLINE
OFFLINE = base_pb2.FILE_TYPE_OFFLINE
TRANS_MODES = frozenset({ONLINE, OFFLINE})
_DELETE_LOG = Throttle(LOG_INTERVAL)


class ReceiverOffline(NotFound):
    """An online transfer to a user with no session anywhere."""


class FileServerRefused(InvalidArgument):
    """The file server would not make the task (too big, too many open, ...)."""


def refused(reason: str, exc: ImError) -> ImError:
    """``exc``, counted under ``reason``; raise it (base.refuse logs and answers it)."""
    FILE_REFUSALS.labels(reason).inc()
    return exc


def counted(exc: BaseException) -> BaseException:
    """A failure of a dependency, counted (an already counted refusal is left alone)."""
    if isinstance(exc, NoFileServer):
        FILE_REFUSALS.labels("no_file_server").inc()
    elif isinstance(exc, Unavailable):
        FILE_REFUSALS.labels("unavailable").inc()
    return exc


def _file_name(value: object) -> str:
    try:
        name = text(value, "file name", FILE_NAME_LIMIT)
    except InvalidArgument as exc:
        raise refused("invalid", exc) from None
    if not name:
        raise refused("invalid", InvalidArgument("empty file name"))
    return name


def _peer(conn: ClientConnection, to_user_id: int) -> None:
    if to_user_id == 0:
        raise refused("invalid", InvalidArgument("to user id is 0"))
    if to_user_id == conn.user_id:
        raise refused("invalid", InvalidArgument("a file to oneself"))


def _task_id(value: object) -> str:
    try:
        return text(value, "task id", TASK_ID_LIMIT)
    except InvalidArgument as exc:
        raise refused("invalid", exc) from None


async def _is_online(gw: Gateway, user_id: int) -> bool:
    if user_id in gw.sessions:
        return True
    try:
        res = await gw.route_call(Rpcs.ROUTE_USERS_STAT, internal_pb2.RouteUsersStatReq(user_ids=[user_id]))
    except Unavailable as exc:
        raise counted(exc) from None
    return any(s.user_id == user_id and s.status != base_pb2.USER_STATUS_OFFLINE for s in res.stats)


# -- 0x0506 -> 0x0507: a new transfer ----------------------------------------------------


async def file_request(gw: Gateway, conn: ClientConnection, req: file_pb2.IMFileReq) -> file_pb2.IMFileRsp:
    """A task from a file server; the receiver is told with its own ticket."""
    req.from_user_id = conn.user_id
    name = _file_name(req.file_name)
    _peer(conn, req.to_user_id)
    if req.file_size == 0:
        raise refused("invalid", InvalidArgument("file size 0"))
    if req.trans_mode not in TRANS_MODES:
        raise refused("invalid", InvalidArgument(f"unknown trans mode {req.trans_mode}"))
    offline = req.trans_mode == OFFLINE
    if not offline and not await _is_online(gw, req.to_user_id):
        raise refused("receiver_offline", ReceiverOffline(f"user {req.to_user_id} is not online"))
    task = internal_pb2.FileTaskReq(
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        file_name=name,
        file_size=req.file_size,
        trans_mode=req.trans_mode,
    )
    try:
        res = await gw.file_call(Rpcs.FILE_TASK, task, offline=offline)
    except Unavailable as exc:
        raise counted(exc) from None
    if res.result_code != 0:
        raise refused(
            "file_server", FileServerRefused(f"file server refused the task: {res.reason or res.result_code}")
        )
    if not offline:
        notify = file_pb2.IMFileNotify(
            from_user_id=conn.user_id,
            to_user_id=req.to_user_id,
            file_name=name,
            file_size=req.file_size,
            task_id=res.receiver_task_id,
            ip_addr_list=res.ip_addr_list,
            trans_mode=req.trans_mode,
            offline_ready=0,
        )
        deliver(gw, conn, [req.to_user_id], Cmd.FILE_NOTIFY, notify, skip_self=False)
    # Offline: the receiver hears of the file once it is uploaded (0x050B).
    return file_pb2.IMFileRsp(
        result_code=0,
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        file_name=name,
        task_id=res.sender_task_id,
        ip_addr_list=res.ip_addr_list,
        trans_mode=req.trans_mode,
    )


def _file_refused(conn: ClientConnection, req: file_pb2.IMFileReq, err: ClientError) -> file_pb2.IMFileRsp:
    return file_pb2.IMFileRsp(
        result_code=err.result_code,
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        file_name=echo(req.file_name),
        task_id="",
        trans_mode=req.trans_mode if req.trans_mode in TRANS_MODES else ONLINE,
    )


# -- 0x0509 -> 0x050A: the offline files waiting for me --------------------------------------


async def has_offline(
    gw: Gateway, conn: ClientConnection, req: file_pb2.IMFileHasOfflineReq
) -> file_pb2.IMFileHasOfflineRsp:
    """db_proxy's list (with this user's download tickets) and where the file server is."""
    req.user_id = conn.user_id
    try:
        res = await gw.db_call(conn.user_id, Rpcs.FILE_HAS_OFFLINE, req)
    except Unavailable as exc:
        raise counted(exc) from None
    res.user_id = conn.user_id
    res.attach_data = req.attach_data
    if res.offline_file_list:
        try:
            info = await gw.file_call(Rpcs.FILE_SERVER_INFO, internal_pb2.FileServerInfoReq())
        except Unavailable as exc:
            raise counted(exc) from None
        del res.ip_addr_list[:]
        res.ip_addr_list.extend(info.ip_addr_list)
    return res


def _has_offline_refused(
    conn: ClientConnection, req: file_pb2.IMFileHasOfflineReq, err: ClientError
) -> file_pb2.IMFileHasOfflineRsp:
    # An empty list: the client asks again when it next logs in.
    return file_pb2.IMFileHasOfflineRsp(user_id=conn.user_id, attach_data=req.attach_data)


# -- 0x050B: my offline upload is complete ---------------------------------------------------


async def add_offline(gw: Gateway, conn: ClientConnection, req: file_pb2.IMFileAddOfflineReq) -> None:
    """The file server vouches for the upload, db_proxy lists it, the receiver is told."""
    req.from_user_id = conn.user_id
    _peer(conn, req.to_user_id)
    task_id = _task_id(req.task_id)
    ready_req = internal_pb2.FileOfflineReadyReq(
        from_user_id=conn.user_id, to_user_id=req.to_user_id, task_id=task_id
    )
    try:
        ready = await gw.file_call(Rpcs.FILE_OFFLINE_READY, ready_req)
    except Unavailable as exc:
        raise counted(exc) from None
    if ready.result_code != 0:
        raise refused(
            "not_found",
            NotFound(f"offline file not ready or not this user's: {ready.reason or ready.result_code}"),
        )
    row = internal_pb2.DbOfflineFileAdd(
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        task_key=ready.task_key,
        receiver_task_id=ready.receiver_task_id,
        file_name=ready.file_name,
        file_size=ready.file_size,
        expires_at=ready.expires_at,
    )
    try:
        await gw.db_call(req.to_user_id, Rpcs.DB_OFFLINE_FILE_ADD, row)
    except Unavailable as exc:
        raise counted(exc) from None
    notify = file_pb2.IMFileNotify(
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        file_name=ready.file_name,
        file_size=ready.file_size,
        task_id=ready.receiver_task_id,
        ip_addr_list=ready.ip_addr_list,
        trans_mode=OFFLINE,
        offline_ready=1,
    )
    deliver(gw, conn, [req.to_user_id], Cmd.FILE_NOTIFY, notify, skip_self=False)


# -- 0x050C: done with an offline file ---------------------------------------------------------


async def del_offline(gw: Gateway, conn: ClientConnection, req: file_pb2.IMFileDelOfflineReq) -> None:
    """Unlisted by db_proxy (only for its receiver or sender), then removed from the file server."""
    key = task_key_of(_task_id(req.task_id))
    if key is None:
        raise refused("invalid", InvalidArgument("task id is not a ticket"))
    delete = internal_pb2.DbOfflineFileDel(user_id=conn.user_id, task_key=key)
    try:
        res = await gw.db_call(conn.user_id, Rpcs.DB_OFFLINE_FILE_DEL, delete)
    except Unavailable as exc:
        raise counted(exc) from None
    if not res.deleted:
        raise refused("not_found", NotFound("no such offline file for this user"))
    try:
        await gw.file_call(Rpcs.FILE_OFFLINE_DELETE, internal_pb2.FileOfflineDeleteReq(task_key=key))
    except Unavailable as exc:
        # Unlisted already; the file server's sweep removes the data when it expires.
        counted(exc)
        if _DELETE_LOG.ready():
            log.warning(
                "offline file %s unlisted but not removed from the file server (%s); it goes when it "
                "expires%s",
                key,
                exc,
                _DELETE_LOG.more(),
            )


COMMANDS = (
    ClientCommands()
    .request(Client.FILE, file_request, _file_refused)
    .request(Client.FILE_HAS_OFFLINE, has_offline, _has_offline_refused)
    .notice(Client.FILE_ADD_OFFLINE, add_offline)
    .notice(Client.FILE_DEL_OFFLINE, del_offline)
)
