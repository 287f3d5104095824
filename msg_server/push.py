"""Acknowledged pushes of stored messages (``Rpcs.PUSH_MSG`` from a route server).

For each recipient connection :class:`~msg_server.push_order.PushOrder`
decides: write it, drop a duplicate, or fill a gap from storage first
(``Rpcs.MSG_BY_ID`` as that connection's user) and write the missing
messages in order before this one. While a fill runs, later pushes for the
same connection and conversation wait behind it, so nothing overtakes it.
The route server gets its answer only once every write is done (queued on
the connection) or the connection is gone: an answer means "delivered", and
the delivery log is acknowledged on it.

The writes run as tasks of their own, not as part of the link's request: a
route link that drops mid-fill must not leave a connection whose record says
"written" for a message it never got.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Hashable
from typing import TYPE_CHECKING, Any

from common.commands import Cmd, Rpcs
from common.conversation import conversation_key
from common.db_roles import DbRole
from common.errors import ImError
from common.pb import base_pb2, internal_pb2, message_pb2
from msg_server.metrics import GAPS_FILLED, PUSH_LATENCY, PUSHED, PUSHES_DROPPED, RELAY_LATENCY
from msg_server.push_order import DUPLICATE, WRITE, Decision, Gap

if TYPE_CHECKING:
    from common.link import Link
    from msg_server.client import ClientConnection
    from msg_server.gateway import Gateway

log = logging.getLogger("push")

FILL_TIMEOUT = 2.0  # one MSG_BY_ID of a gap; past it the rest of the gap is written past (counted)
# Ids per MSG_BY_ID: db_proxy answers at most that many (db_proxy/handlers/messages.py MAX_LIST);
# a longer gap (up to push_order.MAX_FILL) is fetched in turn, in order.
FILL_CHUNK = 100
MAX_WAITING = 256  # pushes queued behind one fill; more: the route server is told to retry


class _Chain:
    """Pushes of one (connection, conversation) waiting behind a fill, in arrival order."""

    __slots__ = ("tail", "waiting")

    def __init__(self, tail: asyncio.Future[None]) -> None:
        self.tail = tail
        self.waiting = 1


class Pusher:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._chains: dict[tuple[int, Hashable], _Chain] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_push(self, link: Link, push: internal_pb2.PushMsg) -> internal_pb2.PushMsgResult:
        tasks, retry = self.push(push)
        if tasks:
            # Shielded: the writes finish even if this request is cancelled.
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        return internal_pb2.PushMsgResult(retry_user_ids=retry)

    async def on_push_many(
        self, link: Link, batch: internal_pb2.PushMsgBatch
    ) -> internal_pb2.PushMsgBatchResult:
        """Many pushes in one frame: each decided as :meth:`on_push` would, in the order
        given; answered once all their writes are done, results[i] for pushes[i]."""
        tasks: list[asyncio.Task[None]] = []
        reply = internal_pb2.PushMsgBatchResult()
        results = reply.results
        for push in batch.pushes:
            mine, retry = self.push(push)
            if mine:
                tasks.extend(mine)
            if retry:
                results.add(retry_user_ids=retry)
            else:
                results.add()
        if tasks:
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        return reply

    def push(self, push: internal_pb2.PushMsg) -> tuple[list[asyncio.Task[None]], list[int]]:
        """Decides, and links into the waiting chains, synchronously: pushes keep
        their arrival order. Answers the writes still running, and the users
        to push to again later (too many waiting behind a fill).

        Per recipient connection the common case is one dict lookup, the
        order record's fast path and a write; metrics are counted once per
        push (a 500-member group's message is 500 of these)."""
        gateway = self.gateway
        committed_at_us = push.committed_at_us
        if committed_at_us:
            RELAY_LATENCY.observe(max(0.0, time.time() - committed_at_us / 1e6))
        key = conversation_key(push.session_type, push.from_user_id, push.to_id)
        origin = (
            push.origin.conn_id
            if push.HasField("origin") and push.origin.gateway_id == gateway.node_id
            else 0
        )
        msg_id = push.msg_id
        body = push.body
        sessions = gateway.sessions
        chains = self._chains
        tasks: list[asyncio.Task[None]] = []
        retry: list[int] = []
        written = no_session = duplicates = gone = 0
        for user_id in dict.fromkeys(push.user_ids):
            conns = sessions.get(user_id)
            if not conns:  # the route server's table was stale: the user left this gateway
                no_session += 1
                continue
            # A copy only for several: a write that cuts a slow reader off does not
            # change the list at once (the close comes later), but better safe.
            for conn in conns if len(conns) == 1 else list(conns):
                order = conn.push_order
                if order is None:
                    order = conn.order()
                if conn.conn_id == origin:
                    # The sender's own connection has it; a later gap must not refetch it.
                    skipped = order.raise_to(key, msg_id)
                    if skipped:
                        PUSHES_DROPPED.labels("gap_unfilled").inc(skipped)
                    continue
                if chains:
                    chain = chains.get((conn.conn_id, key))
                    if chain is not None:
                        if chain.waiting >= MAX_WAITING:
                            if user_id not in retry:
                                retry.append(user_id)
                            continue
                        loop = asyncio.get_running_loop()
                        before, mine = chain.tail, loop.create_future()
                        chain.tail = mine
                        chain.waiting += 1
                        tasks.append(self._start(self._behind(chain, before, mine, conn, key, push)))
                        continue
                decision = order.decide(key, msg_id)
                if decision is WRITE:
                    if conn.send_raw(Cmd.MSG_DATA, body):
                        written += 1
                    else:  # closing, or just cut off as a slow reader
                        gone += 1
                    continue
                decision = settled(conn, push, decision)
                if decision is DUPLICATE:
                    duplicates += 1
                elif isinstance(decision, Gap):
                    first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    chain = chains[(conn.conn_id, key)] = _Chain(first)
                    tasks.append(self._start(self._fill_first(chain, first, conn, key, push, decision)))
                elif conn.send_raw(Cmd.MSG_DATA, body):
                    written += 1
                else:
                    gone += 1
        if written:
            PUSHED.inc(written)
            if committed_at_us:
                # Once per push and gateway: its recipients here were written in this same step.
                PUSH_LATENCY.observe(max(0.0, time.time() - committed_at_us / 1e6))
        if no_session:
            PUSHES_DROPPED.labels("no_session").inc(no_session)
        if duplicates:
            PUSHES_DROPPED.labels("duplicate").inc(duplicates)
        if gone:
            PUSHES_DROPPED.labels("connection_gone").inc(gone)
        return tasks, retry

    def _start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _fill_first(
        self,
        chain: _Chain,
        mine: asyncio.Future[None],
        conn: ClientConnection,
        key: tuple[int, int, int],
        push: internal_pb2.PushMsg,
        gap: Gap,
    ) -> None:
        try:
            if await self._fill(conn, key, push, gap):
                self._write(conn, push.body, push.committed_at_us)
        finally:
            self._done(chain, mine, conn, key)

    async def _behind(
        self,
        chain: _Chain,
        before: asyncio.Future[None],
        mine: asyncio.Future[None],
        conn: ClientConnection,
        key: tuple[int, int, int],
        push: internal_pb2.PushMsg,
    ) -> None:
        try:
            await asyncio.shield(before)
            decision = settled(conn, push, conn.order().decide(key, push.msg_id))
            if decision == DUPLICATE:
                PUSHES_DROPPED.labels("duplicate").inc()
                return
            if isinstance(decision, Gap) and not await self._fill(conn, key, push, decision):
                return
            self._write(conn, push.body, push.committed_at_us)
        finally:
            self._done(chain, mine, conn, key)

    def _done(
        self, chain: _Chain, mine: asyncio.Future[None], conn: ClientConnection, key: tuple[int, int, int]
    ) -> None:
        if not mine.done():
            mine.set_result(None)
        chain.waiting -= 1
        if chain.tail is mine:
            self._chains.pop((conn.conn_id, key), None)

    async def _fill(
        self, conn: ClientConnection, key: tuple[int, int, int], push: internal_pb2.PushMsg, gap: Gap
    ) -> bool:
        """Write the missing messages, in order; False if the connection is gone."""
        if conn.closing:
            PUSHES_DROPPED.labels("connection_gone").inc()
            return False
        unfilled = gap.skipped
        # A first's: only those stored after the login (the client synced the
        # others when it logged in); a second's margin
        # (create_time is in seconds, and the hosts' clocks differ a little)
        # rather risks a copy of what it synced than a loss.
        since = conn.logged_in_at - 1
        try:
            for start in range(0, len(gap.missing), FILL_CHUNK):
                chunk = gap.missing[start : start + FILL_CHUNK]
                if start and conn.closing:  # gone while the chunk before was fetched
                    PUSHES_DROPPED.labels("connection_gone").inc()
                    return False
                req = message_pb2.IMGetMsgByIdReq(
                    user_id=conn.user_id,
                    session_type=push.session_type,
                    session_id=peer_of(key, conn.user_id),
                    msg_id_list=chunk,
                )
                try:
                    res = await self.gateway.db_for(key, DbRole.MESSAGES).call(
                        Rpcs.MSG_BY_ID, req, FILL_TIMEOUT
                    )
                except ImError as exc:
                    # The rest is written past rather than each chunk waited for in
                    # turn while later pushes queue behind (storage is failing).
                    rest = len(gap.missing) - start
                    conn.log.debug("%d of a gap before %d not filled: %s", rest, push.msg_id, exc)
                    if not gap.first:  # a first's were most likely synced at login: not counted
                        unfilled += rest
                    return True
                found = {info.msg_id: info for info in res.msg_list}
                for msg_id in chunk:
                    info = found.get(msg_id)
                    if info is None:
                        if not gap.first:
                            unfilled += 1
                        continue
                    if gap.first and info.create_time < since:
                        continue
                    if info.from_session_id == conn.user_id and conn.order().own_unacked(key, info.msg_data):
                        continue  # its own send, unacked (stored after all): it has it
                    if not self._write(conn, message_body(key, info), 0):
                        return False  # counted as connection_gone
                    GAPS_FILLED.inc()
            return True
        finally:
            if unfilled:
                PUSHES_DROPPED.labels("gap_unfilled").inc(unfilled)

    def _write(self, conn: ClientConnection, body: bytes, committed_at_us: int) -> bool:
        if not conn.send_raw(Cmd.MSG_DATA, body):  # closing, or just cut off as a slow reader
            PUSHES_DROPPED.labels("connection_gone").inc()
            return False
        PUSHED.inc()
        if committed_at_us:
            PUSH_LATENCY.observe(max(0.0, time.time() - committed_at_us / 1e6))
        return True


def settled(conn: ClientConnection, push: internal_pb2.PushMsg, decision: Decision) -> Decision:
    """A first push of a message stored before the login needs no look back:
    whatever came before it, the client synced at login (a second's margin, as in the fill)."""
    if (
        isinstance(decision, Gap)
        and decision.first
        and push.committed_at_us
        and push.committed_at_us < (conn.logged_in_at - 1) * 1_000_000
    ):
        # Ids skipped are still counted (by the fill, with nothing to fetch).
        return Gap((), decision.skipped, first=True) if decision.skipped else WRITE
    return decision


def peer_of(key: tuple[int, int, int], user_id: int) -> int:
    """The session a user reads a conversation as: the other party, or the group."""
    session_type, a, b = key
    if session_type == base_pb2.SESSION_TYPE_SINGLE:
        return b if user_id == a else a
    return a


def message_body(key: tuple[int, int, int], info: base_pb2.MsgInfo) -> bytes:
    """The IMMsgData a stored message is pushed as (db_proxy's push: to_session_id
    is the recipient user, or the group)."""
    return message_pb2.IMMsgData(
        from_user_id=info.from_session_id,
        to_session_id=peer_of(key, info.from_session_id),
        msg_id=info.msg_id,
        create_time=info.create_time,
        msg_type=info.msg_type,
        msg_data=info.msg_data,
    ).SerializeToString()
