"""What db_proxy does for a gateway: one handler per command, no SQL here.

The gateway has already authenticated the user and overwritten every
``user_id`` in a request with it, so handlers trust ``user_id`` and nothing
else the client chose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from common.commands import Rpcs
from common.conversation import conversation_key, session_type_of
from common.errors import ImError, InvalidArgument, Overloaded
from common.link import Link
from common.log import address_of
from common.metrics import LOGINS
from common.pb import base_pb2, internal_pb2, message_pb2
from common.rpc import Commands
from db_proxy.cache import LoginCache, ThrottleCounters
from db_proxy.passwords import verify_or_waste
from db_proxy.storage import schema
from db_proxy.storage.model import (
    NewMessage,
    Store,
    StoredMessage,
    User,
    is_text,
)
from db_proxy.workers import MessageWorkers

log = logging.getLogger("db.handlers")

MAX_LIST = 100  # messages per list/by-id request; TeamTalk clients ask for 20
# A TeamTalk client sends the md5 hex of the password (32 characters); a
# longer one matches nobody, and is refused before it costs a hash.
MAX_PASSWORD_MD5 = 64
FAILED = 1  # result_code of a refused change in TeamTalk's replies

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refused:
    """A change refused through the caller's own fault, and why."""

    reason: str


async def unless_refused(operation: Awaitable[T]) -> T | Refused:
    """The result of ``operation``, or :class:`Refused` when the caller is at fault.

    For the commands whose TeamTalk reply has a result_code: a value too
    long or not UTF-8, a group the user is not in, no such group... is the
    caller's fault (an ImError with ``server_fault`` False) and the reply
    says FAILED. A server fault (storage down, a bug) propagates: the
    gateway answers for it as for any failed request.
    """
    try:
        return await operation
    except ImError as exc:
        if exc.server_fault:
            raise
        return Refused(exc.message)


def result_code(outcome: object) -> int:
    """0, or FAILED for an outcome of :func:`unless_refused` that was refused."""
    return FAILED if isinstance(outcome, Refused) else 0


def echo(value: str) -> str:
    """A client's string to repeat in a reply: only if it is text.

    A proto2 string holding invalid UTF-8 arrives as bytes (the stubs say
    str), and protobuf will not put it in a reply.
    """
    return value if is_text(value) else ""


def user_info(user: User) -> base_pb2.UserInfo:
    """A user as TeamTalk's db_proxy describes it: ``user_real_name`` is the
    login name (its ``name`` column), ``user_nick_name`` the display name,
    ``user_domain`` the search key (stored; see db_proxy.names)."""
    return base_pb2.UserInfo(
        user_id=user.id,
        user_gender=user.gender,
        user_nick_name=user.nick or user.name,
        avatar_url=user.avatar,
        department_id=user.department_id,
        email=user.email,
        user_real_name=user.name,
        user_tel=user.tel,
        # Stored for every user since migration 4; the login name is the key
        # of a row that has none yet (set by hand, or read mid-upgrade).
        user_domain=user.domain or user.name,
        status=user.status,
        sign_info=user.sign_info,
    )


def msg_info(message: StoredMessage) -> base_pb2.MsgInfo:
    return base_pb2.MsgInfo(
        msg_id=message.msg_id,
        from_session_id=message.from_user_id,
        create_time=message.create_time,
        msg_type=base_pb2.MsgType.ValueType(message.msg_type),
        msg_data=message.msg_data,
    )


