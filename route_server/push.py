"""PUSH_MSG: a stored message to every gateway that holds one of its recipients, acknowledged.

db_proxy's dispatcher asks; the pusher calls every gateway holding a
recipient at once, with only that gateway's recipients, each call bounded
by ``push_timeout``, and answers when each has answered (a gateway answers
once the message is written to its client connections) or given up. The
answer names the recipients to push again: those whose gateway did not
confirm while the table still places them there. A recipient with no
session anywhere is done: its client syncs from storage at its next login;
the answer names it in ``offline_user_ids`` (the sender excepted) for the
offline push.
A retry that reaches a gateway which had the message already is dropped
there as a duplicate, so handing back too much is safe; too little is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from common.commands import Rpcs
from common.errors import ImError
from common.link import Link, LinkDown, RequestTimeout
from common.pb import internal_pb2
from route_server.metrics import PUSHES_DROPPED, PUSHES_RELAYED
from route_server.table import RouteTable


class Pusher:
    def __init__(
        self,
        table: RouteTable,
        links: Mapping[str, Link],
        timeout: float,
        held: Callable[[list[int]], set[int]] = lambda user_ids: set(),
    ) -> None:
        self.table = table
        self.links = links  # the server's live map of gateway links
        self.timeout = timeout
        # Users who may be on a gateway whose link dropped just now
        # (readiness.LostGateways): pushed again, never called offline.
        self.held = held

    async def push(self, msg: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        recipients = list(dict.fromkeys(msg.user_ids))
        targets = self.table.fan_out(recipients)
        reached = {u for users in targets.values() for u in users}
        retry = self.held(recipients)
        if retry:
            PUSHES_DROPPED.labels("no_gateway_link").inc(len(retry))
        offline = [u for u in recipients if u not in reached and u not in retry]
        if offline:
            PUSHES_DROPPED.labels("no_session").inc(len(offline))
        # Pushes of a conversation leave for a gateway in the order they came:
        # each handler's first step (this, up to gather) schedules its calls,
        # asyncio runs ready tasks first in, first out, and a call writes its
        # frame in its first step; the link is FIFO.
        for again in await asyncio.gather(*(self._to_gateway(g, users, msg) for g, users in targets.items())):
            retry |= again
        return internal_pb2.PushMsgResult(
            retry_user_ids=[u for u in recipients if u in retry],
            # For the offline push; the sender's own other devices are not notified of its message.
            offline_user_ids=[u for u in offline if u != msg.from_user_id],
        )

    async def _to_gateway(self, gateway_id: str, users: list[int], msg: internal_pb2.PushMsg) -> set[int]:
        """The users of one gateway to push again (empty: all confirmed, or gone)."""
        link = self.links.get(gateway_id)
        if link is None or not link.is_open:
            PUSHES_DROPPED.labels("no_gateway_link").inc(len(users))
            return self._still_there(gateway_id, users)
        narrowed = internal_pb2.PushMsg()
        narrowed.CopyFrom(msg)
        del narrowed.user_ids[:]
        narrowed.user_ids.extend(users)
        try:
            reply = await link.call(Rpcs.PUSH_MSG, narrowed, self.timeout)
        except RequestTimeout:
            reason = "gateway_timeout"
        except LinkDown:
            reason = "no_gateway_link"
        except ImError:
            reason = "gateway_error"
        else:
            mine = set(users)
            again = [u for u in reply.retry_user_ids if u in mine]
            PUSHES_RELAYED.inc(len(users) - len(again))
            if again:
                PUSHES_DROPPED.labels("gateway_error").inc(len(again))
            return self._still_there(gateway_id, again)
        PUSHES_DROPPED.labels(reason).inc(len(users))
        return self._still_there(gateway_id, users)

    def _still_there(self, gateway_id: str, users: list[int]) -> set[int]:
        # A user who left that gateway meanwhile (its session closed) is
        # offline there: nothing to push again. One whose gateway's link
        # dropped during the call may still be connected to it: held.
        held = self.held(users)
        return {u for u in users if u in held or self.table.holds(gateway_id, u)}
