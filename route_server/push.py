"""PUSH_MSG / PUSH_MSGS: stored messages to every gateway that holds one of their recipients, acknowledged.

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

The sender's own copy is not sent back to the gateway it came from when
the connection it came from (``PushMsg.origin``) is the sender's only
session there: that connection has the message (the gateway raises its
order record on the ack). Its other devices, on that gateway or another,
still get it. Counted in ``imcluster_route_origin_skipped``, not as a drop.

``PUSH_MSGS`` is many pushes in one frame: every push of the batch is
planned in order, then each gateway gets one ``PUSH_MSGS`` with its own
narrowed pushes, in the order given, and the answers are mapped back push
by push (results[i] answers pushes[i]), each as a single ``PUSH_MSG``
would have been answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from common.commands import Rpcs
from common.errors import ImError
from common.link import Link, LinkDown, RequestTimeout
from common.pb import internal_pb2
from route_server.metrics import ORIGIN_SKIPPED, PUSH_BATCH, PUSHES_DROPPED, PUSHES_RELAYED
from route_server.table import RouteTable

_BATCHES_SENT = PUSH_BATCH.labels("sent")


class _Plan:
    """One push: its recipients, where they are, and who is to be pushed again."""

    __slots__ = ("offline", "recipients", "retry", "sender", "skipped", "targets")

    def __init__(
        self,
        recipients: list[int],
        targets: dict[str, list[int]],
        offline: list[int],
        retry: set[int],
        sender: int,
        skipped: bool,
    ) -> None:
        self.skipped = skipped  # the sender's copy was not sent back to its origin's gateway
        self.recipients = recipients
        self.targets = targets
        self.offline = offline
        self.retry = retry
        self.sender = sender

    def result(self) -> internal_pb2.PushMsgResult:
        retry = self.retry
        sender = self.sender
        return internal_pb2.PushMsgResult(
            retry_user_ids=[u for u in self.recipients if u in retry] if retry else (),
            # For the offline push; the sender's own other devices are not notified of its message.
            offline_user_ids=[u for u in self.offline if u != sender],
        )


class _ToGateway:
    """What one gateway gets of a batch: the pushes (narrowed to its users) and whose they are."""

    __slots__ = ("batch", "index", "users")

    def __init__(self) -> None:
        self.batch = internal_pb2.PushMsgBatch()
        self.index: list[int] = []  # the push of the incoming batch each of ours is
        self.users: list[list[int]] = []


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

    def _plan(self, msg: internal_pb2.PushMsg) -> _Plan:
        """Where one push goes; counts its drops (not the skip of the sender's copy)."""
        recipients = list(dict.fromkeys(msg.user_ids))
        sender = msg.from_user_id
        skip: str | None = None
        if msg.HasField("origin"):
            origin = msg.origin
            if self.table.only_session_there(sender, origin.gateway_id, origin.conn_id):
                skip = origin.gateway_id
        targets, offline = self.table.fan_out_push(recipients, sender, skip)
        retry = self.held(recipients)
        if retry:
            PUSHES_DROPPED.labels("no_gateway_link").inc(len(retry))
            offline = [u for u in offline if u not in retry]
        if offline:
            PUSHES_DROPPED.labels("no_session").inc(len(offline))
        return _Plan(recipients, targets, offline, retry, sender, skip is not None)

    async def push(self, msg: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        plan = self._plan(msg)
        if plan.skipped:
            ORIGIN_SKIPPED.inc()
        # Pushes of a conversation leave for a gateway in the order they came:
        # each handler's first step (this, up to gather) schedules its calls,
        # asyncio runs ready tasks first in, first out, and a call writes its
        # frame in its first step; the link is FIFO.
        many = len(plan.recipients)
        for again in await asyncio.gather(
            *(self._to_gateway(g, users, msg, many) for g, users in plan.targets.items())
        ):
            plan.retry |= again
        return plan.result()

    async def push_many(self, pushes: Sequence[internal_pb2.PushMsg]) -> list[internal_pb2.PushMsgResult]:
        """Every push of a batch; results[i] answers pushes[i]. One PUSH_MSGS per gateway,
        its pushes in the order given (the same FIFO argument as :meth:`push`)."""
        plans: list[_Plan] = []
        to: dict[str, _ToGateway] = {}
        skipped = 0
        for i, msg in enumerate(pushes):
            plan = self._plan(msg)
            plans.append(plan)
            skipped += plan.skipped
            many = len(plan.recipients)
            for gateway_id, users in plan.targets.items():
                out = to.get(gateway_id)
                if out is None:
                    out = to[gateway_id] = _ToGateway()
                narrowed = out.batch.pushes.add()
                narrowed.CopyFrom(msg)
                if len(users) != many or len(msg.user_ids) != many:
                    del narrowed.user_ids[:]
                    narrowed.user_ids.extend(users)
                out.index.append(i)
                out.users.append(users)
        if skipped:
            ORIGIN_SKIPPED.inc(skipped)
        if to:
            answers = await asyncio.gather(*(self._many_to_gateway(g, out) for g, out in to.items()))
            for out, agains in zip(to.values(), answers, strict=True):
                for i, again in zip(out.index, agains, strict=True):
                    if again:
                        plans[i].retry |= again
        return [plan.result() for plan in plans]

    async def _to_gateway(
        self, gateway_id: str, users: list[int], msg: internal_pb2.PushMsg, many: int
    ) -> set[int]:
        """The users of one gateway to push again (empty: all confirmed, or gone)."""
        link = self.links.get(gateway_id)
        if link is None or not link.is_open:
            PUSHES_DROPPED.labels("no_gateway_link").inc(len(users))
            return self._still_there(gateway_id, users)
        if len(users) != many or len(msg.user_ids) != many:
            narrowed = internal_pb2.PushMsg()
            narrowed.CopyFrom(msg)
            del narrowed.user_ids[:]
            narrowed.user_ids.extend(users)
            msg = narrowed
        try:
            reply = await link.call(Rpcs.PUSH_MSG, msg, self.timeout)
        except ImError as exc:
            reason = _failure(exc)
        else:
            again = self._answered(users, reply)
            return self._still_there(gateway_id, again) if again else set()
        PUSHES_DROPPED.labels(reason).inc(len(users))
        return self._still_there(gateway_id, users)

    async def _many_to_gateway(self, gateway_id: str, out: _ToGateway) -> list[set[int]]:
        """Per push sent to one gateway: its users there to push again."""
        link = self.links.get(gateway_id)
        reason = "no_gateway_link"
        if link is not None and link.is_open:
            _BATCHES_SENT.inc()
            try:
                reply = await link.call(Rpcs.PUSH_MSGS, out.batch, self.timeout)
            except ImError as exc:
                reason = _failure(exc)
            else:
                if len(reply.results) == len(out.users):
                    return self._answers(gateway_id, out.users, reply.results)
                reason = "gateway_error"  # not an answer push by push: all of it again
        PUSHES_DROPPED.labels(reason).inc(sum(map(len, out.users)))
        return [self._still_there(gateway_id, users) for users in out.users]

    def _answers(
        self,
        gateway_id: str,
        users: list[list[int]],
        results: Sequence[internal_pb2.PushMsgResult],
    ) -> list[set[int]]:
        """A gateway's answers push by push: whom to push again (counted once per batch)."""
        agains: list[set[int]] = []
        relayed = handed_back = 0
        for mine, result in zip(users, results, strict=True):
            relayed += len(mine)
            if not result.retry_user_ids:
                agains.append(set())
                continue
            asked = set(mine)
            again = [u for u in result.retry_user_ids if u in asked]
            handed_back += len(again)
            agains.append(self._still_there(gateway_id, again) if again else set())
        PUSHES_RELAYED.inc(relayed - handed_back)
        if handed_back:
            PUSHES_DROPPED.labels("gateway_error").inc(handed_back)
        return agains

    @staticmethod
    def _answered(users: list[int], reply: internal_pb2.PushMsgResult) -> list[int]:
        """A gateway's answer for ``users``: those it asks to be pushed again (counted)."""
        if not reply.retry_user_ids:
            PUSHES_RELAYED.inc(len(users))
            return []
        mine = set(users)
        again = [u for u in reply.retry_user_ids if u in mine]
        PUSHES_RELAYED.inc(len(users) - len(again))
        if again:
            PUSHES_DROPPED.labels("gateway_error").inc(len(again))
        return again

    def _still_there(self, gateway_id: str, users: list[int]) -> set[int]:
        # A user who left that gateway meanwhile (its session closed) is
        # offline there: nothing to push again. One whose gateway's link
        # dropped during the call may still be connected to it: held.
        held = self.held(users)
        return {u for u in users if u in held or self.table.holds(gateway_id, u)}


def _failure(exc: ImError) -> str:
    """The drop reason of a push call to a gateway that got no answer."""
    if isinstance(exc, RequestTimeout):
        return "gateway_timeout"
    if isinstance(exc, LinkDown):
        return "no_gateway_link"
    return "gateway_error"
