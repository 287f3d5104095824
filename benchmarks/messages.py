"""1:1 messages: senders on msg-1, receivers on msg-2; throughput, latencies and correctness."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import Counter
from typing import Any

from benchmarks.measure import cpu_percent, cpu_snapshot, percentile
from benchmarks.servers import Target, pair_names
from benchmarks.settings import HOST, LOGIN_TIMEOUT, PASSWORD_MD5, Options
from benchmarks.wire import CLOSED, BenchConn, connect_and_login
from common.commands import Cmd
from common.pb import base_pb2, message_pb2

BODY_SIZE = 64  # bytes of msg_data; TeamTalk clients send base64 of AES, a few dozen bytes for a line
STALL_TIMEOUT = 15.0  # a sender with no ack for this long gives up (the gateway's own limit is 10 s)
DRAIN_TIMEOUT = 10.0  # after the last ack, wait this long at most for outstanding deliveries
DUPLICATE_GRACE = 0.5  # and this long after everything arrived, to catch late duplicates


class Stalled(Exception):
    pass


class Pair:
    """One sender (on msg-1) and one receiver (on msg-2) and what happened to each message."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.sender: BenchConn | None = None
        self.receiver: BenchConn | None = None
        self.rep = -1
        self.reset(-1, 0)

    def reset(self, rep: int, messages: int) -> None:
        self.rep = rep
        self.sent = 0
        self.sent_ns = [0] * messages
        self.ack_id = [0] * messages
        self.ack_ns = [0] * messages
        self.deliveries: list[tuple[int, int, int]] = []  # (seq, msg_id, latency ns) in arrival order
        self.inflight = 0
        self.wake: asyncio.Future[None] | None = None
        self.stalled = False
        self.bad_replies = 0  # a reply to a message that is not an ack (or the connection closed)
        self.foreign = 0  # deliveries of messages this pair did not send in this repetition
        self.sender_copies = 0  # the sending connection got its own message pushed back

    # callbacks from the connections

    def on_sender_push(self, command: int, body: bytes) -> None:
        if command == Cmd.MSG_DATA:
            self.sender_copies += 1

    def on_receiver_push(self, command: int, body: bytes) -> None:
        if command != Cmd.MSG_DATA:
            return  # presence and the like
        now = time.perf_counter_ns()
        msg = message_pb2.IMMsgData()
        msg.ParseFromString(body)
        parts = msg.msg_data.split(b":", 4)
        try:
            rep, index, seq, sent = int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])
        except (ValueError, IndexError):
            self.foreign += 1
            return
        sender = self.sender.user_id if self.sender is not None else 0
        if rep != self.rep or index != self.index or msg.from_user_id != sender or seq >= len(self.ack_id):
            self.foreign += 1
            return
        self.deliveries.append((seq, msg.msg_id, now - sent))

    def _on_ack(self, seq: int, command: int, body: bytes) -> None:
        self.inflight -= 1
        if command == Cmd.MSG_DATA_ACK:
            ack = message_pb2.IMMsgDataAck()
            ack.ParseFromString(body)
            self.ack_id[seq] = ack.msg_id
            self.ack_ns[seq] = time.perf_counter_ns()
        else:
            self.bad_replies += 1
            if command == CLOSED:
                self.stalled = True
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    # the sender

    async def _wait_for_ack(self) -> None:
        self.wake = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self.wake, STALL_TIMEOUT)
        except TimeoutError:
            self.stalled = True
            raise Stalled from None

    async def send_all(self, messages: int, window: int) -> None:
        conn, receiver = self.sender, self.receiver
        assert conn is not None and receiver is not None
        to_user = receiver.user_id
        pad = b"x" * BODY_SIZE
        text = base_pb2.MSG_TYPE_SINGLE_TEXT
        try:
            for seq in range(messages):
                while self.inflight >= window:
                    await self._wait_for_ack()
                if self.stalled:
                    return
                sent = time.perf_counter_ns()
                head = b"%d:%d:%d:%d:" % (self.rep, self.index, seq, sent)
                body = message_pb2.IMMsgData(
                    from_user_id=conn.user_id,
                    to_session_id=to_user,
                    msg_id=seq + 1,  # the client's own id, as TeamTalk clients send one
                    create_time=0,
                    msg_type=text,
                    msg_data=head + pad[: max(0, BODY_SIZE - len(head))],
                ).SerializeToString()
                self.sent_ns[seq] = sent
                self.inflight += 1
                self.sent += 1
                conn.request(Cmd.MSG_DATA, body, functools.partial(self._on_ack, seq))
            while self.inflight > 0 and not self.stalled:
                await self._wait_for_ack()
        except Stalled:
            return

    # the verdict

    def acked(self) -> int:
        return sum(1 for i in self.ack_id[: self.sent] if i)

    def delivered_seqs(self) -> int:
        return len({seq for seq, _, _ in self.deliveries})

    def check(self) -> dict[str, int]:
        sent = self.sent
        acked = {seq: msg_id for seq, msg_id in enumerate(self.ack_id[:sent]) if msg_id}
        copies = Counter(seq for seq, _, _ in self.deliveries)
        order = 0
        for (_, prev, _), (_, cur, _) in itertools.pairwise(self.deliveries):
            if cur <= prev:
                order += 1
        id_order = 0
        ids = [acked[seq] for seq in sorted(acked)]
        for prev, cur in itertools.pairwise(ids):
            if cur <= prev:
                id_order += 1
        return {
            "sent": sent,
            "acked": len(acked),
            "unacked": sent - len(acked),
            "lost": sum(1 for seq in acked if seq not in copies),
            "duplicates": sum(n - 1 for n in copies.values() if n > 1),
            "delivered_unacked": sum(1 for seq in copies if seq not in acked),
            "id_mismatch": sum(
                1 for seq, msg_id, _ in self.deliveries if seq in acked and acked[seq] != msg_id
            ),
            "delivery_order_violations": order,
            "ack_id_order_violations": id_order,
            "bad_replies": self.bad_replies,
            "foreign_deliveries": self.foreign,
            "sender_copies": self.sender_copies,
            "stalled_pairs": int(self.stalled),
        }


