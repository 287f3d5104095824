"""Group fan-out: a few members send to a big group; deliveries counted at every receiver.

Members are logged in alternately on msg-1 and msg-2 (the echo baseline: its one port).
A few of them send group messages, each with W un-acked at most. Every member's
connection counts the IMMsgData pushes it gets, and checks them cheaply: the body's
``G:<rep>:<sender>:<seq>:`` head names the message (a byte search, then a full parse only
for the msg id order check). Per receiver: every acked message of the others exactly
once (lost, duplicates), msg ids strictly increasing (reordered), never its own message
(sender_copies). Deliveries/s is every delivery over the time from the first send to
the last delivery.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from typing import Any

from benchmarks.measure import cpu_percent, cpu_snapshot
from benchmarks.servers import Target
from benchmarks.settings import HOST, LOGIN_TIMEOUT, PASSWORD_MD5
from benchmarks.wire import CLOSED, BenchConn, connect_and_login
from common.commands import Cmd
from common.pb import base_pb2, message_pb2

STALL_TIMEOUT = 15.0
DRAIN_TIMEOUT = 15.0
MSG_DATA = int(Cmd.MSG_DATA)


class Member:
    __slots__ = (
        "conn",
        "count",
        "foreign",
        "index",
        "last_msg_id",
        "last_ns",
        "order",
        "own",
        "rep",
        "seen",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.conn: BenchConn | None = None
        self.reset(-1)

    def reset(self, rep: int) -> None:
        self.rep = rep
        self.count = 0
        self.seen: set[int] = set()  # sender * 1_000_000 + seq
        self.last_msg_id = 0
        self.order = 0
        self.own = 0
        self.foreign = 0
        self.last_ns = 0

    def on_push(self, command: int, body: bytes) -> None:
        if command != MSG_DATA:
            return
        self.last_ns = time.perf_counter_ns()
        self.count += 1
        at = body.find(b"G:")
        parts = body[at + 2 : at + 40].split(b":", 3) if at >= 0 else []
        try:
            rep, sender, seq = int(parts[0]), int(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            self.foreign += 1
            return
        if rep != self.rep:
            self.foreign += 1
            return
        if sender == self.index:
            self.own += 1
        self.seen.add(sender * 1_000_000 + seq)
        msg = message_pb2.IMMsgData()
        msg.ParseFromString(body)
        if msg.msg_id <= self.last_msg_id:
            self.order += 1
        self.last_msg_id = msg.msg_id


class Sender:
    def __init__(self, member: Member, group_id: int) -> None:
        self.member = member
        self.group_id = group_id
        self.acked: list[int] = []  # seqs acked
        self.bad = 0
        self.inflight = 0
        self.wake: asyncio.Future[None] | None = None
        self.stalled = False

    def _on_ack(self, seq: int, command: int, body: bytes) -> None:
        self.inflight -= 1
        if command == Cmd.MSG_DATA_ACK:
            self.acked.append(seq)
        else:
            self.bad += 1
            if command == CLOSED:
                self.stalled = True
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    async def send_all(self, rep: int, messages: int, window: int) -> int:
        conn = self.member.conn
        assert conn is not None
        sent = 0
        for seq in range(messages):
            while self.inflight >= window and not self.stalled:
                self.wake = asyncio.get_running_loop().create_future()
                try:
                    await asyncio.wait_for(self.wake, STALL_TIMEOUT)
                except TimeoutError:
                    self.stalled = True
            if self.stalled:
                break
            data = b"G:%d:%d:%d:%d:" % (rep, self.member.index, seq, time.perf_counter_ns())
            body = message_pb2.IMMsgData(
                from_user_id=conn.user_id,
                to_session_id=self.group_id,
                msg_id=seq + 1,
                create_time=0,
                msg_type=base_pb2.MSG_TYPE_GROUP_TEXT,
                msg_data=data + b"x" * max(0, 64 - len(data)),
            ).SerializeToString()
            self.inflight += 1
            sent += 1
            conn.request(Cmd.MSG_DATA, body, functools.partial(self._on_ack, seq))
        deadline = time.monotonic() + STALL_TIMEOUT
        while self.inflight > 0 and not self.stalled and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return sent


async def login_members(
    names: list[str], ports: list[int], concurrency: int = 200
) -> tuple[list[Member], list[str]]:
    members = [Member(i) for i in range(len(names))]
    errors: list[str] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def one(m: Member) -> None:
        async with semaphore:
            try:
                m.conn = await connect_and_login(
                    HOST, ports[m.index % len(ports)], names[m.index], PASSWORD_MD5, LOGIN_TIMEOUT, m.on_push
                )
            except Exception as exc:
                errors.append(f"{names[m.index]}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(m) for m in members))
    return members, errors


async def fanout_run(
    target: Target, members: list[Member], group_id: int, rep: int, senders: int, messages: int, window: int
) -> dict[str, Any]:
    for m in members:
        m.reset(rep)
    ss = [Sender(members[i], group_id) for i in range(senders)]
    cpu_before = cpu_snapshot(target)
    start = time.perf_counter_ns()
    cpu_start = time.perf_counter()
    sent = sum(await asyncio.gather(*(s.send_all(rep, messages, window) for s in ss)))
    acked_keys = {s.member.index * 1_000_000 + seq for s in ss for seq in s.acked}
    by_sender = Counter(s.member.index for s in ss for _ in s.acked)
    total_acked = len(acked_keys)

    def expected(m: Member) -> int:
        return total_acked - by_sender.get(m.index, 0)

    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and any(
        m.conn is not None and len(m.seen) - m.own < expected(m) for m in members
    ):
        await asyncio.sleep(0.02)
    last = max((m.last_ns for m in members), default=start)
    cpu_after = cpu_snapshot(target)
    cpu_wall = time.perf_counter() - cpu_start
    await asyncio.sleep(0.3)  # late duplicates
    checks: Counter[str] = Counter()
    deliveries = 0
    for m in members:
        if m.conn is None:
            continue
        deliveries += m.count
        got = sum(1 for key in m.seen & acked_keys if key // 1_000_000 != m.index)
        checks["lost"] += expected(m) - got
        checks["duplicates"] += m.count - m.foreign - len(m.seen)
        checks["delivery_order_violations"] += m.order
        checks["sender_copies"] += m.own
        checks["foreign_deliveries"] += m.foreign
    wall = (last - start) / 1e9
    return {
        "members": sum(1 for m in members if m.conn is not None),
        "sent": sent,
        "acked": total_acked,
        "unacked": sent - total_acked,
        "deliveries": deliveries,
        "expected_deliveries": sum(expected(m) for m in members if m.conn is not None),
        "seconds": wall,
        "deliveries_per_s": deliveries / wall if wall > 0 else float("nan"),
        "checks": dict(checks),
        "cpu_percent": cpu_percent(cpu_before, cpu_after, cpu_wall),
    }
