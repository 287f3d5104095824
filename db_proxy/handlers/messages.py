"""Messages for the gateways: save (through the ordered workers), unread
counts, lists, read acks, recent sessions. Reads and writes the messages
store only."""

from __future__ import annotations

import asyncio
import logging

from common.commands import Rpcs
from common.conversation import conversation_key
from common.errors import ImError, Unavailable, describe, error_code
from common.link import Link
from common.metrics import ERRORS
from common.pb import base_pb2, buddy_pb2, internal_pb2, message_pb2
from common.rpc import Commands
from db_proxy.handlers.replies import FAILED, msg_info
from db_proxy.services.messages import MessageService
from db_proxy.storage.model import SESSION_GROUP, SavedMessage, Store
from db_proxy.workers import MessageWorkers

log = logging.getLogger("db_proxy")

MAX_LIST = 100  # messages per list/by-id request; TeamTalk clients ask for 20


class MessageHandlers:
    def __init__(self, store: Store, workers: MessageWorkers) -> None:
        self.store = store
        self.workers = workers
        self.messages = MessageService(workers)

    def commands(self) -> Commands:
        """The commands a gateway may send for this part of db_proxy."""
        return (
            Commands()
            .rpc(Rpcs.DB_SAVE_MSG, self.save_message)
            .rpc(Rpcs.DB_SAVE_MSGS, self.save_messages)
            .rpc(Rpcs.UNREAD_CNT, self.unread_counts)
            .rpc(Rpcs.MSG_LIST, self.message_list)
            .rpc(Rpcs.MSG_READ_ACK, self.read_ack)
            .rpc(Rpcs.LATEST_MSG_ID, self.latest_msg_id)
            .rpc(Rpcs.MSG_BY_ID, self.messages_by_id)
            .rpc(Rpcs.RECENT_SESSION, self.recent_sessions)
            .rpc(Rpcs.REMOVE_SESSION, self.remove_session)
        )

    def _queue_save(self, req: internal_pb2.DbSaveMsgReq) -> asyncio.Future[SavedMessage]:
        """Queue one message on its conversation's worker (synchronously: order kept)."""
        msg = req.msg
        return self.messages.send(
            msg.from_user_id,
            req.session_type,
            msg.to_session_id,
            msg.msg_type,
            msg.msg_data,
            req.origin,
            client_msg_id=msg.msg_id,
        )

    async def save_message(self, link: Link, req: internal_pb2.DbSaveMsgReq) -> internal_pb2.DbSaveMsgRes:
        saved = await self._queue_save(req)
        return internal_pb2.DbSaveMsgRes(
            msg_id=saved.msg_id, create_time=saved.create_time, duplicate=saved.duplicate
        )

    async def save_messages(
        self, link: Link, batch: internal_pb2.DbSaveMsgBatch
    ) -> internal_pb2.DbSaveMsgBatchRes:
        """Many DB_SAVE_MSG in one frame: each item queued in order, as if it came alone,
        and answered in its place (results[i] answers items[i]); a refused item fails
        alone. One request, one task and one reply for the whole frame."""
        queued: list[asyncio.Future[SavedMessage] | BaseException] = []
        for req in batch.items:
            try:
                queued.append(self._queue_save(req))
            except Exception as exc:  # refused at once (invalid, a saturated worker)
                queued.append(exc)
        futures = [item for item in queued if isinstance(item, asyncio.Future)]
        if futures:
            try:
                await asyncio.wait(futures)
            except asyncio.CancelledError:  # the link dropped: as a cancelled save_message does
                for future in futures:
                    future.cancel()
                raise
        res = internal_pb2.DbSaveMsgBatchRes()
        results = res.results
        for item in queued:
            outcome = results.add()
            if isinstance(item, BaseException):
                error: BaseException | None = item
            elif item.cancelled():
                error = Unavailable("cancelled")
            else:
                error = item.exception()
            if error is None:
                assert isinstance(item, asyncio.Future)
                saved = item.result()
                reply = outcome.saved
                reply.msg_id = saved.msg_id
                reply.create_time = saved.create_time
                reply.duplicate = saved.duplicate
                continue
            if not isinstance(error, ImError):
                ERRORS.labels("bug").inc()
                log.error("saving a message of a batch failed", exc_info=error)
            outcome.error.code = error_code(error)
            outcome.error.message = describe(error)
        return res

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

    # -- sessions (written in the message transaction, so they live here) -----------

    async def recent_sessions(
        self, link: Link, req: buddy_pb2.IMRecentContactSessionReq
    ) -> buddy_pb2.IMRecentContactSessionRsp:
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
        return res

    async def remove_session(
        self, link: Link, req: buddy_pb2.IMRemoveSessionReq
    ) -> buddy_pb2.IMRemoveSessionRsp:
        removed = await self.store.remove_session(req.user_id, req.session_type, req.session_id)
        return buddy_pb2.IMRemoveSessionRsp(
            user_id=req.user_id,
            result_code=0 if removed else FAILED,
            session_type=req.session_type,
            session_id=req.session_id,
            attach_data=req.attach_data,
        )