async def login_pairs(target: Target, pairs: list[Pair], opts: Options) -> None:
    names = pair_names(len(pairs))

    async def one(pair: Pair) -> None:
        sender, receiver = names[pair.index]
        pair.sender = await connect_and_login(
            HOST, target.sender_port, sender, PASSWORD_MD5, LOGIN_TIMEOUT, pair.on_sender_push
        )
        pair.receiver = await connect_and_login(
            HOST, target.receiver_port, receiver, PASSWORD_MD5, LOGIN_TIMEOUT, pair.on_receiver_push
        )

    semaphore = asyncio.Semaphore(opts.concurrency)

    async def bounded(pair: Pair) -> None:
        async with semaphore:
            await one(pair)

    await asyncio.gather(*(bounded(p) for p in pairs))


async def throughput_phase(target: Target, pairs: list[Pair], rep: int, opts: Options) -> dict[str, Any]:
    for pair in pairs:
        pair.reset(rep, opts.messages)
    cpu_before = cpu_snapshot(target)
    started = time.perf_counter_ns()
    await asyncio.gather(*(pair.send_all(opts.messages, opts.window) for pair in pairs))
    last_ack = max((max(p.ack_ns) for p in pairs), default=started)
    cpu_after = cpu_snapshot(target)
    # Deliveries may trail the acks: wait (bounded) for every acked message, then a little longer.
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and any(p.delivered_seqs() < p.acked() for p in pairs):
        await asyncio.sleep(0.02)
    await asyncio.sleep(DUPLICATE_GRACE)

    checks: Counter[str] = Counter()
    for pair in pairs:
        checks.update(pair.check())
    ack_lat = sorted((p.ack_ns[i] - p.sent_ns[i]) / 1e6 for p in pairs for i in range(p.sent) if p.ack_id[i])
    first_seen: dict[tuple[int, int], float] = {}
    for p in pairs:
        for seq, _, latency in p.deliveries:
            first_seen.setdefault((p.index, seq), latency / 1e6)
    delivery_lat = sorted(first_seen.values())
    wall = (last_ack - started) / 1e9
    acked = checks["acked"]
    return {
        "acked": acked,
        "seconds": wall,
        "msgs_per_s": acked / wall if wall > 0 else float("nan"),
        "ack_p50_ms": percentile(ack_lat, 50),
        "ack_p99_ms": percentile(ack_lat, 99),
        "delivery_p50_ms": percentile(delivery_lat, 50),
        "delivery_p99_ms": percentile(delivery_lat, 99),
        "checks": dict(checks),
        "cpu_percent": cpu_percent(cpu_before, cpu_after, wall),
    }


# Must be 0 whatever the load: an acked message delivered exactly once, in msg id order, ids
# increasing per conversation, and only to whom it was sent.
VIOLATIONS = (
    "lost",  # acked, never delivered
    "duplicates",  # delivered more than once
    "id_mismatch",  # delivered with another msg id than the sender's ack named
    "delivery_order_violations",  # a delivery whose msg id is not above the previous one's
    "ack_id_order_violations",  # an ack whose msg id is not above the previous message's
    "foreign_deliveries",  # the receiver got a message nobody sent it in this run
    "sender_copies",  # the sending connection got its own message pushed back
)
# 0 below saturation; under overload the gateway drops a message the store refuses, without an
# ack (the client would resend it): counted, reported, not a correctness violation.
UNACKED = (
    "unacked",  # sent, no ack within the stall timeout (15 s)
    "delivered_unacked",  # stored and delivered, but the sender never got the ack
    "bad_replies",  # a reply that was not an ack, or the connection closed under it
    "stalled_pairs",  # pairs that gave up waiting for an ack
)