class Handlers:
    def __init__(
        self,
        directory: Store,
        store: Store,
        workers: MessageWorkers,
        cache: LoginCache,
        hash_pool: ThreadPoolExecutor,
        max_pending_logins: int,
        throttle: ThrottleCounters,
    ) -> None:
        self.directory = directory  # users (logins)
        self.store = store  # messages
        self.workers = workers
        self.cache = cache
        self.throttle = throttle
        self.hash_pool = hash_pool
        self.max_pending_logins = max_pending_logins
        self.pending_logins = 0

    def commands(self) -> Commands:
        """The commands a gateway may send for this part of db_proxy."""
        return (
            Commands()
            .rpc(Rpcs.DB_LOGIN, self.login)
            .rpc(Rpcs.DB_SAVE_MSG, self.save_message)
            .rpc(Rpcs.UNREAD_CNT, self.unread_counts)
            .rpc(Rpcs.MSG_LIST, self.message_list)
            .rpc(Rpcs.MSG_READ_ACK, self.read_ack)
            .rpc(Rpcs.LATEST_MSG_ID, self.latest_msg_id)
            .rpc(Rpcs.MSG_BY_ID, self.messages_by_id)
        )

    # -- login ------------------------------------------------------------------

    async def login(self, link: Link, req: internal_pb2.DbLoginReq) -> internal_pb2.DbLoginRes:
        refused = internal_pb2.DbLoginRes(
            result_code=base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED,
            result_string="wrong user name or password",
        )
        # A proto2 string that is not UTF-8 arrives as bytes: no user has
        # that name or that password. Such a name is counted under one key.
        name = req.user_name.strip() if is_text(req.user_name) else "\0not utf-8"
        md5 = req.password_md5
        source = address_of(req.peer if is_text(req.peer) else "?")
        now = time.time()
        keys, attempt, throttled = await self.throttle.check(source, name, now)
        if throttled is not None:
            # Inside a wait: refused before any lookup or hash, and not counted.
            refused.result_string = throttled.message
            return refused
        # Running until answered: parallel guesses count against the limits meanwhile
        # (login_throttle.InFlight), so they cannot all pass before the first is counted.
        self.throttle.in_flight.begin(keys)
        try:
            user: User | None = None
            plausible = 0 < len(name) <= schema.USER_TEXT_LIMITS["name"]
            if plausible and is_text(md5) and len(md5) <= MAX_PASSWORD_MD5:
                user = await self.directory.user_by_name(name)
                ok = await self._password_matches(user, md5)
            else:
                ok = False  # no user has that name, or that password: no hash needed to know
            if not ok or user is None:
                await self.throttle.failed(keys, attempt, time.time())
        finally:
            self.throttle.in_flight.end(keys)
        if not ok or user is None:
            LOGINS.labels("refused").inc()
            log.info("login refused for %r from %s", name[:80], source)
            return refused
        LOGINS.labels("ok").inc()
        await self.throttle.succeeded(keys, time.time())
        self.workers.recipients.remember(user.id)
        return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, user_info=user_info(user))

    async def _password_matches(self, user: User | None, md5: str) -> bool:
        """Whether ``md5`` is ``user``'s password; the same scrypt for a user who
        does not exist or cannot log in (see passwords.dummy_hash)."""
        usable = user is not None and not user.disabled and user.password_hash.startswith("scrypt$")
        if user is not None and usable and await self.cache.is_verified(user.id, user.password_hash, md5):
            return True
        if self.pending_logins >= self.max_pending_logins:
            raise Overloaded("too many logins waiting for a hash")
        self.pending_logins += 1
        try:
            loop = asyncio.get_running_loop()
            stored = user.password_hash if user is not None and usable else None
            ok = await loop.run_in_executor(self.hash_pool, verify_or_waste, md5, stored)
        finally:
            self.pending_logins -= 1
        if ok and user is not None:
            await self.cache.remember(user.id, user.password_hash, md5)
        return ok

    # -- messages -----------------------------------------------------------------

    async def save_message(self, link: Link, req: internal_pb2.DbSaveMsgReq) -> internal_pb2.DbSaveMsgRes:
        msg = req.msg
        if session_type_of(msg.msg_type) != req.session_type:
            raise InvalidArgument(f"msg_type {msg.msg_type} does not fit the session")
        if not msg.to_session_id:
            raise InvalidArgument("a message needs a recipient (to_session_id 0)")
        # Nothing awaited before the message is queued, or a later one could
        # overtake it: the recipient (or group membership) is checked in order,
        # by the worker and the store.
        new = NewMessage(
            from_user_id=msg.from_user_id,
            session_type=req.session_type,
            to_id=msg.to_session_id,
            msg_type=msg.msg_type,
            msg_data=msg.msg_data,
            create_time=int(time.time()),
            client_msg_id=msg.msg_id,
        )
        saved = await self.workers.save(new, req.origin)
        return internal_pb2.DbSaveMsgRes(
            msg_id=saved.msg_id, create_time=saved.create_time, duplicate=saved.duplicate
        )

    async def read_ack(self, link: Link, req: message_pb2.IMMsgDataReadAck) -> internal_pb2.LinkOk:
        key = conversation_key(req.session_type, req.user_id, req.session_id)
        # Behind any message of that conversation still queued, so the ack
        # does not clear a count the queued message is about to raise.
        await self.workers.run_ordered(
            key, lambda: self.store.mark_read(req.user_id, req.session_type, req.session_id, req.msg_id)
        )
        return internal_pb2.LinkOk()

    async def unread_counts(
        self, link: Link, req: message_pb2.IMUnreadMsgCntReq
    ) -> message_pb2.IMUnreadMsgCntRsp:
        sessions = await self.store.unread_sessions(req.user_id)
        res = message_pb2.IMUnreadMsgCntRsp(
            user_id=req.user_id, total_cnt=sum(s.unread_cnt for s in sessions)
        )
        for s in sessions:
            res.unreadinfo_list.add(
                session_id=s.peer_id,
                session_type=s.session_type,
                unread_cnt=s.unread_cnt,
                latest_msg_id=s.latest_msg_id,
                latest_msg_data=s.latest_msg_data,
                latest_msg_type=s.latest_msg_type,
                latest_msg_from_user_id=s.latest_from_user_id,
            )
        return res

    async def message_list(self, link: Link, req: message_pb2.IMGetMsgListReq) -> message_pb2.IMGetMsgListRsp:
        messages = await self.store.message_list(
            req.user_id, req.session_type, req.session_id, req.msg_id_begin, min(req.msg_cnt, MAX_LIST)
        )
        res = message_pb2.IMGetMsgListRsp(
            user_id=req.user_id,
            session_type=req.session_type,
            session_id=req.session_id,
            msg_id_begin=req.msg_id_begin,
            msg_list=[msg_info(m) for m in messages],
        )
        return res

    async def latest_msg_id(
        self, link: Link, req: message_pb2.IMGetLatestMsgIdReq
    ) -> message_pb2.IMGetLatestMsgIdRsp:
        latest = await self.store.latest_msg_id(req.user_id, req.session_type, req.session_id)
        return message_pb2.IMGetLatestMsgIdRsp(
            user_id=req.user_id,
            session_type=req.session_type,
            session_id=req.session_id,
            latest_msg_id=latest,
        )

    async def messages_by_id(
        self, link: Link, req: message_pb2.IMGetMsgByIdReq
    ) -> message_pb2.IMGetMsgByIdRsp:
        ids = list(req.msg_id_list)[:MAX_LIST]
        messages = await self.store.messages_by_id(req.user_id, req.session_type, req.session_id, ids)
        return message_pb2.IMGetMsgByIdRsp(
            user_id=req.user_id,
            session_type=req.session_type,
            session_id=req.session_id,
            msg_list=[msg_info(m) for m in messages],
        )
