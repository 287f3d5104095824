"""Sending a message, whoever sends it: a client through its gateway, or an admin.

The message is queued on its conversation's ordered worker, which checks the
recipient (or the group membership) at the commit, stores it and appends its
push to the delivery log; nothing else is sent from here.
"""

from __future__ import annotations

import asyncio
import time

from common.conversation import session_type_of
from common.errors import InvalidArgument
from common.pb import internal_pb2
from db_proxy.storage.model import NewMessage, SavedMessage
from db_proxy.workers import MessageWorkers


class MessageService:
    def __init__(self, workers: MessageWorkers) -> None:
        self.workers = workers

    def send(
        self,
        from_user_id: int,
        session_type: int,
        to_id: int,
        msg_type: int,
        data: bytes,
        origin: internal_pb2.Origin,
        *,
        client_msg_id: int = 0,
        trusted: bool = False,
    ) -> asyncio.Future[SavedMessage]:
        """The saved message, once committed. Not a coroutine, on purpose: the
        message is queued before the caller awaits anything, so a later message
        of the same connection cannot overtake it. ``trusted``: the system
        user, which may write to any group."""
        if session_type_of(msg_type) != session_type:
            raise InvalidArgument(f"msg_type {msg_type} does not fit the session")
        if not to_id:
            raise InvalidArgument("a message needs a recipient (to_session_id 0)")
        message = NewMessage(
            from_user_id=from_user_id,
            session_type=session_type,
            to_id=to_id,
            msg_type=msg_type,
            msg_data=data,
            create_time=int(time.time()),
            client_msg_id=client_msg_id,
            trusted=trusted,
        )
        return self.workers.save(message, origin)
